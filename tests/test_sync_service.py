"""SyncService: trigger (scope, periods), job status from deliveries, reconciliation; CLI tables."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from archive_oa import voucher_xml
from archive_oa.cli.output import table as _table
from archive_oa.domain.delivery import DeliveryState, FailureClass
from archive_oa.domain.model import WorkflowState
from archive_oa.domain.ports import CompletedItem
from archive_oa.errors import AccessDenied, NotFound, OaAuthenticationFailed, OaUnreachable, ValidationFailed
from archive_oa.services.sync import SyncService
from archive_oa.store import jobs, outbox
from archive_oa.store import vouchers as repo
from archive_oa.sync.failures import error_text

import factories
from fakes import Clock, FakeOa

T0 = dt.datetime(2024, 5, 1, tzinfo=dt.timezone.utc)


@pytest.fixture
def store(store):
    """The shared fresh store (SQLite and PostgreSQL, tests/conftest.py) with two orgs' vouchers."""
    with store.transaction(immediate=True) as conn:
        for org in ("HD01", "HN02"):
            for period in ("2024-03", "2024-04"):
                for n in (1, 2):
                    v = factories.voucher(f"{org}-{period}-{n:04d}", org=org, org_name=f"{org} 公司", fonds="Z9",
                                          period=period, day=3, no=n, preparer="刘洋", summary=None,
                                          amount=Decimal("100.00") * n, lines=("购买办公用品", "银行付款"))
                    repo.save_voucher(conn, v, voucher_xml.canonical_hash(v), T0)
    return store


def states(store, org=None):
    with store.transaction() as conn:
        return {vid: repo.load_voucher(conn, vid).state
                for vid, _, _ in repo.select_for_sync(conn, org_code=org, states=tuple(WorkflowState))}


def test_trigger_queues_matching_vouchers_once(store):
    service = SyncService(store, clock=Clock(T0))
    first = service.trigger(org_code="HD01", period_from="2024-04", period_to="2024-04")
    assert (first.queued, first.selected) == (2, 2)
    assert {vid for vid, s in states(store).items() if s is WorkflowState.QUEUED} == {
        "HD01-2024-04-0001", "HD01-2024-04-0002"}
    again = service.trigger(org_code="HD01")
    assert again.queued == 2  # only the March ones are still NONE
    assert service.trigger(org_code="HD01").queued == 0
    with store.transaction() as conn:
        assert {d.job_id for d in outbox.list_deliveries(conn)} == {first.job_id, again.job_id}


def test_trigger_by_voucher_ids_and_scope(store):
    service = SyncService(store, clock=Clock(T0))
    with pytest.raises(AccessDenied, match="HN02 is outside your scope"):
        service.trigger(org_code="HN02", org_codes=frozenset({"HD01"}))
    scoped = service.trigger(voucher_ids=["HD01-2024-03-0001", "HN02-2024-03-0001", "nope"],
                             org_codes=frozenset({"HD01"}))
    assert scoped.queued == 1  # the out-of-scope and unknown ids are not touched
    assert states(store)["HN02-2024-03-0001"] is WorkflowState.NONE
    everything_in_scope = service.trigger(org_codes=frozenset({"HD01"}))
    assert everything_in_scope.queued == 3
    assert all(s is WorkflowState.NONE for s in states(store, "HN02").values())


@pytest.mark.parametrize("kwargs,place", [
    ({"period_from": "2024-13"}, "periodFrom"),
    ({"period_to": "24-03"}, "periodTo"),
    ({"period_from": "2024-05", "period_to": "2024-03"}, "periodTo"),
])
def test_trigger_refuses_bad_periods(store, kwargs, place):
    with pytest.raises(ValidationFailed) as info:
        SyncService(store).trigger(**kwargs)
    assert info.value.issues[0].place == place


