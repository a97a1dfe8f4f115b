"""Sync use cases: trigger a sync job, report its status, reconcile archive vs OA.

Called by the gateway (TriggerSync, GetSyncStatus, ReconcilePeriod), the CLI and the
scheduler.  ``org_codes`` is the caller's organisation scope (None = all).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Callable, Sequence

from ..domain.clock import utc_now
from ..domain.delivery import DeliveryState, FailureClass, idempotency_key
from ..domain.model import VoucherQuery, WorkflowState
from ..domain.ports import OaWorkflowPort
from ..errors import AccessDenied, ConfigurationError, Issue, NotFound, ValidationFailed
from ..store import jobs, outbox
from ..sync.failures import failure_class_of
from ..sync.repo import ArchiveRepo, default_repo
from .oa_reads import RetryingReads
from .periods import period_issue


@dataclass(frozen=True)
class TriggerResult:
    job_id: str
    queued: int  # deliveries (one per voucher) the job delivers: enqueued now, plus any taken over
    selected: int = 0  # vouchers that matched (already queued ones are not queued again)
    taken_over: int = 0  # of ``queued``: deliveries that were already waiting (``take_over``)
    dead_letters: int = 0  # matching vouchers whose delivery is a dead letter: not resent by a sync
    elsewhere: int = 0  # matching vouchers left with another sync job that is still running


@dataclass(frozen=True)
class FailureGroup:
    """The job's vouchers whose last attempt failed for one reason."""

    failure: FailureClass
    vouchers: int
    last_error: str  # the most recent error of this class


@dataclass(frozen=True)
class SyncJobStatus:
    """A job's progress, one delivery (one voucher version) each: queued = delivered + failed + dead + waiting."""

    job_id: str
    state: str  # RUNNING: deliveries still open; FINISHED: all delivered or dead
    queued: int  # the job's deliveries
    delivered: int
    failed: int  # open deliveries that failed at least once (retrying)
    dead: int
    started_at: dt.datetime
    finished_at: dt.datetime | None
    waiting: int = 0  # open deliveries not attempted yet
    failures: tuple[FailureGroup, ...] = ()  # the failed and dead ones by class, most vouchers first

    @property
    def undelivered(self) -> int:
        return self.queued - self.delivered


@dataclass(frozen=True)
class StateMismatch:
    voucher_id: str
    archive_state: WorkflowState
    oa_state: WorkflowState
    oa_request_id: str


@dataclass(frozen=True)
class ReconcileReport:
    org_code: str
    period: str
    checked: int = 0  # archive vouchers compared
    missing_in_oa: list[str] = field(default_factory=list)  # voucher ids the OA has no request for
    orphaned_in_oa: list[str] = field(default_factory=list)  # OA request ids the archive does not map
    state_mismatches: list[StateMismatch] = field(default_factory=list)
    notes: tuple[str, ...] = ()  # what the comparison could not cover


@dataclass(frozen=True)
class Requeued:
    """What ``requeue_missing`` did for one voucher the OA does not know."""

    voucher_id: str
    action: str  # one of REQUEUE_ACTIONS
    delivery_id: int | None
    detail: str

    @property
    def handled(self) -> bool:
        """True when the voucher is on its way to the OA again (nothing left for an operator)."""
        return self.action in ("retried", "enqueued", "queued", "in-flight")


#: retried: a dead letter is due again (it asks the OA before sending); enqueued: a new
#: delivery for a voucher that had none; queued / in-flight: already on its way;
#: needs-operator: nothing safe to do automatically (the detail says what to check).
REQUEUE_ACTIONS = ("retried", "enqueued", "queued", "in-flight", "needs-operator")

#: How much of the OA's completed queue reconciliation reads (read only, never acknowledged).
RECONCILE_SCAN_LIMIT = 5000


