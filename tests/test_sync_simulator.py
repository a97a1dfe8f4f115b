"""The sync engine against the real OA simulator over loopback, faults on.

Errors, dropped connections and commit-then-timeout answers are injected with a
fixed seed; the run must end with exactly one OA request per idempotency key (as
counted in the simulator's own database) and every decision applied to the archive.
"""

from __future__ import annotations

import datetime as dt
import time
from decimal import Decimal

import pytest

from archive_oa import voucher_xml
from archive_oa.domain.delivery import DeliveryState
from archive_oa.domain.model import Voucher, WorkflowState
from archive_oa.errors import OaError
from archive_oa.oa.client import OaClient
from archive_oa.oa.simulator import SimulatorConfig, start_simulator
from archive_oa.sync.outcomes import apply_outcome
from archive_oa.services.sync import SyncService
from archive_oa.store import outbox
from archive_oa.store import vouchers as repo
from archive_oa.store.engine import open_store
from archive_oa.sync.poller import Poller
from archive_oa.sync.worker import DeliveryCounts, DeliveryWorker
from archive_oa.transforms.pipeline import Transforms

import factories

COUNT = 50
NOW = dt.datetime(2024, 3, 10, tzinfo=dt.timezone.utc)


def voucher(n: int) -> Voucher:
    return factories.voucher(
        org="XB03", org_name="西部贸易有限公司", fonds="Z003", period="2024-04", day=2, no=n, preparer="赵敏",
        amount=800 + 250 * n,  # above 9000 the simulated approvers reject
        summary="支付供应商货款", debit=("2202", "应付账款"), lines=("支付供应商货款", "银行付款"),
    )


@pytest.fixture
def simulator(tmp_path):
    config = SimulatorConfig(
        decide_after=0.2,
        reject_above=Decimal("9000"),
        error_rate=0.1,
        drop_rate=0.1,
        ambiguous_rate=0.1,
        ambiguous_hold=1.2,  # longer than the client's timeout below: the ambiguous case
        seed=20240310,
    )
    handle = start_simulator(config, tmp_path / "oa")
    yield handle
    handle.stop()


@pytest.mark.slow
def test_exactly_one_request_per_key_and_every_outcome_applied(db_settings, simulator):
    started = time.monotonic()
    settings = db_settings.replace(  # db_settings (tests/conftest.py): SQLite and PostgreSQL
        oa={"url": simulator.url, "timeout": 0.8, "connect_timeout": 1.0},
        sync={"workers": 4, "batch_size": 25, "retry_base_seconds": 0.1, "retry_max_seconds": 0.5,
              "max_attempts": 40, "poll_batch_size": 20, "lease_seconds": 30,
              # this simulator commits before it holds an answer back, so asking soon is safe
              # here; tests/test_fault_runs.py covers a request that commits after the timeout
              "uncertain_wait_seconds": 0.3},
    )
    store = open_store(settings, upgrade=True)
    oa = OaClient(settings.oa)
    worker = DeliveryWorker(store, oa, Transforms.from_settings(settings.workflow), settings.sync, owner="it")
    poller = Poller(store, oa, settings.sync)
    try:
        with store.transaction(immediate=True) as conn:
            for n in range(1, COUNT + 1):
                v = voucher(n)
                repo.save_voucher(conn, v, voucher_xml.canonical_hash(v), NOW)
        job = SyncService(store, oa).trigger(org_code="XB03", kind="manual")
        assert job.queued == COUNT

        delivered = DeliveryCounts()
        poll_errors = 0
        deadline = started + 18
        while time.monotonic() < deadline:
            delivered += worker.run_until_idle(min(deadline, time.monotonic() + 2))
            try:
                poller.run_once()
            except OaError:  # the poll round hit an injected fault: the next round retries
                poll_errors += 1
            with store.transaction() as conn:
                open_ = sum(outbox.counts(conn)[s] for s in (DeliveryState.PENDING, DeliveryState.UNCERTAIN,
                                                             DeliveryState.IN_FLIGHT))
                decided = [v for v in repo.select_for_sync(
                    conn, org_code="XB03", states=(WorkflowState.APPROVED, WorkflowState.REJECTED))]
            if not open_ and len(decided) == COUNT:
                break
            time.sleep(0.2)

        per_key = simulator.db.requests_per_external_key()
        assert len(per_key) == COUNT, f"requests for {len(per_key)} keys, expected {COUNT}"
        assert set(per_key.values()) == {1}, f"duplicates in the OA: {[k for k, n in per_key.items() if n > 1]}"
        status = SyncService(store, oa).status(job.job_id)
        assert (status.delivered, status.dead, status.state) == (COUNT, 0, "FINISHED")
        faults = simulator.injector.counts()
        assert sum(faults.values()) > 0, "the run should have met injected faults"
        assert delivered.adopted + delivered.retrying > 0, f"no delivery met a fault: {delivered}, {faults}"

        simulator.set_faults(error_rate=0.0, drop_rate=0.0, ambiguous_rate=0.0)  # verification reads only
        with store.transaction() as conn:
            states = {}
            for n in range(1, COUNT + 1):
                v = repo.load_voucher(conn, voucher(n).voucher_id)
                states[v.voucher_id] = v.workflow
        assert all(w.state.decided for w in states.values()), "every decision applied"
        rejected = {vid for vid, w in states.items() if w.state is WorkflowState.REJECTED}
        assert rejected == {voucher(n).voucher_id for n in range(1, COUNT + 1) if voucher(n).total_amount > 9000}
        for vid, workflow in states.items():  # the archive's request id is the OA's one for that key
            request = oa.get_request(int(workflow.oa_request_id))
            assert request.external_key.startswith(vid + ":") and request.status is workflow.state
            assert workflow.approvals and workflow.decided_at is not None

        # the callback path after polling: a repeat, nothing changes
        sample = states[voucher(1).voucher_id]
        from archive_oa.domain.model import WorkflowOutcome

        with store.transaction(immediate=True) as conn:
            repeat = apply_outcome(conn, WorkflowOutcome(sample.state, sample.decided_at, sample.approvals,
                                                         oa_request_id=sample.oa_request_id),
                                   via="callback", now=NOW)
        assert repeat.duplicate
        assert time.monotonic() - started < 20
    finally:
        worker.close()
        oa.close()
        store.dispose()