def test_status_counts_from_deliveries_and_finishes(store):
    clock = Clock(T0)
    service = SyncService(store, clock=clock)
    with pytest.raises(NotFound, match="no sync job"):
        service.status()
    job = service.trigger(org_code="HD01")
    status = service.status()  # the latest job
    assert (status.job_id, status.state, status.queued, status.delivered, status.failed, status.dead) == (
        job.job_id, "RUNNING", 4, 0, 0, 0)
    claims = outbox.claim(store, "w", 10, 60, T0)
    with store.transaction(immediate=True) as conn:
        outbox.mark_delivered(conn, claims[0], oa_request_id="1", now=T0)
        outbox.mark_delivered(conn, claims[1], oa_request_id="2", now=T0)
        outbox.mark_failed(conn, claims[2], state=DeliveryState.PENDING, error="down", now=T0,
                           next_attempt_at=T0 + dt.timedelta(seconds=5))
        outbox.mark_failed(conn, claims[3], state=DeliveryState.DEAD, error="rejected",
                           now=T0 + dt.timedelta(minutes=1))
    status = service.status(job.job_id)
    assert (status.state, status.delivered, status.failed, status.dead) == ("RUNNING", 2, 1, 1)
    c = outbox.claim(store, "w", 10, 60, T0 + dt.timedelta(seconds=5))
    with store.transaction(immediate=True) as conn:
        outbox.mark_delivered(conn, c[0], oa_request_id="3", now=T0 + dt.timedelta(minutes=2))
    done = service.status(job.job_id)
    assert (done.state, done.delivered, done.failed, done.dead) == ("FINISHED", 3, 0, 1)
    assert done.finished_at == T0 + dt.timedelta(minutes=2)
    with pytest.raises(NotFound, match="sync job x does not exist"):
        service.status("x")


def test_empty_trigger_is_finished_at_once(store):
    service = SyncService(store, clock=Clock(T0))
    job = service.trigger(org_code="XX99")
    assert job.queued == 0 and service.status(job.job_id).state == "FINISHED"


def test_reconcile_reports_missing_orphaned_and_mismatched(store):
    oa = FakeOa()
    service = SyncService(store, oa, clock=Clock(T0))
    service.trigger(org_code="HD01", period_from="2024-03", period_to="2024-03")
    with store.transaction() as conn:
        d1, d2 = sorted(outbox.list_deliveries(conn), key=lambda d: d.voucher_id)
    claims = {c.delivery_id: c for c in outbox.claim(store, "w", 10, 60, T0)}
    with store.transaction(immediate=True) as conn:  # first voucher delivered as request 11
        outbox.mark_delivered(conn, claims[d1.id], oa_request_id="11", now=T0)
        repo.map_request(conn, external_key=d1.idempotency_key, voucher_id=d1.voucher_id, version=1,
                         oa_request_id="11")
        repo.set_workflow(conn, d1.voucher_id, state=WorkflowState.SUBMITTED, oa_request_id="11")
    oa.add_request(11, d1.idempotency_key, WorkflowState.APPROVED)  # the OA decided, the archive has not heard yet
    oa.add_request(12, d1.idempotency_key)  # 12: an extra request nobody maps
    # d2 never reached the OA; a stray completed request names a voucher of the period with a foreign key
    oa.completed.append(CompletedItem(1, 99, f"{d2.voucher_id}:0000", WorkflowState.APPROVED, T0, ()))
    oa.completed.append(CompletedItem(2, 98, "HN02-2024-03-0001:1111", WorkflowState.APPROVED, T0, ()))

    report = service.reconcile("HD01", "2024-03")
    assert report.checked == 2
    assert report.missing_in_oa == [d2.voucher_id]
    assert report.orphaned_in_oa == ["12", "99"]  # 98 belongs to another organisation
    (mismatch,) = report.state_mismatches
    assert (mismatch.voucher_id, mismatch.archive_state, mismatch.oa_state, mismatch.oa_request_id) == (
        d1.voucher_id, WorkflowState.SUBMITTED, WorkflowState.APPROVED, "11")
    assert report.notes

    with pytest.raises(AccessDenied):
        service.reconcile("HD01", "2024-03", org_codes=frozenset({"HN02"}))
    with pytest.raises(ValidationFailed):
        service.reconcile("HD01", "March")


