"""Delivery, polling and outcomes against a real store and a fake OA that fails on purpose."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import functools
import logging
import random
import threading
import time

import pytest
import sqlalchemy as sa

from archive_oa import voucher_xml
from archive_oa.domain.delivery import DeliveryState, RetryPolicy
from archive_oa.domain.model import Approval, WorkflowOutcome, WorkflowState
from archive_oa.domain.ports import CompletedItem
from archive_oa.errors import (
    NotFound,
    OaAmbiguous,
    OaUnreachable,
    ValidationFailed,
)
from archive_oa.sync.outcomes import apply_outcome
from archive_oa.settings import SyncSettings
from archive_oa.store import cursors, outbox
from archive_oa.store import vouchers as repo
from archive_oa.store.sync_tables import workflow_results
from archive_oa.sync.poller import Poller
from archive_oa.store.group_commit import GroupCommit
from archive_oa.sync.worker import DeliveryWorker
from archive_oa.transforms.pipeline import Transforms

import factories
from fakes import Clock, FakeOa

S = DeliveryState
T0 = dt.datetime(2024, 3, 10, 8, 0, tzinfo=dt.timezone.utc)


# --- fixtures ------------------------------------------------------------------------


# ``store`` (tests/conftest.py): a fresh database, each test once on SQLite and once on PostgreSQL.


@pytest.fixture(scope="module")
def transforms():
    return Transforms.from_settings()


@pytest.fixture
def clock():
    return Clock(T0)


SYNC = SyncSettings(batch_size=10, workers=3, lease_seconds=60, max_attempts=4, poll_batch_size=2)
POLICY = RetryPolicy(base_seconds=1, max_seconds=8, max_attempts=4, jitter=0.0)


make_voucher = functools.partial(factories.voucher, org="HD01", **factories.TRAVEL_BY_CASH)


def add_vouchers(store, count, *, start=1):
    """Store vouchers and queue them, as the importer does; returns their keys."""
    return factories.queue_vouchers(store, [make_voucher(no=n) for n in range(start, start + count)], T0)


def worker_for(store, oa, transforms, clock, **kw):
    return DeliveryWorker(store, oa, transforms, SYNC, owner=kw.pop("owner", "w1"), clock=clock, policy=POLICY,
                          rng=random.Random(1), **kw)


def delivery(store, key):
    with store.transaction() as conn:
        return outbox.find_by_key(conn, key)


def voucher_state(store, voucher_id):
    with store.transaction() as conn:
        return repo.load_voucher(conn, voucher_id).workflow


# --- outbox --------------------------------------------------------------------------


def test_enqueue_is_idempotent_per_key(store):
    (key,) = add_vouchers(store, 1)
    with store.transaction(immediate=True) as conn:
        again = outbox.enqueue(conn, voucher_id="HD01-2024-03-J-0001", version=1, idempotency_key=key, now=T0)
    assert again is False
    with store.transaction() as conn:
        assert outbox.counts(conn)[S.PENDING] == 1


def test_enqueue_rolls_back_with_its_transaction(store):
    with pytest.raises(RuntimeError):
        with store.transaction(immediate=True) as conn:
            outbox.enqueue(conn, voucher_id="X", version=1, idempotency_key="X:1", now=T0)
            raise RuntimeError("the change that caused it failed")
    with store.transaction() as conn:
        assert outbox.find_by_key(conn, "X:1") is None


def test_claims_do_not_overlap_and_expired_leases_come_back_uncertain(store, clock):
    add_vouchers(store, 5)
    first = outbox.claim(store, "a", 3, 60, clock())
    second = outbox.claim(store, "b", 10, 60, clock())
    assert len(first) == 3 and len(second) == 2
    assert not {c.delivery_id for c in first} & {c.delivery_id for c in second}
    assert outbox.claim(store, "c", 10, 60, clock()) == []
    clock.advance(61)
    again = outbox.claim(store, "c", 10, 60, clock())
    assert len(again) == 5 and all(c.ask_first and c.attempts == 2 for c in again)
    # the first holder can no longer settle: its claim is stale
    with store.transaction(immediate=True) as conn:
        assert not outbox.mark_delivered(conn, first[0], oa_request_id="1", now=clock())


def test_concurrent_claimers_never_share_a_delivery(store, clock):
    add_vouchers(store, 24)
    claimed: list[list] = []
    barrier = threading.Barrier(4)

    def claimer(name):
        barrier.wait()
        mine = []
        while batch := outbox.claim(store, name, 3, 60, clock()):
            mine += batch
        claimed.append(mine)

    threads = [threading.Thread(target=claimer, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    ids = [c.delivery_id for mine in claimed for c in mine]
    assert len(ids) == 24 and len(set(ids)) == 24


# --- delivery ------------------------------------------------------------------------


def test_happy_path_one_request_per_voucher(store, transforms, clock):
    keys = add_vouchers(store, 4)
    oa = FakeOa()
    counts = worker_for(store, oa, transforms, clock).run_once()
    assert (counts.claimed, counts.delivered, counts.retrying, counts.dead) == (4, 4, 0, 0)
    assert oa.per_key() == {k: 1 for k in keys}
    assert "find" not in oa.calls  # nothing uncertain: no need to ask
    d = delivery(store, keys[0])
    assert d.state is S.DELIVERED and d.oa_request_id and d.delivered_at == T0
    workflow = voucher_state(store, "HD01-2024-03-J-0001")
    assert workflow.state is WorkflowState.SUBMITTED and workflow.oa_request_id == d.oa_request_id
    with store.transaction() as conn:
        mapping = repo.lookup_request(conn, oa_request_id=d.oa_request_id)
    assert mapping.external_key == keys[0] and mapping.version == 1
    request = oa.requests[int(d.oa_request_id)]
    assert b"HD01-2024-03-" in request["xml"] and keys[0].encode() in request["xml"]


def test_commit_then_timeout_is_adopted_not_duplicated(store, transforms, clock):
    (key,) = add_vouchers(store, 1)
    oa = FakeOa(create_faults=["commit-then-timeout"])
    worker = worker_for(store, oa, transforms, clock)
    counts = worker.run_once()
    assert counts.retrying == 1
    d = delivery(store, key)
    assert d.state is S.UNCERTAIN and d.attempts == 1 and "OaAmbiguous" in d.last_error
    assert worker.run_once().claimed == 0  # not due yet: backoff
    clock.advance(1)
    counts = worker.run_once()
    assert counts.adopted == 1 and counts.delivered == 0
    assert oa.calls == ["create", "find"]  # asked before resending, never sent again
    assert oa.per_key() == {key: 1}
    assert delivery(store, key).state is S.DELIVERED


def test_timeout_before_commit_asks_then_sends_once(store, transforms, clock):
    (key,) = add_vouchers(store, 1)
    oa = FakeOa(create_faults=["lost", "fault"])
    worker = worker_for(store, oa, transforms, clock)
    worker.run_once()
    clock.advance(1)
    worker.run_once()  # find: none → send → server fault → uncertain again
    assert delivery(store, key).state is S.UNCERTAIN
    clock.advance(2)
    counts = worker.run_once()
    assert counts.delivered == 1
    assert oa.calls == ["create", "find", "create", "find", "create"]
    assert oa.per_key() == {key: 1}


def test_unreachable_retries_without_asking_and_backs_off(store, transforms, clock):
    (key,) = add_vouchers(store, 1)
    oa = FakeOa(create_faults=["unreachable", "unreachable"])
    worker = worker_for(store, oa, transforms, clock)
    worker.run_once()
    d1 = delivery(store, key)
    assert d1.state is S.PENDING and d1.next_attempt_at == T0 + dt.timedelta(seconds=1)
    clock.advance(1)
    worker.run_once()
    d2 = delivery(store, key)
    assert d2.next_attempt_at == clock() + dt.timedelta(seconds=2)  # exponential
    clock.advance(2)
    assert worker.run_once().delivered == 1
    assert "find" not in oa.calls and oa.per_key() == {key: 1}


def test_rejected_goes_dead_at_once(store, transforms, clock):
    (key,) = add_vouchers(store, 1)
    oa = FakeOa(create_faults=["rejected"])
    counts = worker_for(store, oa, transforms, clock).run_once()
    assert counts.dead == 1
    d = delivery(store, key)
    assert d.state is S.DEAD and d.attempts == 1 and "workflowCode unknown" in d.last_error


def test_invalid_rendering_goes_dead_without_calling_the_oa(store, clock):
    (key,) = add_vouchers(store, 1)

    class BrokenTransforms:
        def voucher_to_workflow(self, doc, external_key, source=None):
            raise ValidationFailed("stylesheet output is invalid")

    oa = FakeOa()
    counts = worker_for(store, oa, BrokenTransforms(), clock).run_once()
    assert counts.dead == 1 and oa.calls == []
    assert delivery(store, key).state is S.DEAD


def _oa_log_records(caplog):
    return [r for r in caplog.records if r.name.startswith("archive_oa.sync")]


def test_an_oa_server_fault_in_delivery_is_one_warning_line(store, transforms, clock, caplog):
    add_vouchers(store, 1)
    caplog.set_level(logging.INFO, logger="archive_oa")
    assert worker_for(store, FakeOa(create_faults=["fault"]), transforms, clock).run_once().retrying == 1
    (record,) = [r for r in _oa_log_records(caplog) if "failed" in r.getMessage()]
    assert (record.levelno, record.exc_info) == (logging.WARNING, None)
    assert "failed in send: OaServerFault in an OA call: soap:Server: database busy" in record.getMessage()


def test_a_round_of_failures_logs_the_first_of_each_class_then_one_count_per_class(store, transforms, clock, caplog):
    add_vouchers(store, 6)
    caplog.set_level(logging.DEBUG, logger="archive_oa.sync.worker")
    oa = FakeOa(create_faults=["unreachable"] * 4 + ["rejected"] * 2)
    counts = worker_for(store, oa, transforms, clock).run_once()
    assert (counts.retrying, counts.dead) == (4, 2)
    records = [r for r in caplog.records if r.name == "archive_oa.sync.worker"]
    shown = [r for r in records if r.levelno > logging.DEBUG]
    assert [r.levelno for r in shown] in ([logging.WARNING, logging.ERROR, logging.ERROR],
                                          [logging.ERROR, logging.WARNING, logging.ERROR])
    assert any("failed in send: OaUnreachable in an OA call: connection refused" in r.getMessage() for r in shown)
    assert any("failed in send: OaRejected in an OA call: soap:Client" in r.getMessage() for r in shown)
    assert shown[-1].getMessage().startswith(
        "delivery round: 6 of 6 attempts unsuccessful (unreachable: 4, rejected by the OA: 2)")
    assert len(records) - len(shown) == 4  # the other failures of each class, at DEBUG
    assert all(r.exc_info is None for r in records)


def test_a_failed_poll_round_is_one_warning_line_and_the_schedule_goes_on(store, clock, caplog):
    from archive_oa.sync.schedule import parse_schedule
    from archive_oa.sync.scheduler import ScheduledJob, Scheduler

    class DroppingOa(FakeOa):
        def fetch_completed(self, after_cursor, max_items):
            raise OaAmbiguous("the OA at http://oa.test/soap/workflow (FetchCompletedRequests) dropped the "
                              "connection mid-call (Connection aborted.)", operation="FetchCompletedRequests")

    poller = Poller(store, DroppingOa(), SYNC, clock=clock)
    job = ScheduledJob("poll", parse_schedule("every 1s"), lambda tick: poller.run_once())
    caplog.set_level(logging.INFO, logger="archive_oa")
    assert Scheduler([job], store, owner="one", clock=clock).run_tick(job, T0) is True
    (record,) = _oa_log_records(caplog)
    assert (record.levelno, record.exc_info) == (logging.WARNING, None)
    assert "OaAmbiguous in FetchCompletedRequests: the OA at http://oa.test" in record.getMessage()


def test_dead_after_max_attempts_then_retry_from_dead_letters(store, transforms, clock):
    (key,) = add_vouchers(store, 1)
    oa = FakeOa(create_faults=["unreachable"] * 4)
    worker = worker_for(store, oa, transforms, clock)
    for _ in range(4):
        worker.run_once()
        clock.advance(10)
    d = delivery(store, key)
    assert d.state is S.DEAD and d.attempts == 4 and "gave up after 4 attempts" in d.last_error
    with store.transaction(immediate=True) as conn:
        assert outbox.retry_dead(conn, [d.id], now=clock()) == 1
    revived = delivery(store, key)
    assert revived.state is S.UNCERTAIN and revived.attempts == 0  # may have reached the OA once
    assert worker.run_once().delivered == 1
    assert oa.calls[-2:] == ["find", "create"] and oa.per_key() == {key: 1}


def test_find_failing_keeps_the_delivery_uncertain(store, transforms, clock):
    (key,) = add_vouchers(store, 1)
    oa = FakeOa(create_faults=["commit-then-timeout"], find_faults=[OaUnreachable("down")])
    worker = worker_for(store, oa, transforms, clock)
    worker.run_once()
    clock.advance(1)
    worker.run_once()
    assert delivery(store, key).state is S.UNCERTAIN
    clock.advance(2)
    assert worker.run_once().adopted == 1
    assert oa.per_key() == {key: 1}


def test_lease_lost_during_the_call_is_not_settled_twice(store, transforms, clock):
    (key,) = add_vouchers(store, 1)
    oa = FakeOa()
    first = worker_for(store, oa, transforms, clock, owner="slow")
    second = worker_for(store, oa, transforms, clock, owner="fast")
    results = []

    def meanwhile(request_id):  # the first worker stalls past its lease inside the OA call
        oa.during_create = None
        clock.advance(SYNC.lease_seconds + 1)
        results.append(second.run_once())

    oa.during_create = meanwhile
    counts = first.run_once()
    assert results[0].adopted == 1  # the re-claimer asked and adopted the request
    assert counts.lost == 1 and counts.delivered == 0
    assert oa.per_key() == {key: 1}
    assert delivery(store, key).state is S.DELIVERED


def test_several_requests_for_one_key_adopt_the_lowest(store, transforms, clock):
    (key,) = add_vouchers(store, 1)
    oa = FakeOa(create_faults=["commit-then-timeout"])
    worker = worker_for(store, oa, transforms, clock)
    worker.run_once()
    oa.requests[999] = {"key": key, "xml": b"", "status": WorkflowState.SUBMITTED}  # someone else's copy
    clock.advance(1)
    counts = worker.run_once()
    assert counts.adopted == 1 and counts.anomalies == 1
    d = delivery(store, key)
    assert d.oa_request_id == "999" and "anomaly" in d.last_error


def test_stopping_releases_unsent_claims(store, transforms, clock):
    (key,) = add_vouchers(store, 1)
    oa = FakeOa()
    worker = worker_for(store, oa, transforms, clock)
    claims = outbox.claim(store, worker.owner, 10, 60, clock())
    worker.stop()
    assert worker._deliver(claims[0]) == ("released", False)
    d = delivery(store, key)
    assert d.state is S.PENDING and d.attempts == 0 and oa.calls == []
    assert worker.run_once().claimed == 0  # stopped workers claim nothing


def test_run_until_idle_waits_for_retries_within_the_deadline(store, transforms):
    import time

    keys = add_vouchers(store, 3)
    oa = FakeOa(create_faults=["unreachable", "commit-then-timeout"])
    policy = RetryPolicy(base_seconds=0.05, max_seconds=0.2, max_attempts=5, jitter=0.0)
    worker = DeliveryWorker(store, oa, Transforms.from_settings(), SYNC, owner="w", policy=policy)
    try:
        counts = worker.run_until_idle(time.monotonic() + 10)
    finally:
        worker.close()
    assert counts.delivered + counts.adopted == 3 and counts.retrying == 2
    assert oa.per_key() == {k: 1 for k in keys}


def test_outcome_overtaking_the_settle_is_not_moved_back(store, transforms, clock):
    (key,) = add_vouchers(store, 1)
    oa = FakeOa(create_faults=["commit-then-timeout"])
    worker = worker_for(store, oa, transforms, clock)
    worker.run_once()
    (request_id,) = oa.requests
    item = oa.decide(request_id, WorkflowState.APPROVED, T0 + dt.timedelta(seconds=30))
    poll = Poller(store, oa, SYNC, clock=clock).run_once()
    assert poll.applied == 1  # found through the outbox although not yet settled
    d = delivery(store, key)  # the outcome named the request: adopted, never sent again
    assert d.state is S.DELIVERED and d.oa_request_id == str(request_id) and "adopted" in d.last_error
    clock.advance(1)
    assert worker.run_once().claimed == 0
    assert oa.calls == ["create"]
    workflow = voucher_state(store, "HD01-2024-03-J-0001")
    assert workflow.state is WorkflowState.APPROVED and workflow.decided_at == item.finished_at
    assert workflow.oa_request_id == str(request_id)


def test_outcome_applied_during_the_call_keeps_its_decision_at_the_settle(store, transforms, clock):
    (key,) = add_vouchers(store, 1)
    oa = FakeOa()
    decided = outcome(1001, WorkflowState.REJECTED, external_key=key)

    def decide_before_the_answer(request_id):  # the callback overtakes the create's answer
        with store.transaction(immediate=True) as conn:
            assert apply_outcome(conn, decided, via="callback", now=clock()).applied

    oa.during_create = decide_before_the_answer
    assert worker_for(store, oa, transforms, clock).run_once().delivered == 1
    assert delivery(store, key).state is S.DELIVERED
    workflow = voucher_state(store, "HD01-2024-03-J-0001")
    assert workflow.state is WorkflowState.REJECTED and workflow.decided_at == decided.finished_at
    assert workflow.oa_request_id == "1001" and [a.approver for a in workflow.approvals] == ["李总"]
    with store.transaction() as conn:
        assert repo.lookup_request(conn, external_key=key).oa_request_id == "1001"


def test_settle_of_an_older_version_leaves_the_newer_version_alone(store, transforms, clock):
    (key,) = add_vouchers(store, 1)
    oa = FakeOa()

    def save_a_new_version(request_id):  # re-imported with another amount while the call runs
        newer = make_voucher(no=1, amount="990.00")
        with store.transaction(immediate=True) as conn:
            assert repo.save_voucher(conn, newer, voucher_xml.canonical_hash(newer), T0).version == 2

    oa.during_create = save_a_new_version
    assert worker_for(store, oa, transforms, clock).run_once().delivered == 1
    with store.transaction() as conn:
        latest = repo.load_voucher(conn, "HD01-2024-03-J-0001")
        first = repo.load_voucher(conn, "HD01-2024-03-J-0001", version=1)
        mapping = repo.lookup_request(conn, external_key=key)
    assert latest.state is WorkflowState.NONE and (latest.workflow is None or latest.workflow.oa_request_id is None)
    assert first.state is WorkflowState.QUEUED  # only the latest version's workflow is ever written
    assert (mapping.version, mapping.oa_request_id) == (1, "1001")


def test_mark_submitted_moves_only_the_undecided_latest_version(store, clock):
    add_vouchers(store, 1)
    vid = "HD01-2024-03-J-0001"
    with store.transaction(immediate=True) as conn:
        assert not repo.mark_submitted(conn, vid, version=2, oa_request_id="7")  # no such version
        assert not repo.mark_submitted(conn, "HD01-2024-03-J-9999", version=1, oa_request_id="7")
        assert repo.mark_submitted(conn, vid, version=1, oa_request_id="7")
        assert repo.mark_submitted(conn, vid, version=1, oa_request_id="8")  # SUBMITTED again: a re-send
    assert (voucher_state(store, vid).state, voucher_state(store, vid).oa_request_id) == (WorkflowState.SUBMITTED, "8")
    for state in (WorkflowState.APPROVED, WorkflowState.REJECTED, WorkflowState.WITHDRAWN):
        with store.transaction(immediate=True) as conn:
            repo.set_workflow(conn, vid, state=state, oa_request_id="8")
            assert not repo.mark_submitted(conn, vid, version=1, oa_request_id="9")
        assert (voucher_state(store, vid).state, voucher_state(store, vid).oa_request_id) == (state, "8")


def test_map_request_inserts_keeps_and_remaps(store, clock):
    add_vouchers(store, 1)
    vid = "HD01-2024-03-J-0001"
    with store.transaction(immediate=True) as conn:
        repo.map_request(conn, external_key="k1", voucher_id=vid, version=1, oa_request_id="11")
        repo.map_request(conn, external_key="k1", voucher_id=vid, version=2, oa_request_id="11")  # same: kept
        assert repo.lookup_request(conn, external_key="k1") == repo.RequestMapping("k1", vid, 1, "11")
        repo.map_request(conn, external_key="k1", voucher_id=vid, version=2, oa_request_id="12")  # remapped
        assert repo.lookup_request(conn, external_key="k1") == repo.RequestMapping("k1", vid, 2, "12")
        assert repo.lookup_request(conn, oa_request_id="11") is None
    with pytest.raises(sa.exc.IntegrityError):  # one OA request never carries two keys
        with store.transaction(immediate=True) as conn:
            repo.map_request(conn, external_key="k2", voucher_id=vid, version=2, oa_request_id="12")


# --- group commit of settles -----------------------------------------------------------


def wait_until(predicate, seconds=10.0):
    """Readiness, not timing: poll until ``predicate`` holds (fails only if it never does)."""
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.001)


def run_in_threads(group, settles):
    """Start one thread per settle; returns (threads, results) where results[i] is (value, error)."""
    results = {}

    def run(i, settle):
        try:
            results[i] = (group.run(settle), None)
        except Exception as exc:  # handed back to the test
            results[i] = (None, exc)

    threads = [threading.Thread(target=run, args=(i, settle)) for i, settle in enumerate(settles)]
    for thread in threads:
        thread.start()
    return threads, results


def test_settles_queued_while_a_batch_commits_share_the_next_transaction(store, clock):
    add_vouchers(store, 3)
    claims = outbox.claim(store, "w1", 3, 60, clock())
    group = GroupCommit(store)
    with group._commit_lock:  # a leader is committing: the next settles queue up meanwhile
        threads, results = run_in_threads(group, [
            lambda conn, c=c: outbox.mark_delivered(conn, c, oa_request_id=str(c.delivery_id), now=clock())
            for c in claims
        ])
        wait_until(lambda: len(group._queued) == 3)
    for thread in threads:
        thread.join()
    assert results == {0: (True, None), 1: (True, None), 2: (True, None)}
    assert (group.batches, group.writes) == (1, 3)  # one transaction for the three
    with store.transaction() as conn:
        assert {d.state for d in outbox.list_deliveries(conn)} == {S.DELIVERED}


def test_a_failing_settle_fails_alone_and_raises_in_its_own_caller(store, clock):
    add_vouchers(store, 3)
    claims = outbox.claim(store, "w1", 3, 60, clock())

    def deliver(claim):
        return lambda conn: outbox.mark_delivered(conn, claim, oa_request_id="7", now=clock())

    def deliver_then_fail(conn):
        outbox.mark_delivered(conn, claims[1], oa_request_id="8", now=clock())
        raise ValueError("a bug in one settle")

    group = GroupCommit(store)
    with group._commit_lock:
        threads, results = run_in_threads(group, [deliver(claims[0]), deliver_then_fail, deliver(claims[2])])
        wait_until(lambda: len(group._queued) == 3)
    for thread in threads:
        thread.join()
    assert results[0] == (True, None) and results[2] == (True, None)
    assert isinstance(results[1][1], ValueError)
    assert (group.batches, group.writes) == (4, 6)  # the batch, rolled back, then each settle alone
    with store.transaction() as conn:
        states = [outbox.get(conn, c.delivery_id).state for c in claims]
    assert states == [S.DELIVERED, S.IN_FLIGHT, S.DELIVERED]  # its own write went back


class CommitFails:
    """A store whose write transactions fail at commit (the process dies, the disk is full)."""

    def __init__(self, store):
        self.store = store

    @contextlib.contextmanager
    def transaction(self, *, immediate=False):
        with self.store.transaction(immediate=immediate) as conn:
            yield conn
            if immediate:
                raise sa.exc.OperationalError("COMMIT", {}, Exception("disk I/O error"))


def test_a_failed_batch_commit_settles_nothing_and_the_next_claim_adopts(store, transforms, clock):
    """OA success, then the batch never commits: like a crash between call and settle, the
    claims wait for their leases to end and the next attempt asks the OA — exactly once."""
    keys = add_vouchers(store, 3)
    oa = FakeOa()
    worker = worker_for(store, oa, transforms, clock)
    worker._settles = GroupCommit(CommitFails(store))
    counts = worker.run_once()
    assert (counts.claimed, counts.errors, counts.delivered) == (3, 3, 0)
    assert oa.per_key() == {k: 1 for k in keys}
    assert {delivery(store, k).state for k in keys} == {S.IN_FLIGHT}
    clock.advance(SYNC.lease_seconds + 1)
    counts = worker_for(store, oa, transforms, clock, owner="w2").run_once()
    assert (counts.adopted, counts.delivered) == (3, 0)
    assert oa.per_key() == {k: 1 for k in keys}  # nothing sent twice
    assert {delivery(store, k).state for k in keys} == {S.DELIVERED}


def test_a_batch_settles_each_claim_by_its_own_lease(store, transforms, clock):
    keys = add_vouchers(store, 3)
    oa = FakeOa()
    worker = worker_for(store, oa, transforms, clock)
    claims = outbox.claim(store, worker.owner, 3, 60, clock())
    clock.advance(61)  # every lease ran out; another worker re-claims the first delivery
    (stolen,) = outbox.claim(store, "w2", 1, 60, clock())
    assert stolen.delivery_id == claims[0].delivery_id and stolen.ask_first
    with worker._settles._commit_lock:  # all three settles end up in one transaction
        futures = [worker._pool.submit(worker._deliver_safely, c) for c in claims]
        wait_until(lambda: len(worker._settles._queued) == 3)
    assert [f.result() for f in futures] == [("lost", False), ("delivered", False), ("delivered", False)]
    assert worker._settles.batches == 1
    first = delivery(store, keys[0])
    assert first.state is S.IN_FLIGHT and first.lease_owner == "w2"  # untouched: the new holder settles it
    assert [delivery(store, k).state for k in keys[1:]] == [S.DELIVERED, S.DELIVERED]
    assert voucher_state(store, "HD01-2024-03-J-0001").state is WorkflowState.QUEUED
    assert voucher_state(store, "HD01-2024-03-J-0002").state is WorkflowState.SUBMITTED
    second = worker_for(store, oa, transforms, clock, owner="w2")
    assert second._deliver(stolen) == ("adopted", False)  # it asks the OA and adopts, sends nothing
    assert oa.per_key() == {k: 1 for k in keys}
    worker.close()
    second.close()


# --- outcomes ------------------------------------------------------------------------


def delivered_request(store, transforms, clock, n=1):
    oa = FakeOa()
    add_vouchers(store, n)
    worker_for(store, oa, transforms, clock).run_once()
    return oa


def outcome(request_id, state=WorkflowState.APPROVED, minutes=5, **kw):
    return WorkflowOutcome(state=state, finished_at=T0 + dt.timedelta(minutes=minutes),
                           approvals=(Approval(1, "李总", "APPROVE", "同意", T0),),
                           oa_request_id=str(request_id), **kw)


def test_apply_outcome_writes_state_trail_and_repeats_are_duplicates(store, transforms, clock):
    oa = delivered_request(store, transforms, clock)
    (rid,) = oa.requests
    with store.transaction(immediate=True) as conn:
        first = apply_outcome(conn, outcome(rid), via="callback", now=clock())
    assert first.accepted and first.applied and not first.duplicate
    assert first.voucher_state is WorkflowState.APPROVED and first.voucher_id == "HD01-2024-03-J-0001"
    workflow = voucher_state(store, first.voucher_id)
    assert workflow.decided_at == T0 + dt.timedelta(minutes=5)
    assert [a.approver for a in workflow.approvals] == ["李总"]
    with store.transaction(immediate=True) as conn:
        again = apply_outcome(conn, outcome(rid), via="poll", now=clock())
    assert again.duplicate and again.accepted and again.voucher_state is WorkflowState.APPROVED
    # the same decision reported in another zone is the same instant: still a duplicate
    cst = dt.timezone(dt.timedelta(hours=8))
    shifted = dataclasses.replace(outcome(rid), finished_at=outcome(rid).finished_at.astimezone(cst))
    with store.transaction(immediate=True) as conn:
        assert apply_outcome(conn, shifted, via="poll", now=clock()).duplicate
    with store.transaction() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(workflow_results)).scalar() == 1


def test_older_outcome_does_not_overwrite_a_newer_one(store, transforms, clock):
    oa = delivered_request(store, transforms, clock)
    (rid,) = oa.requests
    with store.transaction(immediate=True) as conn:
        apply_outcome(conn, outcome(rid, WorkflowState.WITHDRAWN, minutes=10), via="callback", now=clock())
        stale = apply_outcome(conn, outcome(rid, WorkflowState.APPROVED, minutes=5), via="poll", now=clock())
    assert stale.accepted and not stale.applied and not stale.duplicate
    assert stale.voucher_state is WorkflowState.WITHDRAWN
    assert voucher_state(store, "HD01-2024-03-J-0001").state is WorkflowState.WITHDRAWN


def test_outcome_by_external_key_only(store, transforms, clock):
    oa = delivered_request(store, transforms, clock)
    (rid,) = oa.requests
    key = oa.requests[rid]["key"]
    by_key = WorkflowOutcome(WorkflowState.REJECTED, T0 + dt.timedelta(minutes=1), external_key=key)
    with store.transaction(immediate=True) as conn:
        result = apply_outcome(conn, by_key, via="callback", now=clock())
    assert result.applied and result.voucher_state is WorkflowState.REJECTED


def test_unknown_and_invalid_outcomes_change_nothing(store, transforms, clock):
    delivered_request(store, transforms, clock)
    with store.transaction(immediate=True) as conn:
        with pytest.raises(NotFound, match="not one of the adapter's requests"):
            apply_outcome(conn, outcome(424242), via="poll", now=clock())
        with pytest.raises(NotFound):
            apply_outcome(conn, WorkflowOutcome(WorkflowState.APPROVED, T0, external_key="nobody:1"),
                          via="callback", now=clock())
        with pytest.raises(ValidationFailed) as info:
            apply_outcome(conn, outcome(1001, WorkflowState.SUBMITTED), via="callback", now=clock())
        assert info.value.issues[0].place == "state"
        with pytest.raises(ValidationFailed):
            apply_outcome(conn, WorkflowOutcome(WorkflowState.APPROVED, dt.datetime(2024, 3, 1), oa_request_id="1001"),
                          via="callback", now=clock())
        assert conn.execute(sa.select(sa.func.count()).select_from(workflow_results)).scalar() == 0


# --- poller --------------------------------------------------------------------------


def test_poller_applies_advances_and_acknowledges(store, transforms, clock):
    oa = delivered_request(store, transforms, clock, n=3)
    for minutes, rid in enumerate(sorted(oa.requests), start=1):
        oa.decide(rid, WorkflowState.APPROVED if minutes != 2 else WorkflowState.REJECTED,
                  T0 + dt.timedelta(minutes=minutes))
    oa.completed.append(CompletedItem(4, 77, "someone-else:1", WorkflowState.APPROVED, T0, ()))
    counts = Poller(store, oa, SYNC, clock=clock).run_once()
    # two full batches, then an empty one shows the queue is drained
    assert (counts.fetched, counts.applied, counts.unknown, counts.batches) == (4, 3, 1, 3)
    assert counts.cursor == 4 and oa.acked == [2, 4]
    with store.transaction() as conn:
        assert cursors.get_cursor(conn, "oa.completed") == 4
    rejected_id = sorted(oa.requests)[1]
    with store.transaction() as conn:
        rejected_voucher = repo.lookup_request(conn, oa_request_id=str(rejected_id)).voucher_id
    assert voucher_state(store, rejected_voucher).state is WorkflowState.REJECTED


def test_same_batch_twice_applies_once(store, transforms, clock):
    oa = delivered_request(store, transforms, clock)
    (rid,) = oa.requests
    oa.decide(rid, WorkflowState.APPROVED, T0 + dt.timedelta(minutes=3))
    Poller(store, oa, SYNC, clock=clock).run_once()
    with store.transaction(immediate=True) as conn:  # as if the cursor had never moved
        cursors.advance_cursor(conn, "oa.completed", expected=1, value=0, now=clock())
    again = Poller(store, oa, SYNC, clock=clock).run_once()
    assert again.fetched == 1 and again.duplicates == 1 and again.applied == 0


def test_crash_before_commit_keeps_the_cursor_and_applies_once_later(store, transforms, clock, monkeypatch):
    oa = delivered_request(store, transforms, clock)
    (rid,) = oa.requests
    oa.decide(rid, WorkflowState.APPROVED, T0 + dt.timedelta(minutes=3))

    def crash(*args, **kwargs):
        raise RuntimeError("process killed between apply and commit")

    with monkeypatch.context() as patch:
        patch.setattr(cursors, "advance_cursor", crash)
        with pytest.raises(RuntimeError):
            Poller(store, oa, SYNC, clock=clock).run_once()
    assert voucher_state(store, "HD01-2024-03-J-0001").state is WorkflowState.SUBMITTED  # rolled back
    with store.transaction() as conn:
        assert cursors.get_cursor(conn, "oa.completed") == 0
    assert oa.acked == []
    counts = Poller(store, oa, SYNC, clock=clock).run_once()
    assert counts.applied == 1 and counts.cursor == 1
    assert voucher_state(store, "HD01-2024-03-J-0001").state is WorkflowState.APPROVED


def test_cursor_moved_by_another_poller_leaves_the_batch_to_it(store, transforms, clock):
    oa = delivered_request(store, transforms, clock)
    (rid,) = oa.requests
    oa.decide(rid, WorkflowState.APPROVED, T0 + dt.timedelta(minutes=3))
    real_fetch = oa.fetch_completed

    def fetch_while_another_commits(after, limit):
        batch = real_fetch(after, limit)
        with store.transaction(immediate=True) as conn:
            cursors.advance_cursor(conn, "oa.completed", expected=0, value=1, now=clock())
        return batch

    oa.fetch_completed = fetch_while_another_commits
    counts = Poller(store, oa, SYNC, clock=clock).poll_batch()
    assert counts.conflicts == 1 and counts.applied == 0
    assert voucher_state(store, "HD01-2024-03-J-0001").state is WorkflowState.SUBMITTED


def test_key_only_callback_then_poll_maps_and_adopts_a_waiting_delivery(store, transforms, clock):
    (key,) = add_vouchers(store, 1)
    oa = FakeOa(create_faults=["commit-then-timeout"])
    worker_for(store, oa, transforms, clock).run_once()
    (rid,) = oa.requests
    finished = T0 + dt.timedelta(minutes=2)
    with store.transaction(immediate=True) as conn:  # the OA's callback names only the key
        first = apply_outcome(conn, WorkflowOutcome(WorkflowState.APPROVED, finished, external_key=key),
                              via="callback", now=clock())
    assert first.applied and delivery(store, key).state is S.UNCERTAIN  # request id still unknown
    oa.decide(rid, WorkflowState.APPROVED, finished)
    counts = Poller(store, oa, SYNC, clock=clock).run_once()
    assert counts.duplicates == 1 and counts.applied == 0  # same decision by the other path
    d = delivery(store, key)
    assert d.state is S.DELIVERED and d.oa_request_id == str(rid)
    with store.transaction() as conn:
        assert repo.lookup_request(conn, external_key=key).oa_request_id == str(rid)
    assert voucher_state(store, "HD01-2024-03-J-0001").oa_request_id == str(rid)


def test_failure_after_an_outcome_named_the_request_adopts_it(store, transforms, clock):
    (key,) = add_vouchers(store, 1)
    oa = FakeOa(create_faults=["commit-then-timeout"])
    worker = worker_for(store, oa, transforms, clock)
    worker.run_once()
    (rid,) = oa.requests
    clock.advance(1)

    def decided_while_asking(external_key):  # the poller applies the decision during our find
        with store.transaction(immediate=True) as conn:
            result = apply_outcome(conn, outcome(rid, external_key=external_key), via="poll", now=clock())
        assert result.applied
        raise OaUnreachable("connection reset")

    oa.find_requests = decided_while_asking
    counts = worker.run_once()
    assert counts.adopted == 1 and counts.retrying == 0
    d = delivery(store, key)
    assert d.state is S.DELIVERED and d.oa_request_id == str(rid) and "named by an OA outcome" in d.last_error
    assert voucher_state(store, "HD01-2024-03-J-0001").state is WorkflowState.APPROVED


# --- metrics: the worker's and poller's counts in the registry they are given ------------------


def test_worker_and_poller_count_into_their_adapters_registry_and_no_other(store, transforms, clock):
    from archive_oa.metrics import Metrics

    ours, other = Metrics(), Metrics()
    keys = add_vouchers(store, 3)
    oa = FakeOa(create_faults=["ok", "rejected", "ok"])
    counts = worker_for(store, oa, transforms, clock, metrics=ours).run_once()
    assert (counts.delivered, counts.dead) == (2, 1)
    assert ours.value("archive_oa_delivery_claims_total") == 3
    assert ours.value("archive_oa_delivery_attempts_total", result="delivered") == 2
    assert ours.value("archive_oa_delivery_attempts_total", result="dead") == 1
    assert ours.value("archive_oa_delivery_failures_total", failure="rejected by the OA") == 1
    rid = next(int(delivery(store, k).oa_request_id) for k in keys if delivery(store, k).oa_request_id)
    oa.decide(rid, WorkflowState.APPROVED, T0)
    polled = Poller(store, oa, SYNC, clock=clock, metrics=ours).run_once()
    assert polled.applied == 1
    assert ours.value("archive_oa_poll_items_total", result="applied") == 1
    assert ours.value("archive_oa_poll_cursor") == polled.cursor
    assert other.value("archive_oa_delivery_claims_total") == 0  # a second adapter's registry stays apart
