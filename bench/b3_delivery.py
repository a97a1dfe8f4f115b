"""B3 delivery: vouchers/s from the outbox to the OA simulator over loopback (DeliveryWorker, no
faults), against raw HTTP POSTs of pre-built envelopes (requests.Session, same concurrency).

The two alternate round by round, each against its own fresh simulator, so both see the
same load on a shared machine (the delivery needs far more CPU than the floor: measured
one after the other, a busy minute during one half moved the ratio by ±0.15).
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests
from lxml import etree

from archive_oa.bootstrap import bootstrap
from archive_oa.safexml import parse_bytes
from archive_oa.samples import catalog
from archive_oa.samples.generate import build_batch
from archive_oa.sync.worker import DeliveryCounts, DeliveryWorker
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
    from archive_oa.oa.client import request_from_document

    oa = adapter.oa
    out = []
    per_org = -(-count // len(catalog.ORGS))
    for org in catalog.ORGS:
        vouchers, _, _ = build_batch(org, "2025-06", per_org)  # a period the worker set does not use
        for n, voucher in enumerate(vouchers):
            workflow = adapter.transforms.voucher_to_workflow(parse_bytes(voucher_to_xml(voucher)), f"floor-{org.code}-{n}")
            message = oa._client.create_message(oa._service, "CreateWorkflowRequest",
                                                request=request_from_document(workflow))
            out.append(etree.tostring(message, encoding="UTF-8", xml_declaration=True))
    return out[:count]


class RawPoster:
    """The floor: ``requests.Session``, ``threads`` threads, envelopes posted as they are."""

    headers = {"Content-Type": "text/xml; charset=utf-8", "SOAPAction": '"CreateWorkflowRequest"'}

    def __init__(self, url: str, threads: int = WORKERS) -> None:
        self.url = url
        self.session = requests.Session()
        self.session.mount("http://", requests.adapters.HTTPAdapter(pool_connections=1, pool_maxsize=threads))
        self.pool = ThreadPoolExecutor(threads)

    def post(self, body: bytes) -> None:
        answer = self.session.post(self.url, data=body, headers=self.headers, timeout=30)
        if answer.status_code != 200 or b"requestId" not in answer.content:
            raise RuntimeError(f"the simulator refused a floor envelope: {answer.status_code} {answer.content[:300]!r}")

    def post_all(self, bodies: list[bytes]) -> None:
        list(self.pool.map(self.post, bodies))

    def close(self) -> None:
        self.pool.shutdown()
        self.session.close()


def run(work: Path, quick: bool, full: bool) -> list[Figure]:
    count = 300 if quick else 1200
    rounds = 3 if quick else 6
    per_round = count // rounds
    data_dir = work / "b3-data"
    prepare_store(data_dir, write_voucher_files(work / "b3-vouchers", count, per_batch=count // 3)[0].parent,
                  enqueue=True)
    port, floor_port = free_port(), free_port()
    sim = start_sim(work / "b3-sim", port, work / "b3-sim.log")
    floor_sim = start_sim(work / "b3-sim-floor", floor_port, work / "b3-sim-floor.log")
    seconds = {"delivery": 0.0, "floor": 0.0}
    try:
        settings = settings_for(data_dir, port)
        with bootstrap(settings.replace(sync={"batch_size": per_round})) as adapter:
            bodies = envelopes(adapter, count + 1)  # built before anything is timed
            poster = RawPoster(f"http://127.0.0.1:{floor_port}/soap/workflow")
            worker = DeliveryWorker(adapter.store, adapter.oa, adapter.transforms, adapter.settings.sync, owner="bench")
            total = DeliveryCounts()
            try:
                poster.post(bodies.pop())  # warm the floor's connection pool
                for n in range(rounds):
                    def deliver() -> None:
                        nonlocal total
                        total += worker.run_once()  # claims up to batch_size = per_round

                    def floor() -> None:
                        poster.post_all(bodies[n * per_round:(n + 1) * per_round])

                    # alternate which goes first, so a drift in load favours neither
                    for name, step in ((("delivery", deliver), ("floor", floor)) if n % 2 == 0
                                       else (("floor", floor), ("delivery", deliver))):
                        started = time.perf_counter()
                        step()
                        seconds[name] += time.perf_counter() - started
            finally:
                worker.close()
                poster.close()
            if total.delivered != rounds * per_round:
                raise RuntimeError(f"B3: delivered {total.delivered} of {rounds * per_round} ({total})")
    finally:
        stop_process(sim)
        stop_process(floor_sim)
    rate = total.delivered / seconds["delivery"]
    floor = rounds * per_round / seconds["floor"]
    ratio = rate / floor
    extra = {"vouchers": total.delivered, "workers": WORKERS, "rounds": rounds,
             "seconds": round(seconds["delivery"], 2), "floor_seconds": round(seconds["floor"], 2)}
    return [Figure("B3", "delivery vouchers/s", rate, "/s", floor, "≥ 0.5 × floor", ratio >= 0.5, extra)]