class SyncService:
    def __init__(
        self,
        store,
        oa: OaWorkflowPort | None = None,
        *,
        repo: ArchiveRepo | None = None,
        clock: Callable[[], dt.datetime] = utc_now,
    ) -> None:
        self.store = store
        self.oa = oa
        # reconciliation only reads from the OA: a call that meets a passing fault is asked again
        self.oa_reads = RetryingReads(oa) if oa is not None else None
        self.repo = repo or default_repo()
        self.clock = clock

    # --- trigger -------------------------------------------------------------------

    def trigger(
        self,
        *,
        org_code: str | None = None,
        period_from: str | None = None,
        period_to: str | None = None,
        voucher_ids: Sequence[str] | None = None,
        org_codes: frozenset[str] | None = None,
        kind: str = "api",
        take_over: bool = False,
        strict: bool = False,
    ) -> TriggerResult:
        """Queue every matching voucher not yet sent (state NONE) under a new job.

        ``take_over``: the job also takes the matching vouchers' deliveries that are still
        open and that no running job holds — queued by an import, or by an earlier job whose
        run is over (``end_run``) — so a run that delivers this job only delivers them too.
        A running job (a TriggerSync, a scheduled one, another sync in progress) keeps its
        deliveries: its counts stay true; they are counted in ``elsewhere``.  ``strict``:
        filters that match no voucher of the archive, or voucher ids it does not hold, are
        NotFound (no job is made).  The job row stores what the result says: ``selected``
        vouchers, ``queued`` deliveries.
        """
        _check_periods(period_from, period_to)
        orgs = _orgs_in_scope(org_code, org_codes)
        ids = list(dict.fromkeys(voucher_ids)) if voucher_ids else None
        now = self.clock()
        with self.store.transaction(immediate=True) as conn:
            if strict:
                self._check_selection(conn, orgs, org_code, period_from, period_to, ids, org_codes)
            job_id = jobs.create_job(
                conn, kind=kind, now=now, org_code=org_code, period_from=period_from, period_to=period_to
            )
            selected: list[tuple[str, int, str]] = []
            waiting: list[tuple[str, int, str]] = []
            for org in orgs:
                selected += self.repo.select_for_sync(
                    conn, org_code=org, period_from=period_from, period_to=period_to, voucher_ids=ids
                )
                if take_over:
                    waiting += self.repo.select_for_sync(
                        conn, org_code=org, period_from=period_from, period_to=period_to, voucher_ids=ids,
                        states=(WorkflowState.QUEUED,),
                    )
            queued = 0
            for voucher_id, version, content_hash in selected:
                key = idempotency_key(voucher_id, content_hash)
                if outbox.enqueue(conn, voucher_id=voucher_id, version=version, idempotency_key=key,
                                  now=now, job_id=job_id):
                    self.repo.set_workflow(conn, voucher_id, state=WorkflowState.QUEUED)
                    queued += 1
            takeable: dict[str | None, list[int]] = {}  # by the job that holds them now
            dead = elsewhere = 0
            run_over: dict[str, bool] = {}
            for voucher_id, _, content_hash in waiting:
                delivery = outbox.find_by_key(conn, idempotency_key(voucher_id, content_hash))
                if delivery is None or delivery.state is DeliveryState.DELIVERED:
                    continue
                if delivery.state is DeliveryState.DEAD:
                    dead += 1
                elif delivery.job_id is None or _run_over(conn, delivery.job_id, run_over):
                    takeable.setdefault(delivery.job_id, []).append(delivery.id)
                else:
                    elsewhere += 1
            taken = 0
            for holder, ids_held in takeable.items():
                moved = outbox.move_to_job(conn, ids_held, job_id)
                if holder is not None:
                    jobs.add_queued(conn, holder, -moved)  # its row keeps counting its own deliveries
                taken += moved
            result = TriggerResult(job_id, queued + taken, len(selected) + len(waiting), taken, dead, elsewhere)
            jobs.set_job_counts(conn, job_id, voucher_count=result.selected, queued=result.queued)
            if result.queued == 0:
                jobs.finish_job(conn, job_id, finished_at=now)
        return result

    def end_run(self, job_id: str) -> None:
        """The job's own run is over (``archive-oa sync`` ended): what it leaves open is delivered
        by the workers, and a later job may take it over (``trigger(take_over=True)``)."""
        with self.store.transaction(immediate=True) as conn:
            jobs.finish_job(conn, job_id, finished_at=self.clock())

    def _check_selection(self, conn, orgs, org_code, period_from, period_to, ids, org_codes) -> None:
        """NotFound when the filters select no voucher of the archive or name ids it does not hold."""
        found = set()
        for org in orgs:
            found.update(v for v, _, _ in self.repo.select_for_sync(
                conn, org_code=org, period_from=period_from, period_to=period_to, voucher_ids=ids,
                states=tuple(WorkflowState),
            ))
        within = _describe_filters(org_code, period_from, period_to)
        missing = [i for i in ids or () if i not in found]
        if missing:
            raise NotFound(f"voucher {', '.join(missing)} is not in the archive{within}: check --voucher "
                           "(the voucherId of an imported voucher); nothing was queued or sent",
                           voucher_ids=missing)
        if found:
            return
        if org_code:
            _check_org_known(self.repo.org_codes(conn), org_code, org_codes)
        raise NotFound(f"no voucher in the archive matches{within or ' (the archive is empty)'}: check the "
                       "filters; nothing was queued or sent")

    # --- status --------------------------------------------------------------------

    def status(self, job_id: str | None = None, *, org_codes: frozenset[str] | None = None) -> SyncJobStatus:
        """A job's progress; ``job_id`` None means the latest job the caller may see.

        A caller scoped to some organisations (``org_codes``) sees only jobs whose vouchers all
        belong to them; any other job is NotFound, as if it did not exist.
        """
        with self.store.transaction() as conn:
            if job_id is None and org_codes is not None:
                job = next((j for j in jobs.recent_jobs(conn) if _job_visible(conn, j, org_codes)), None)
            else:
                job = jobs.get_job(conn, job_id)
                if job is not None and org_codes is not None and not _job_visible(conn, job, org_codes):
                    job = None
            if job is None:
                raise NotFound(
                    f"sync job {job_id} does not exist in your organisations" if job_id else "no sync job has run yet"
                )
            per_state = outbox.counts(conn, job_id=job.id)
            retrying = outbox.retrying(conn, job_id=job.id)
            last_change = outbox.last_change(conn, job_id=job.id)
            failed = outbox.failed(conn, job_id=job.id)
        open_count = sum(per_state[s] for s in (DeliveryState.PENDING, DeliveryState.UNCERTAIN, DeliveryState.IN_FLIGHT))
        state, finished_at = "RUNNING", None
        if open_count == 0:  # the last change of its deliveries, unless its run ended after (or without) one
            state, finished_at = "FINISHED", max(t for t in (job.finished_at, last_change, job.started_at) if t)
            if job.state != "FINISHED":
                with self.store.transaction(immediate=True) as conn:
                    jobs.finish_job(conn, job.id, finished_at=finished_at)
        return SyncJobStatus(
            job_id=job.id,
            state=state,
            queued=sum(per_state.values()),
            delivered=per_state[DeliveryState.DELIVERED],
            failed=retrying,
            dead=per_state[DeliveryState.DEAD],
            started_at=job.started_at,
            finished_at=finished_at,
            waiting=open_count - retrying,
            failures=_failure_groups(failed),
        )

    # --- reconcile -----------------------------------------------------------------

    def reconcile(self, org_code: str, period: str, *, org_codes: frozenset[str] | None = None,
                  strict: bool = False) -> ReconcileReport:
        """Compare the archive's vouchers of ``org_code``/``period`` with the OA.

        - missing in OA: a voucher the adapter queued or delivered whose current key
          ``FindWorkflowRequests`` does not know;
        - orphaned in OA: OA requests carrying a key of one of these vouchers (any version)
          that the archive does not map, and completed requests still in the OA's queue whose
          key names one of these vouchers but is unknown;
        - state mismatches: the mapped request's status (``GetWorkflowRequest``) differs
          from the voucher's workflow state.
        The OA interface cannot list requests by organisation or period, so a request
        created outside the adapter with a key unlike ours is not found.
        ``strict`` (the CLI) makes an organisation the archive holds no voucher of a
        ``NotFound``; the gateway's ``ReconcilePeriod`` answers it with an empty report.
        """
        if self.oa is None:
            raise ConfigurationError("reconciliation needs the OA client; configure [oa] url")
        if issue := period_issue("period", period or ""):
            raise ValidationFailed("the period is invalid", [issue])
        if not org_code:
            raise ValidationFailed("orgCode is required", [Issue("orgCode", "required", "give the organisation code")])
        _orgs_in_scope(org_code, org_codes)
        with self.store.transaction() as conn:
            summaries = _all_summaries(self.repo, conn, org_code, period)
            if strict and not summaries:
                _check_org_known(self.repo.org_codes(conn), org_code, org_codes)
            by_voucher: dict[str, list[outbox.Delivery]] = {}
            for delivery in outbox.for_vouchers(conn, [s.voucher_id for s in summaries]):
                by_voucher.setdefault(delivery.voucher_id, []).append(delivery)
            known = _known_requests(conn, by_voucher)
            current_keys = {}
            for summary in summaries:
                latest = self.repo.latest_version(conn, summary.voucher_id)
                if latest is not None:
                    current_keys[summary.voucher_id] = idempotency_key(summary.voucher_id, latest[1])

        report = ReconcileReport(org_code=org_code, period=period, checked=len(summaries),
                                 notes=(
                                     "the OA cannot list requests by organisation or period: orphans are found "
                                     "by the keys of this period's vouchers and in the OA's unacknowledged "
                                     "completed queue only",
                                 ))
        orphans: set[str] = set()
        for summary in summaries:
            history = by_voucher.get(summary.voucher_id, [])
            if not history:
                if summary.state is not WorkflowState.NONE:  # its state says sent, yet no delivery exists
                    found = [str(i) for i in self.oa_reads.find_requests(current_keys[summary.voucher_id])]
                    if not found:
                        report.missing_in_oa.append(summary.voucher_id)
                    orphans.update(i for i in found if i not in known)  # in the OA, unknown to the archive
                continue
            current = max(history, key=lambda d: (d.version, d.id))
            current_found: list[str] = []
            for delivery in history:
                found = [str(i) for i in self.oa_reads.find_requests(delivery.idempotency_key)]
                if delivery is current:
                    current_found = found
                orphans.update(i for i in found if i not in known)
            request_id = current.oa_request_id
            # the OA holds no request for the key, or no longer the one we mapped (deleted in
            # the OA): missing — and there is no OA state to compare with
            if not current_found or (request_id and request_id not in current_found):
                report.missing_in_oa.append(summary.voucher_id)
                continue
            if request_id and summary.state is not WorkflowState.NONE:
                oa_state = self.oa_reads.get_request(int(request_id)).status
                if oa_state is not summary.state:
                    report.state_mismatches.append(StateMismatch(summary.voucher_id, summary.state, oa_state, request_id))
        orphans.update(self._orphans_in_queue({s.voucher_id for s in summaries}, known, by_voucher))
        report.orphaned_in_oa.extend(sorted(orphans, key=lambda i: (len(i), i)))
        return report

    def requeue_missing(self, report: ReconcileReport) -> list[Requeued]:
        """Put every voucher of ``report.missing_in_oa`` back on its way to the OA, where safe.

        A dead letter is retried (it asks the OA for its key first, so a request that did
        arrive is adopted, never doubled); a voucher with no delivery for its current
        content gets one; one still queued is left to the worker.  A delivery recorded as
        DELIVERED whose key the OA no longer finds is not resent: the OA lost or deleted
        the request, and only a person can tell which — the detail says what to check.
        """
        now = self.clock()
        done: list[Requeued] = []
        with self.store.transaction(immediate=True) as conn:
            for voucher_id in report.missing_in_oa:
                done.append(self._requeue_one(conn, voucher_id, now))
        return done

    def _requeue_one(self, conn, voucher_id: str, now: dt.datetime) -> Requeued:
        latest = self.repo.latest_version(conn, voucher_id)
        if latest is None:
            return Requeued(voucher_id, "needs-operator", None, "the voucher is no longer in the archive")
        version, content_hash = latest
        key = idempotency_key(voucher_id, content_hash)
        delivery = outbox.find_by_key(conn, key)
        if delivery is None:
            voucher = self.repo.load_voucher(conn, voucher_id)
            if voucher is not None and voucher.state.decided:
                return Requeued(voucher_id, "needs-operator", None,
                                f"the archive records a decision ({voucher.state.value}, request "
                                f"{voucher.workflow.oa_request_id}) but the OA knows no request for key {key}: "
                                "check the OA before sending it again")
            # its state says it was sent once: the first attempt asks the OA before sending
            outbox.enqueue(conn, voucher_id=voucher_id, version=version, idempotency_key=key, now=now, ask_first=True)
            self.repo.set_workflow(conn, voucher_id, state=WorkflowState.QUEUED)
            created = outbox.find_by_key(conn, key)
            return Requeued(voucher_id, "enqueued", created.id if created else None,
                            f"version {version} had no delivery; queued with key {key} (asks the OA first)")
        if delivery.state is DeliveryState.DEAD:
            outbox.retry_dead(conn, [delivery.id], now=now)
            return Requeued(voucher_id, "retried", delivery.id,
                            f"dead letter due again (last error: {delivery.last_error or 'none'})")
        if delivery.state is DeliveryState.IN_FLIGHT:
            return Requeued(voucher_id, "in-flight", delivery.id, "a worker is delivering it now")
        if delivery.state in (DeliveryState.PENDING, DeliveryState.UNCERTAIN):
            return Requeued(voucher_id, "queued", delivery.id,
                            f"already queued ({delivery.state.value}, attempt {delivery.attempts + 1} due "
                            f"{delivery.next_attempt_at:%Y-%m-%d %H:%M:%S} UTC)")
        return Requeued(voucher_id, "needs-operator", delivery.id,
                        f"delivered as OA request {delivery.oa_request_id}, but the OA finds no request for "
                        f"key {key}: ask the OA administrators whether request {delivery.oa_request_id} "
                        "was deleted before sending the voucher again")

    def _orphans_in_queue(self, voucher_ids: set[str], known: set[str], by_voucher) -> set[str]:
        keys = {d.idempotency_key for history in by_voucher.values() for d in history}
        orphans: set[str] = set()
        cursor, seen = 0, 0
        while seen < RECONCILE_SCAN_LIMIT:
            batch = self.oa_reads.fetch_completed(cursor, 500)
            for item in batch.items:
                key = item.external_key or ""
                named = key.rpartition(":")[0] in voucher_ids
                if named and str(item.request_id) not in known and key not in keys:
                    orphans.add(str(item.request_id))
            seen += len(batch.items)
            if not batch.items or batch.next_cursor == cursor:
                break
            cursor = batch.next_cursor
        return orphans


