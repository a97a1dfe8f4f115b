"""B3 delivery: vouchers/s from the outbox to the OA simulator over loopback (DeliveryWorker, no
faults), against raw HTTP POSTs of pre-built envelopes (requests.Session, same concurrency)."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests
from lxml import etree

from archive_oa.app import build
from archive_oa.safexml import parse_bytes
from archive_oa.samples import catalog
from archive_oa.samples.generate import build_batch
from archive_oa.sync.worker import DeliveryWorker
from archive_oa.voucher_xml import voucher_to_xml

from common import PYTHON, Figure, free_port, start_process, stop_process, wait_http
from dataset import bench_settings, prepare_store, write_voucher_files

WORKERS = 8


def start_sim(data_dir: Path, port: int, log: Path):
    archive_oa = str(Path(PYTHON).with_name("archive-oa"))
    # decisions far in the future: the approver thread stays out of the measurement
    proc = start_process([archive_oa, "oa-sim", "--data-dir", str(data_dir), "--host", "127.0.0.1",
                          "--port", str(port), "--decide-after", "3600"], log=log)
    wait_http(f"http://127.0.0.1:{port}/soap/workflow?wsdl")
    return proc


def settings_for(data_dir: Path, port: int):
    return bench_settings(data_dir).replace(
        oa={"url": f"http://127.0.0.1:{port}/soap/workflow", "pool_size": WORKERS},
        sync={"workers": WORKERS, "batch_size": 64},
    )


def envelopes(adapter, count: int) -> list[bytes]:
    """CreateWorkflowRequest envelopes, built by the adapter's own zeep client (with UsernameToken)."""
    oa = adapter.oa
    out = []
    per_org = -(-count // len(catalog.ORGS))
    for org in catalog.ORGS:
        vouchers, _, _ = build_batch(org, "2025-06", per_org)  # a period the worker set does not use
        for n, voucher in enumerate(vouchers):
            workflow = adapter.transforms.voucher_to_workflow(parse_bytes(voucher_to_xml(voucher)), f"floor-{org.code}-{n}")
            message = oa._client.create_message(oa._service, "CreateWorkflowRequest",
                                                request=oa._request_from_document(workflow))
            out.append(etree.tostring(message, encoding="UTF-8", xml_declaration=True))
    return out[:count]


def raw_post_rate(url: str, bodies: list[bytes]) -> float:
    session = requests.Session()
    adapter = requests.adapters.HTTPAdapter(pool_connections=1, pool_maxsize=WORKERS)
    session.mount("http://", adapter)
    headers = {"Content-Type": "text/xml; charset=utf-8", "SOAPAction": '"CreateWorkflowRequest"'}

    def post(body: bytes) -> None:
        answer = session.post(url, data=body, headers=headers, timeout=30)
        if answer.status_code != 200 or b"requestId" not in answer.content:
            raise RuntimeError(f"the simulator refused a floor envelope: {answer.status_code} {answer.content[:300]!r}")

    post(bodies[0])  # warm the connection
    started = time.perf_counter()
    with ThreadPoolExecutor(WORKERS) as pool:
        list(pool.map(post, bodies[1:]))
    return (len(bodies) - 1) / (time.perf_counter() - started)


def run(work: Path, quick: bool, full: bool) -> list[Figure]:
    count = 300 if quick else 1200
    data_dir = work / "b3-data"
    prepare_store(data_dir, write_voucher_files(work / "b3-vouchers", count, per_batch=count // 3)[0].parent,
                  enqueue=True)
    port = free_port()
    sim = start_sim(work / "b3-sim", port, work / "b3-sim.log")
    try:
        with build(settings_for(data_dir, port)) as adapter:
            worker = DeliveryWorker(adapter.store, adapter.oa, adapter.transforms, adapter.settings.sync, owner="bench")
            try:
                started = time.perf_counter()
                counts = worker.run_until_idle(wait_for_retries=False)
                seconds = time.perf_counter() - started
            finally:
                worker.close()
            if counts.delivered != count:
                raise RuntimeError(f"B3: delivered {counts.delivered} of {count} ({counts})")
            bodies = envelopes(adapter, count)
    finally:
        stop_process(sim)
    rate = counts.delivered / seconds

    port = free_port()
    sim = start_sim(work / "b3-sim-floor", port, work / "b3-sim-floor.log")
    try:
        floor = raw_post_rate(f"http://127.0.0.1:{port}/soap/workflow", bodies)
    finally:
        stop_process(sim)
    ratio = rate / floor
    extra = {"vouchers": count, "workers": WORKERS, "seconds": round(seconds, 2)}
    return [Figure("B3", "delivery vouchers/s", rate, "/s", floor, "≥ 0.5 × floor", ratio >= 0.5, extra)]
