"""B1 gateway: GetVoucher (10 entries) and QueryVouchers (pageSize 100) under wrk, 16 connections,
against a minimal lxml WSGI floor serving the same response bytes under the same waitress settings;
then GetVoucher again with both pre-forked into 2 processes (``serve --processes 2``)."""

from __future__ import annotations

import re
import time
import urllib.request
from pathlib import Path

from archive_oa.samples import catalog
from archive_oa.samples.generate import build_batch

from common import PYTHON, BENCH_DIR, Figure, free_port, run_wrk, start_process, stop_process, wait_http
from dataset import basic_auth, prepare_store, write_voucher_files

THREADS = 8  # [gateway] threads default
PROCESSES = (1, 2)  # [gateway] processes: the default, and one per core of the 2-core bench machine
CONNECTIONS = 16
PER_ORG = 400
PERIOD = "2026-12"  # the first period write_voucher_files fills

ENVELOPE = """<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:arc="urn:archive-oa:gateway:1">
  <soapenv:Body>{}</soapenv:Body>
</soapenv:Envelope>"""


def ten_entry_voucher() -> str:
    org = catalog.ORGS[0]
    vouchers, _, _ = build_batch(org, PERIOD, PER_ORG)
    return next(v.voucher_id for v in vouchers if len(v.entries) == 10)


def requests_for(voucher_id: str, org_code: str) -> dict[str, bytes]:
    return {
        "GetVoucher": ENVELOPE.format(f"<arc:GetVoucher><arc:voucherId>{voucher_id}</arc:voucherId></arc:GetVoucher>").encode(),
        "QueryVouchers": ENVELOPE.format(
            f"<arc:QueryVouchers><arc:orgCode>{org_code}</arc:orgCode><arc:periodFrom>{PERIOD}</arc:periodFrom>"
            f"<arc:periodTo>{PERIOD}</arc:periodTo><arc:page>1</arc:page><arc:pageSize>100</arc:pageSize>"
            "</arc:QueryVouchers>"
        ).encode(),
    }


def post(url: str, body: bytes, action: str) -> bytes:
    request = urllib.request.Request(url, data=body, headers={
        "Content-Type": "text/xml; charset=utf-8", "SOAPAction": f'"{action}"',
        "Authorization": f"Basic {basic_auth()}",
    })
    with urllib.request.urlopen(request, timeout=30) as answer:
        return answer.read()


def serve_gateway(data_dir: Path, port: int, threads: int, log: Path, processes: int = 1):
    archive_oa = str(Path(PYTHON).with_name("archive-oa"))
    proc = start_process([archive_oa, "serve", "--data-dir", str(data_dir), "--host", "127.0.0.1",
                          "--port", str(port), "--threads", str(threads), "--processes", str(processes),
                          "--no-scheduler"], log=log, env={"ARCHIVE_OA_LOG_LEVEL": "INFO"})
    wait_http(f"http://127.0.0.1:{port}/healthz")
    wait_children(proc, log, processes)
    return proc


def serve_floor(port: int, files: list[str], log: Path, processes: int):
    proc = start_process([PYTHON, str(BENCH_DIR / "floor_wsgi.py"), "--port", str(port), "--threads", str(THREADS),
                          "--processes", str(processes), *files], log=log)
    wait_http(f"http://127.0.0.1:{port}/")
    wait_children(proc, log, processes)
    return proc


def wait_children(proc, log: Path, processes: int, timeout: float = 60.0) -> None:
    """Until every pre-forked child says it serves: /healthz answers as soon as the first does."""
    deadline = time.monotonic() + timeout
    while processes > 1 and len(set(re.findall(r"gateway process (\d+) serving", log.read_text()))) < processes:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"not {processes} processes serving; see {log}")
        time.sleep(0.1)


def measure(url: str, bodies: dict[str, bytes], seconds: int, work: Path) -> dict[str, dict]:
    return {action: run_wrk(url, body, action, basic_auth(), connections=CONNECTIONS, seconds=seconds, workdir=work)
            for action, body in bodies.items()}


def run(work: Path, quick: bool, full: bool) -> list[Figure]:
    seconds = 4 if quick else 10
    data_dir = work / "b1-data"
    prepare_store(data_dir, write_voucher_files(work / "b1-vouchers", PER_ORG * 3, per_batch=PER_ORG)[0].parent)
    voucher_id = ten_entry_voucher()
    bodies = requests_for(voucher_id, catalog.ORGS[0].code)
    only_get = {"GetVoucher": bodies["GetVoucher"]}
    results: dict[tuple, dict] = {}  # (who, processes, action) -> wrk's figures
    responses = {}
    for processes in PROCESSES:
        port = free_port()
        url = f"http://127.0.0.1:{port}/soap/archive"
        proc = serve_gateway(data_dir, port, THREADS, work / f"b1-gateway-{processes}.log", processes)
        try:
            for action, body in bodies.items():
                responses[action] = post(url, body, action)  # warms up too; raises on a fault
                if b"Fault>" in responses[action]:
                    raise RuntimeError(f"{action} answered a fault: {responses[action][:500]!r}")
            measured = measure(url, bodies if processes == 1 else only_get, seconds, work)
        finally:
            stop_process(proc)
        results.update({("gateway", processes, action): r for action, r in measured.items()})

    files = []
    for action, payload in responses.items():
        path = work / f"b1-response-{action}.xml"
        path.write_bytes(payload)
        files += ["--response", f"{action}={path}"]
    for processes in PROCESSES:
        port = free_port()
        proc = serve_floor(port, files, work / f"b1-floor-{processes}.log", processes)
        try:
            measured = measure(f"http://127.0.0.1:{port}/soap/archive", bodies if processes == 1 else only_get,
                               seconds, work)
        finally:
            stop_process(proc)
        results.update({("floor", processes, action): r for action, r in measured.items()})

    for (who, processes, action), r in results.items():
        if r["errors"] or r["non2xx"]:
            raise RuntimeError(f"B1 {action} against the {who} ({processes} processes): "
                               f"{r['errors']} socket errors, {r['non2xx']} non-2xx")
    figures = []
    for processes in PROCESSES:
        for action in (bodies if processes == 1 else only_get):
            g, f = results[("gateway", processes, action)], results[("floor", processes, action)]
            label = action if processes == 1 else f"{action} ×{processes} processes"
            ratio = g["rps"] / f["rps"]
            target = "≥ 0.5 × floor" if action == "GetVoucher" else "(no target)"
            passed = ratio >= 0.5 if action == "GetVoucher" else None
            extra = {"gateway": g, "floor": f, "response_bytes": len(responses[action]), "threads": THREADS,
                     "processes": processes, "connections": CONNECTIONS, "seconds": seconds}
            figures.append(Figure("B1", f"{label} req/s", g["rps"], "req/s", f["rps"], target, passed, extra))
            figures.append(Figure("B1", f"{label} p50", g["p50_ms"], "ms", f["p50_ms"], "", None))
            figures.append(Figure("B1", f"{label} p99", g["p99_ms"], "ms", f["p99_ms"], "", None))
    # What the second process buys each side: 2-process req/s over 1-process req/s, the gateway's
    # scaling as the value and the floor's as its floor (so the ratio column compares the two).
    one, two = PROCESSES
    scale = {who: results[(who, two, "GetVoucher")]["rps"] / results[(who, one, "GetVoucher")]["rps"]
             for who in ("gateway", "floor")}
    figures.append(Figure("B1", f"GetVoucher ×{two}/×{one} processes", scale["gateway"], "×", scale["floor"],
                          "(no target)", None))
    return figures