def _failure_groups(failed: Sequence[outbox.Delivery]) -> tuple[FailureGroup, ...]:
    """``failed`` (newest change first) counted by failure class, with each class's latest error."""
    groups: dict[FailureClass, list] = {}
    for delivery in failed:
        group = groups.setdefault(failure_class_of(delivery.last_error), [0, delivery.last_error or ""])
        group[0] += 1
    ordered = sorted(groups.items(), key=lambda item: -item[1][0])
    return tuple(FailureGroup(cls, count, error) for cls, (count, error) in ordered)


def _run_over(conn, job_id: str, known: dict[str, bool]) -> bool:
    """Whether job ``job_id``'s run is over (it is FINISHED), remembered in ``known``."""
    if job_id not in known:
        job = jobs.get_job(conn, job_id)
        known[job_id] = job is None or job.state == "FINISHED"
    return known[job_id]


def _describe_filters(org_code: str | None, period_from: str | None, period_to: str | None) -> str:
    parts = [f"organisation {org_code}"] if org_code else []
    if period_from or period_to:
        parts.append(f"periods {period_from or '…'} to {period_to or '…'}")
    return f" ({', '.join(parts)})" if parts else ""


def _known_requests(conn, by_voucher) -> set[str]:
    return {d.oa_request_id for history in by_voucher.values() for d in history if d.oa_request_id}