def test_table_lines_up_chinese_text():
    text = _table(["凭证", "state"], [["记-1", "APPROVED"], ["x", "NONE"]])
    lines = text.splitlines()
    assert lines[0].startswith("凭证  state") and lines[2].startswith("记-1  APPROVED")
    assert lines[3].startswith("x     NONE")


def test_status_shows_a_scoped_caller_only_jobs_of_their_organisations(store):
    clock = Clock(T0)
    service = SyncService(store, clock=clock)
    march = dict(period_from="2024-03", period_to="2024-03")
    own = service.trigger(org_code="HD01", org_codes=frozenset({"HD01"}), **march)
    clock.now += dt.timedelta(minutes=1)
    other = service.trigger(org_code="HN02", **march)  # newer, by an unscoped operator
    clock.now += dt.timedelta(minutes=1)
    mixed = service.trigger()  # April of both organisations
    assert own.queued and other.queued and mixed.queued
    hd01 = frozenset({"HD01"})
    assert service.status(own.job_id, org_codes=hd01).job_id == own.job_id
    for hidden in (other.job_id, mixed.job_id):
        with pytest.raises(NotFound):
            service.status(hidden, org_codes=hd01)
    # "the latest job" means the latest the caller may see
    assert service.status(org_codes=hd01).job_id == own.job_id
    assert service.status().job_id == mixed.job_id


def test_oa_reads_ask_again_on_a_passing_fault_but_never_after_a_refusal():
    from archive_oa.errors import OaAuthenticationFailed, OaServerFault
    from archive_oa.services.oa_reads import RetryingReads

    answers = [OaServerFault("busy", operation="FindWorkflowRequests"), OaServerFault("busy"), [7]]
    calls, slept = [], []

    def find(key):
        calls.append(key)
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    class Oa:
        find_requests = staticmethod(find)

    reads = RetryingReads(Oa(), sleep=slept.append)
    assert reads.find_requests("k") == [7] and len(calls) == 3 and len(slept) == 2
    assert 0 < slept[0] < slept[1] <= 1.0  # 0.5 s then 1 s, less up to half for jitter

    answers[:] = [OaAuthenticationFailed("refused", operation="FindWorkflowRequests"), [7]]
    with pytest.raises(OaAuthenticationFailed):
        reads.find_requests("k")
    assert len(calls) == 4, "a refusal is not asked again"


def test_take_over_gives_the_new_job_the_matching_deliveries_still_waiting(store):
    service = SyncService(store, clock=Clock(T0))
    earlier = service.trigger(org_code="HD01", period_from="2024-03", period_to="2024-03")  # 2 waiting
    others = service.trigger(org_code="HN02")  # 4 waiting, another organisation
    claims = outbox.claim(store, "w", 1, 60, T0, job_id=earlier.job_id)
    with store.transaction(immediate=True) as conn:  # one of HD01's is a dead letter by now
        outbox.mark_failed(conn, claims[0], state=DeliveryState.DEAD, error="rejected", now=T0)
    service.end_run(earlier.job_id)  # its run is over (an earlier sync ended): what it left may be taken over

    job = service.trigger(org_code="HD01", take_over=True)
    assert (job.selected, job.queued, job.taken_over, job.dead_letters) == (4, 3, 1, 1)  # 2 April ones queued now
    status = service.status(job.job_id)
    assert (status.queued, status.waiting, status.delivered, status.failed, status.dead) == (3, 3, 0, 0, 0)
    assert service.status(earlier.job_id).queued == 1  # the dead letter stays with the job that had it
    # a run of the job claims its own deliveries only, though HN02's are due as well
    claimed = outbox.claim(store, "w", 10, 60, T0, job_id=job.job_id)
    assert sorted(c.voucher_id[:4] for c in claimed) == ["HD01"] * 3
    assert service.status(others.job_id).waiting == 4


