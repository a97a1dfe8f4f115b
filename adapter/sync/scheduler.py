"""Run delivery and polling on their schedules in background threads.

Each job has its own thread, so a long delivery round never delays polling.  An
*exclusive* job runs once per tick across every instance sharing the database:
before running, an instance must move the job's ``schedule_locks`` row to that
tick with a conditional update, which only one instance can do.  Delivery is not
exclusive — every instance drains the outbox, the leased claims keep them apart —
but the scheduled enqueue (when real-time queueing is off) and polling are.
In real-time mode the delivery job also runs between its ticks, as soon as new work
or a retry coming due wakes it (``wakeup.py``); its ticks remain the fallback.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Protocol, Sequence

from ..domain.clock import utc_now
from ..errors import OaError
from ..settings import SyncSettings
from ..store import jobs as job_store
from .failures import rule_for
from .schedule import Schedule, parse_schedule
from .worker import DeliveryWorker, default_owner

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScheduledJob:
    name: str
    schedule: Schedule
    run: Callable[[dt.datetime], object]  # called with the tick it runs for
    exclusive: bool = True  # once per tick across instances
    #: Waits up to the given seconds for a reason to run before the tick (True: run now);
    #: None: the job runs on its ticks only.
    wake: Callable[[float], bool] | None = None


class Scheduler:
    def __init__(
        self,
        jobs: Sequence[ScheduledJob],
        store,
        *,
        owner: str | None = None,
        clock: Callable[[], dt.datetime] = utc_now,
        on_stop: Sequence[Callable[[], None]] = (),
    ) -> None:
        self.jobs = list(jobs)
        self.store = store
        self.owner = owner or default_owner("scheduler")
        self.clock = clock
        self._on_stop = list(on_stop)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.runs: dict[str, int] = {job.name: 0 for job in self.jobs}

    def start(self) -> None:
        for job in self.jobs:
            thread = threading.Thread(target=self._loop, args=(job,), name=f"schedule-{job.name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float | None = 30.0) -> None:
        """Stop ticking, tell running jobs to stop, wait for their threads."""
        self._stop.set()
        for callback in self._on_stop:
            callback()
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in self._threads:
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def run_tick(self, job: ScheduledJob, tick: dt.datetime) -> bool:
        """Run ``job`` for ``tick`` unless another instance already did; True when it ran."""
        if job.exclusive:
            try:
                with self.store.transaction(immediate=True) as conn:
                    won = job_store.claim_tick(conn, job.name, tick=tick, owner=self.owner, now=self.clock())
            except Exception:  # database locked past the busy timeout, or unreachable: skip this tick only
                log.exception("schedule %s: tick %s could not be claimed; the next tick tries again",
                              job.name, tick.isoformat())
                return False
            if not won:
                log.debug("schedule %s tick %s ran elsewhere", job.name, tick)
                return False
        try:
            job.run(tick)
        except OaError as exc:  # expected (the OA is down, slow or refusing): one line, the next tick tries again
            log.log(rule_for(exc).level, "scheduled job %s at tick %s: %s", job.name, tick.isoformat(), exc.log_line())
        except Exception:  # a bug: its traceback; one failed round must not end the schedule
            log.exception("scheduled job %s failed at tick %s", job.name, tick.isoformat())
        self.runs[job.name] = self.runs.get(job.name, 0) + 1
        return True

    def _loop(self, job: ScheduledJob) -> None:
        tick = job.schedule.next_after(self.clock())
        while not self._stop.is_set():
            wait = (tick - self.clock()).total_seconds()
            if wait > 0:
                if job.wake is None:
                    self._stop.wait(min(wait, 60.0))  # re-check the clock at least once a minute
                elif job.wake(min(wait, 60.0)) and not self._stop.is_set():
                    self.run_tick(job, tick)  # early, for the coming tick, which still runs: the fallback
                continue
            self.run_tick(job, tick)
            tick = job.schedule.next_after(max(self.clock(), tick))  # missed ticks are skipped, not queued


class ScheduledSync(Protocol):
    """What a scheduled-mode tick asks to queue its vouchers: ``services.sync.SyncService``.

    Handed in, not imported: the services drive the sync engine, never the other way round.
    """

    def trigger(self, *, kind: str) -> Any: ...  # a TriggerResult: job_id, queued


def sync_scheduler(
    worker: DeliveryWorker,
    poller,
    service: ScheduledSync,
    sync: SyncSettings,
    *,
    clock: Callable[[], dt.datetime] = utc_now,
) -> Scheduler:
    """The scheduler ``archive-oa serve`` and ``archive-oa worker`` run (through the Adapter,
    which owns ``worker``, ``poller`` and the sync ``service``).

    Stopping the scheduler stops the worker from claiming; the owner closes the worker.
    """
    store, owner = worker.store, worker.owner
    delivery_schedule = parse_schedule(sync.delivery_schedule)
    poll_schedule = parse_schedule(sync.poll_schedule)

    def deliver(tick: dt.datetime) -> None:
        if not sync.realtime:  # scheduled mode: this tick's enqueue happens once across instances
            with store.transaction(immediate=True) as conn:
                won = job_store.claim_tick(conn, "enqueue", tick=tick, owner=owner, now=clock())
            if won:
                result = service.trigger(kind="scheduled")
                log.info("scheduled sync job %s queued %d vouchers", result.job_id, result.queued)
        # drain until the next tick at most, waiting for retries that come due meanwhile
        until_next = (delivery_schedule.next_after(tick) - clock()).total_seconds()
        counts = worker.run_until_idle(time.monotonic() + max(1.0, min(until_next, 3600.0)))
        if counts.claimed:
            log.info("delivery round: %s", counts)

    def poll(tick: dt.datetime) -> None:
        counts = poller.run_once()
        if counts.fetched:
            log.info("poll round: %s", counts)

    return Scheduler(
        [
            ScheduledJob("delivery", delivery_schedule, deliver, exclusive=False,
                         wake=worker.wait_for_work if sync.realtime else None),
            ScheduledJob("poll", poll_schedule, poll, exclusive=True),
        ],
        store,
        owner=owner,
        clock=clock,
        on_stop=[worker.stop],
    )