def _all_summaries(repo, conn, org_code: str, period: str) -> list:
    items, page = [], 1
    while True:
        result = repo.query_vouchers(conn, VoucherQuery(org_code=org_code, period_from=period, period_to=period,
                                             page=page, page_size=500))
        items.extend(result.items)
        if page * result.page_size >= result.total or not result.items:
            return items
        page += 1


def _check_org_known(known: Sequence[str], org_code: str, org_codes: frozenset[str] | None) -> None:
    """NotFound for an organisation the archive holds no voucher of: a typo must not read as "all is well"."""
    if org_code in known:
        return
    visible = [org for org in known if org_codes is None or org in org_codes]
    listed = ", ".join(visible[:20]) + (f" and {len(visible) - 20} more" if len(visible) > 20 else "")
    if not visible:
        listed = "none at all" if org_codes is None else "none of the organisations in your scope either"
    raise NotFound(f"the archive holds no voucher of organisation {org_code}: check --org (the orgCode of the "
                   f"imported vouchers); organisations it holds: {listed}", org_code=org_code)


def _orgs_in_scope(org_code: str | None, org_codes: frozenset[str] | None) -> list[str | None]:
    """The organisations to select from: one, every one in scope, or all (None)."""
    if org_codes is None:
        return [org_code]
    if org_code is not None:
        if org_code not in org_codes:
            raise AccessDenied(f"organisation {org_code} is outside your scope ({', '.join(sorted(org_codes))})")
        return [org_code]
    return sorted(org_codes)


def _check_periods(period_from: str | None, period_to: str | None) -> None:
    issues = [
        issue for name, value in (("periodFrom", period_from), ("periodTo", period_to))
        if value is not None and (issue := period_issue(name, value))
    ]
    if not issues and period_from and period_to and period_from > period_to:
        issues.append(Issue("periodTo", "period-order", f"periodTo {period_to} is before periodFrom {period_from}"))
    if issues:
        raise ValidationFailed("the sync period is invalid", issues)


def _job_visible(conn, job, org_codes: frozenset[str]) -> bool:
    """A scoped caller sees a job only when every voucher it queued is in their organisations."""
    if job.org_code is not None and job.org_code not in org_codes:
        return False
    orgs = jobs.job_orgs(conn, job.id)
    if not orgs:  # an empty job tells nothing, unless it was for an organisation outside the scope
        return job.org_code is None or job.org_code in org_codes
    return orgs <= org_codes