def test_take_over_leaves_a_running_job_its_deliveries_and_every_job_row_agrees_with_its_status(store):
    service = SyncService(store, clock=Clock(T0))
    api = service.trigger(org_code="HD01", period_from="2024-03", period_to="2024-03")  # a TriggerSync: running
    job = service.trigger(org_code="HD01", take_over=True, kind="manual")

    def rows_agree(*results):
        for result in results:
            status = service.status(result.job_id)
            with store.transaction() as conn:
                row = jobs.get_job(conn, result.job_id)
            assert row.queued == status.queued
        return status

    assert rows_agree(api).queued == 2  # the TriggerSync still counts both of its vouchers
    with store.transaction() as conn:
        row = jobs.get_job(conn, job.job_id)
    assert (row.voucher_count, row.queued) == (job.selected, job.queued) == (4, 2)  # what sync prints
    assert (job.taken_over, job.elsewhere) == (0, 2)  # the April two are queued now; March's stay with the API's
    service.end_run(job.job_id)  # that sync ended with its two still open
    later = service.trigger(org_code="HD01", take_over=True, kind="manual")
    assert (later.queued, later.taken_over, later.elsewhere) == (2, 2, 2)
    assert rows_agree(api, job, later).queued == 2
    assert service.status(job.job_id).queued == 0


def test_strict_trigger_refuses_filters_that_select_nothing_and_makes_no_job(store):
    service = SyncService(store, clock=Clock(T0))
    with pytest.raises(NotFound, match="holds no voucher of organisation XX99: check --org"):
        service.trigger(org_code="XX99", strict=True)
    # the same message as reconcile's for an unknown organisation: it names the ones the archive holds
    with pytest.raises(NotFound, match="organisations it holds: HD01, HN02"):
        service.trigger(org_code="XX99", strict=True)
    with pytest.raises(NotFound, match="voucher nope is not in the archive .organisation HD01.: check --voucher"):
        service.trigger(org_code="HD01", voucher_ids=["HD01-2024-03-0001", "nope"], strict=True)
    with pytest.raises(NotFound, match=r"no voucher in the archive matches \(organisation HN02, periods 2025-01 to …\)"):
        service.trigger(org_code="HN02", period_from="2025-01", strict=True)
    with pytest.raises(NotFound, match="no sync job"):
        service.status()
    assert service.trigger(org_code="XX99").queued == 0  # not strict (TriggerSync): an empty job, as before


def test_status_groups_the_failed_vouchers_by_class_with_the_latest_error(store):
    clock = Clock(T0)
    service = SyncService(store, clock=clock)
    job = service.trigger(org_code="HD01")
    claims = outbox.claim(store, "w", 3, 60, T0)  # the fourth is not attempted yet
    later = T0 + dt.timedelta(seconds=1)
    unreachable = [OaUnreachable("the OA at x could not be reached"), OaUnreachable("still down")]
    with store.transaction(immediate=True) as conn:
        for claim, exc, when in zip(claims, unreachable, (T0, later)):
            outbox.mark_failed(conn, claim, state=DeliveryState.PENDING, error=error_text("send", exc, "retry 2 of 12"),
                               now=when, next_attempt_at=T0 + dt.timedelta(minutes=1))
        outbox.mark_failed(conn, claims[2], state=DeliveryState.PENDING, now=T0,
                           error=error_text("send", OaAuthenticationFailed("refused the credentials"), "retry 2 of 12"),
                           next_attempt_at=T0 + dt.timedelta(minutes=1))
    status = service.status(job.job_id)
    assert (status.queued, status.failed, status.waiting, status.undelivered) == (4, 3, 1, 4)
    assert [(g.failure, g.vouchers) for g in status.failures] == [
        (FailureClass.UNREACHABLE, 2), (FailureClass.CREDENTIALS, 1)]
    assert status.failures[0].last_error == "send: OaUnreachable: still down (retry 2 of 12)"
