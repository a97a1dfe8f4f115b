"""Delivery: outbox → OA workflow requests, exactly once in effect.

One attempt is three short steps with no database transaction open during the
network call: claim (commit) → ask / render / send → settle (commit).  A claim that
may have reached the OA before (UNCERTAIN, or an expired lease) first asks the OA
for its idempotency key and adopts a request it finds instead of sending again.
Settles of concurrent attempts share one write transaction (the store's ``GroupCommit``),
each still fenced by its own lease.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import os
import socket
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, fields
from typing import Callable

from ..domain.clock import utc_now
from ..domain.delivery import DeliveryState, FailureKind, RetryPolicy
from ..domain.ports import OaWorkflowPort
from ..errors import AdapterError, OaError, OaServerFault
from ..metrics import Metrics
from ..settings import SyncSettings
from ..store import outbox
from ..store.outbox import Claim
from .failures import FailedAttempt, RoundLog, error_text, rule_for
from .render import render_workflow
from .repo import ArchiveRepo, default_repo
from .wakeup import WorkSignal

log = logging.getLogger(__name__)


def default_owner(prefix: str = "worker") -> str:
    """A lease owner name unique per process and instance: host, pid, random suffix."""
    return f"{prefix}@{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


@dataclass
class DeliveryCounts:
    claimed: int = 0
    delivered: int = 0  # a new OA request was created
    adopted: int = 0  # the OA already held the key's request: adopted, nothing sent
    retrying: int = 0  # failed, due again later
    dead: int = 0  # permanent failure or out of attempts
    lost: int = 0  # our lease expired meanwhile: the new holder settles it
    released: int = 0  # given back unsent at shutdown
    anomalies: int = 0  # more than one OA request for one key (should never happen)
    errors: int = 0  # unexpected errors while settling (left to lease expiry)
    failures: Counter = field(default_factory=Counter)  # failed attempts (retrying + dead) per FailureClass

    def __iadd__(self, other: "DeliveryCounts") -> "DeliveryCounts":
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))
        return self

    def __add__(self, other: "DeliveryCounts") -> "DeliveryCounts":
        total = DeliveryCounts()
        total += self
        total += other
        return total

    @property
    def outage(self) -> bool:
        """Nothing got through and the OA was unreachable or refused our credentials:
        another round now would fail the same way."""
        return self.delivered + self.adopted == 0 and any(cls.outage for cls in self.failures)


def classify(exc: BaseException, phase: str) -> FailureKind:
    """How an attempt's failure affects the next one (``rule_for`` gives the kind of a failed send).

    ``phase`` is where it failed: ``find`` (asking the OA), ``render`` or ``send``.
    """
    if phase == "find":
        return FailureKind.AMBIGUOUS  # the earlier doubt is not resolved yet
    kind = rule_for(exc).retry
    if phase == "render" and kind is FailureKind.AMBIGUOUS:
        return FailureKind.TRANSIENT  # before sending: nothing can have reached the OA
    return kind


class DeliveryWorker:
    """Claims due deliveries and delivers them with a pool of ``settings.workers`` threads."""

    def __init__(
        self,
        store,
        oa: OaWorkflowPort,
        transforms,
        settings: SyncSettings,
        *,
        owner: str | None = None,
        repo: ArchiveRepo | None = None,
        policy: RetryPolicy | None = None,
        clock: Callable[[], dt.datetime] = utc_now,
        rng: random.Random | None = None,
        wake: WorkSignal | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.store = store
        self.oa = oa
        self.transforms = transforms
        self.settings = settings
        self.owner = owner or default_owner()
        self.repo = repo or default_repo()
        self.policy = policy or settings.retry_policy
        self.clock = clock
        self.rng = rng or random.Random()
        self.metrics = metrics or Metrics()  # the Adapter's; a worker of its own counts apart
        self._rng_lock = threading.Lock()
        self._stopping = threading.Event()
        self.wake = wake  # real-time mode: new work ends an idle wait (sync/wakeup.py)
        self._left_due: dt.datetime | None = None  # when what the last run left comes due
        self._attempt_local = threading.local()  # the failure of the attempt on this thread
        self._settles = store.group_commit
        self._pool = ThreadPoolExecutor(max_workers=max(1, settings.workers), thread_name_prefix="delivery")

    # --- public --------------------------------------------------------------------

    def run_once(self) -> DeliveryCounts:
        """Deliver up to ``batch_size`` due deliveries; returns what happened."""
        counts = DeliveryCounts()
        self._drain(counts, budget=self.settings.batch_size)
        return counts

    def run_until_idle(
        self,
        deadline: float | None = None,
        *,
        on_progress: Callable[[DeliveryCounts], None] | None = None,
        wait_for_retries: bool = True,
        job_id: str | None = None,
        stop_on_outage: bool = False,
    ) -> DeliveryCounts:
        """Deliver until nothing is due; ``deadline`` is a ``time.monotonic()`` instant.

        With ``wait_for_retries`` it also sleeps until retries come due, as long as
        they come due before the deadline.  ``job_id`` delivers that sync job's deliveries
        only.  With ``stop_on_outage`` it ends after a round that found the OA unreachable
        or refusing our credentials (``DeliveryCounts.outage``): waiting cannot fix that.
        """
        total = DeliveryCounts()
        while not self._stopping.is_set():
            if deadline is not None and time.monotonic() >= deadline:
                break
            round_ = DeliveryCounts()
            progress = (lambda counts: on_progress(total + counts)) if on_progress else None
            claimed = self._drain(round_, deadline=deadline, on_progress=progress, job_id=job_id)
            total += round_
            if stop_on_outage and round_.outage:
                break
            if claimed:
                continue
            if not wait_for_retries:
                break
            with self.store.transaction() as conn:
                due = outbox.next_due(conn, job_id=job_id)
            self._left_due = due
            if due is None:
                break
            wait = max((due - self.clock()).total_seconds(), 0.05)
            if deadline is not None and time.monotonic() + wait > deadline:
                break
            self._sleep(min(wait, 5.0))
        return total

    def wait_for_work(self, timeout: float) -> bool:
        """Idle up to ``timeout`` seconds; True as soon as new work is signalled or what the
        last ``run_until_idle`` left (a retry) comes due, False when the time passed first."""
        if self._left_due is not None:
            until_due = (self._left_due - self.clock()).total_seconds()
            if until_due <= timeout:
                self._sleep(max(until_due, 0.0))
                self._left_due = None
                return True
        return self._sleep(timeout)

    def _sleep(self, seconds: float) -> bool:
        """Sleep, cut short by stop() and — with a ``wake`` signal — by new work (True)."""
        if self.wake is None:
            return self._stopping.wait(seconds)
        return self.wake.wait(seconds)

    def _drain(
        self,
        counts: DeliveryCounts,
        *,
        budget: int | None = None,
        deadline: float | None = None,
        on_progress: Callable[[DeliveryCounts], None] | None = None,
        job_id: str | None = None,
    ) -> int:
        """Claim and deliver what was due when it began (at most ``budget`` claims): one round.
        Returns the claims made.

        A claim is taken only when a thread is free, never a batch ahead: one slow OA call
        (a timeout is 30 s by default) then holds up its own thread only, not every claim
        queued behind it, and a lease starts when its attempt starts instead of running
        out while the claim waits in the pool's queue.
        """
        slots = max(1, self.settings.workers)
        started = self.clock()  # a retry that comes due meanwhile waits for the next round
        running: set = set()
        claimed, more = 0, True
        round_log = RoundLog(log)
        while True:
            free = slots - len(running)
            if budget is not None:
                free = min(free, budget - claimed)
            if more and free > 0 and not self._stopping.is_set() and (deadline is None or time.monotonic() < deadline):
                with self._settles.exclusive():
                    claims = outbox.claim(self.store, self.owner, free, self.settings.lease_seconds, self.clock(),
                                          job_id=job_id, due_by=started)
                more = len(claims) == free  # fewer than asked: nothing else is due now
                claimed += len(claims)
                counts.claimed += len(claims)
                self.metrics.delivery_claims.inc(len(claims))
                running.update(self._pool.submit(self._attempt, claim) for claim in claims)
            if not running:
                round_log.end(claimed)
                return claimed
            done, running = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                result, anomaly, failure = future.result()
                setattr(counts, result, getattr(counts, result) + 1)
                counts.anomalies += anomaly
                if failure is not None:
                    round_log.failed(failure)
                    if result in ("retrying", "dead"):
                        counts.failures[failure.rule.failure] += 1
                self.metrics.delivery_settled(result, anomaly, failure.rule.failure if failure else None)
            if on_progress:
                on_progress(counts)

    def stop(self) -> None:
        """Stop claiming; deliveries already sent are settled, unsent ones are released."""
        self._stopping.set()
        if self.wake is not None:
            self.wake.close()  # ends an idle wait at once

    @property
    def uncertain_wait(self) -> float:
        """Seconds an attempt left without an answer waits before the next one asks the OA.

        A timeout (or a dropped connection) is only the adapter's patience: the OA may still
        be working on the call and commit its request a moment later.  A ``FindWorkflowRequests`` sent before that
        finds nothing and the resend makes a duplicate — the fault runs met exactly this
        under latency spikes.  ``[sync] uncertain_wait_seconds``, or twice the OA driver's
        ``call_timeout`` when that is -1.
        """
        configured = self.settings.uncertain_wait_seconds
        if configured >= 0:
            return configured
        timeout = getattr(self.oa, "call_timeout", None)  # the tests' fake OAs answer at once and have none
        return 2.0 * timeout if isinstance(timeout, (int, float)) else 0.0

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def close(self) -> None:
        self.stop()
        self._pool.shutdown(wait=True)

    # --- one delivery --------------------------------------------------------------

    def _attempt(self, claim: Claim) -> tuple[str, bool, FailedAttempt | None]:
        """``_deliver_safely``'s answer and the failure it settled, if any (its round logs it)."""
        self._attempt_local.failure = None
        result, anomaly = self._deliver_safely(claim)
        return result, anomaly, self._attempt_local.failure

    def _deliver_safely(self, claim: Claim) -> tuple[str, bool]:
        """(name of the DeliveryCounts field to count, whether the key had several OA requests)."""
        try:
            return self._deliver(claim)
        except Exception:  # a bug or the database went away: the lease expires, a re-claim asks first
            log.exception("delivery %s (%s) could not be settled", claim.delivery_id, claim.idempotency_key)
            return "errors", False

    def _deliver(self, claim: Claim) -> tuple[str, bool]:
        if self._stopping.is_set():
            return self._release(claim), False
        key = claim.idempotency_key
        if claim.ask_first:
            try:
                found = sorted(int(i) for i in self.oa.find_requests(key))
            except Exception as exc:
                return self._failed(claim, exc, "find"), False
            if found:
                note = None
                if len(found) > 1:  # adopt the first; the others show up in reconciliation
                    note = f"anomaly: OA holds {len(found)} requests for key {key}: {found}; adopted {found[0]}"
                    log.error("delivery %s: %s", claim.delivery_id, note)
                return self._delivered(claim, found[0], adopted=True, note=note), len(found) > 1
        try:
            workflow_xml = render_workflow(self.store, self.transforms, self.repo, claim.voucher_id, claim.version, key)
        except Exception as exc:
            return self._failed(claim, exc, "render"), False
        if self._stopping.is_set():
            return self._release(claim), False
        try:
            request_id = self.oa.create_request(workflow_xml)
        except Exception as exc:
            return self._failed(claim, exc, "send"), False
        return self._delivered(claim, request_id, adopted=False), False

    def _delivered(self, claim: Claim, request_id: int, *, adopted: bool, note: str | None = None) -> str:
        """Settle: delivery DELIVERED, request mapped, voucher SUBMITTED (in a group commit)."""
        rid = str(request_id)
        now = self.clock()
        return self._settles.run(lambda conn: self._settle_delivered(conn, claim, rid, now, adopted, note))

    def _settle_delivered(self, conn, claim: Claim, rid: str, now: dt.datetime, adopted: bool, note: str | None) -> str:
        # first statement: takes the delivery row lock that apply_outcome also waits for
        if not outbox.mark_delivered(conn, claim, oa_request_id=rid, now=now, note=note):
            log.warning("delivery %s: lease lost before settling; the new holder adopts %s", claim.delivery_id, rid)
            return "lost"
        self.repo.map_request(
            conn, external_key=claim.idempotency_key, voucher_id=claim.voucher_id,
            version=claim.version, oa_request_id=rid,
        )
        # SUBMITTED only while this version is the latest and undecided: an outcome may
        # already be in (it can overtake the settle) and is never moved back
        self.repo.mark_submitted(conn, claim.voucher_id, version=claim.version, oa_request_id=rid)
        return "adopted" if adopted else "delivered"

    def _failed(self, claim: Claim, exc: BaseException, phase: str) -> str:
        kind = classify(exc, phase)
        now = self.clock()
        with self._rng_lock:
            decision = self.policy.decide(kind, claim.attempts, now, self.rng)
        next_attempt_at = decision.next_attempt_at
        if decision.dead:
            state = DeliveryState.DEAD
        elif kind is FailureKind.AMBIGUOUS:
            state = DeliveryState.UNCERTAIN
            if not isinstance(exc, OaServerFault):  # a fault is an answer: the OA is done with that call
                next_attempt_at = max(next_attempt_at, now + dt.timedelta(seconds=self.uncertain_wait))
        else:
            state = DeliveryState.PENDING
        error = error_text(phase, exc, decision.reason)
        self._attempt_local.failure = _failed_attempt(claim, exc, phase, decision.reason)
        return self._settles.run(
            lambda conn: self._settle_failed(conn, claim, state, error, now, next_attempt_at)
        )

    def _settle_failed(self, conn, claim: Claim, state: DeliveryState, error: str, now: dt.datetime,
                       next_attempt_at: dt.datetime | None) -> str:
        outbox.lock(conn, claim.delivery_id)  # apply_outcome takes the same lock
        # An outcome may have arrived meanwhile and named the key's request: adopt it.
        known = self.repo.lookup_request(conn, external_key=claim.idempotency_key)
        if known is not None:
            note = f"adopted request {known.oa_request_id} named by an OA outcome ({error})"
            if not outbox.mark_delivered(conn, claim, oa_request_id=known.oa_request_id, now=now, note=note):
                return "lost"
            return "adopted"
        if not outbox.mark_failed(conn, claim, state=state, error=error, now=now, next_attempt_at=next_attempt_at):
            return "lost"
        return "dead" if state is DeliveryState.DEAD else "retrying"

    def _release(self, claim: Claim) -> str:
        now = self.clock()
        self._settles.run(lambda conn: outbox.release(conn, claim, now=now))
        return "released"


def _failed_attempt(claim: Claim, exc: BaseException, phase: str, outlook: str) -> FailedAttempt:
    """One line for an expected failure (the OA's, or the voucher's own); a traceback for a bug."""
    where = f"delivery {claim.delivery_id} ({claim.idempotency_key}) failed in {phase}"
    rule = rule_for(exc)
    if isinstance(exc, OaError):
        return FailedAttempt(rule, f"{where}: {exc.log_line()} ({outlook})")
    if isinstance(exc, AdapterError):
        return FailedAttempt(rule, f"{where}: {type(exc).__name__}: {exc.message} ({outlook})")
    return FailedAttempt(rule, f"{where}: {type(exc).__name__}: {exc} ({outlook})", exc)
