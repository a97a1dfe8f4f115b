"""One delivery-worker process for test_multi_instance.py (run as a script, not collected).

``--mode work``: the real ``DeliveryWorker``; every claim it wins is appended to
``--claims`` as one JSON line, so the test can prove that no delivery attempt was
claimed by two workers.  It prints ``READY``, waits for the ``--go`` file (all
workers start together), delivers until no delivery is open, prints its counts.

``--mode die-after-send``: the real worker whose OA client sends each request and
then hangs instead of answering, so the claims stay held; it prints each request it
created and waits to be killed (SIGKILL) — a worker dying between send and settle.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import threading
import time
from pathlib import Path

from archive_oa.domain.delivery import DeliveryState
from archive_oa.oa.client import OaClient
from archive_oa.settings import load_settings
from archive_oa.store import outbox
from archive_oa.store.engine import open_store
from archive_oa.sync.worker import DeliveryCounts, DeliveryWorker
from archive_oa.transforms.pipeline import Transforms

OPEN = (DeliveryState.PENDING, DeliveryState.UNCERTAIN, DeliveryState.IN_FLIGHT)


def log_claims(path: Path) -> None:
    """Wrap ``outbox.claim`` (the worker calls it through the module) to record every claim won."""
    claim = outbox.claim
    out = open(path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115 (open for the process's life)
    lock = threading.Lock()

    def logged(store, owner, limit, lease_seconds, now, **options):  # job_id, due_by: as claim takes them
        won = claim(store, owner, limit, lease_seconds, now, **options)
        with lock:
            for c in won:
                out.write(json.dumps({"id": c.delivery_id, "attempts": c.attempts, "owner": owner,
                                      "prior": c.prior_state.value, "key": c.idempotency_key}) + "\n")
        return won

    outbox.claim = logged


class SendThenHang:
    """An OA client that really creates the request, reports it, and never returns."""

    def __init__(self, real: OaClient) -> None:
        self.real = real
        self.lock = threading.Lock()

    def create_request(self, workflow_xml: bytes) -> int:
        request_id = self.real.create_request(workflow_xml)
        with self.lock:
            print(json.dumps({"sent": request_id}), flush=True)
        threading.Event().wait()  # the process is killed here, holding its claims
        raise AssertionError("unreachable")

    def __getattr__(self, name):
        return getattr(self.real, name)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", choices=("work", "die-after-send"), required=True)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--oa-url", required=True)
    parser.add_argument("--owner", required=True)
    parser.add_argument("--claims", required=True)
    parser.add_argument("--go")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument("--lease", type=float, default=60.0)
    parser.add_argument("--deadline", type=float, default=180.0)
    args = parser.parse_args()

    settings = load_settings(data_dir=args.data_dir, env={"ARCHIVE_OA_DATABASE_URL": args.database_url}).replace(
        oa={"url": args.oa_url, "timeout": 1.0, "connect_timeout": 1.0},
        sync={"workers": args.threads, "batch_size": args.batch, "lease_seconds": args.lease,
              "retry_base_seconds": 0.1, "retry_max_seconds": 0.5, "max_attempts": 60},
    )
    log_claims(Path(args.claims))
    store = open_store(settings, upgrade=False)
    client = OaClient(settings.oa)
    oa = SendThenHang(client) if args.mode == "die-after-send" else client
    worker = DeliveryWorker(store, oa, Transforms.from_settings(settings.workflow), settings.sync, owner=args.owner)
    if args.mode == "die-after-send":
        worker.run_once()  # never returns: the OA client hangs after sending
        return 1

    print("READY", flush=True)
    go = Path(args.go)
    while not go.exists():
        time.sleep(0.02)
    total = DeliveryCounts()
    deadline = time.monotonic() + args.deadline
    while time.monotonic() < deadline:
        total += worker.run_until_idle(min(deadline, time.monotonic() + 5))
        with store.transaction() as conn:
            counts = outbox.counts(conn)
        if not any(counts[state] for state in OPEN):
            break
    worker.close()
    client.close()
    store.dispose()
    counts = dataclasses.asdict(total)
    counts["failures"] = {failure.value: n for failure, n in total.failures.items()}  # JSON keys are text
    print(json.dumps({"owner": args.owner, **counts}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
