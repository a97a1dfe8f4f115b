"""Polling the OA's completed-requests queue.

A round: read the cursor → fetch a batch from the OA (no transaction open) →
apply every outcome and move the cursor in ONE transaction (compare-and-set on
the cursor, so two pollers never both apply a batch from the same position) →
acknowledge to the OA after the commit.  A crash before the commit leaves the
cursor where it was and the batch is fetched again; outcomes are idempotent, so
a batch seen twice changes nothing.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, fields
from typing import Callable

from ..domain.clock import utc_now
from ..domain.model import WorkflowOutcome
from ..domain.ports import CompletedItem, OaWorkflowPort
from ..errors import NotFound, OaError, ValidationFailed
from ..metrics import Metrics
from ..settings import SyncSettings
from ..store import cursors
from .failures import rule_for
from .outcomes import apply_outcome
from .repo import ArchiveRepo, default_repo

log = logging.getLogger(__name__)

CURSOR_NAME = "oa.completed"


@dataclass
class PollCounts:
    batches: int = 0
    fetched: int = 0
    applied: int = 0  # changed a voucher
    duplicates: int = 0  # seen before (by poll or callback): nothing changed
    stale: int = 0  # older than the voucher's recorded decision: not applied
    unknown: int = 0  # not one of the adapter's requests: skipped
    invalid: int = 0  # not a decision (e.g. still in progress): skipped
    cursor: int = 0  # the cursor after the round
    conflicts: int = 0  # another poller moved the cursor first: batch left to it

    def __iadd__(self, other: "PollCounts") -> "PollCounts":
        for f in fields(self):
            if f.name != "cursor":
                setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))
        self.cursor = other.cursor
        return self


class CursorMoved(Exception):
    """Another poller advanced the cursor between our read and our commit."""


class Poller:
    def __init__(
        self,
        store,
        oa: OaWorkflowPort,
        settings: SyncSettings,
        *,
        repo: ArchiveRepo | None = None,
        clock: Callable[[], dt.datetime] = utc_now,
        cursor_name: str = CURSOR_NAME,
        max_batches: int = 20,
        metrics: Metrics | None = None,
    ) -> None:
        self.store = store
        self.oa = oa
        self.settings = settings
        self.repo = repo or default_repo()
        self.clock = clock
        self.cursor_name = cursor_name
        self.max_batches = max_batches
        self.metrics = metrics or Metrics()  # the Adapter's; a poller of its own counts apart

    def run_once(self) -> PollCounts:
        """One poll round: batches until the queue is drained (at most ``max_batches``)."""
        total = PollCounts()
        for _ in range(self.max_batches):
            batch = self.poll_batch()
            total += batch
            if batch.fetched < self.settings.poll_batch_size or batch.conflicts:
                break
        return total

    def poll_batch(self) -> PollCounts:
        counts = self._poll_batch()
        self.metrics.polled(counts)
        return counts

    def _poll_batch(self) -> PollCounts:
        with self.store.transaction() as conn:
            start = cursors.get_cursor(conn, self.cursor_name)
        batch = self.oa.fetch_completed(start, self.settings.poll_batch_size)
        counts = PollCounts(batches=1, fetched=len(batch.items), cursor=start)
        if not batch.items and batch.next_cursor == start:
            return counts
        try:
            with self.store.transaction(immediate=True) as conn:
                for item in batch.items:
                    self._apply(conn, item, counts)
                moved = cursors.advance_cursor(
                    conn, self.cursor_name, expected=start, value=batch.next_cursor, now=self.clock()
                )
                if not moved:
                    raise CursorMoved()
        except CursorMoved:
            log.info("cursor %s moved by another poller; its batch is left to it", self.cursor_name)
            return PollCounts(batches=1, fetched=len(batch.items), cursor=start, conflicts=1)
        counts.cursor = batch.next_cursor
        try:
            self.oa.acknowledge(batch.next_cursor)
        # the cursor is ours already; the OA keeps the items a little longer
        except OaError as exc:
            log.log(rule_for(exc).level, "poll: acknowledging cursor %s failed: %s", batch.next_cursor, exc.log_line())
        except Exception:
            log.exception("poll: acknowledging cursor %s failed", batch.next_cursor)
        return counts

    def _apply(self, conn, item: CompletedItem, counts: PollCounts) -> None:
        outcome = WorkflowOutcome(
            state=item.status,
            finished_at=item.finished_at,
            approvals=tuple(item.logs),
            oa_request_id=str(item.request_id),
            external_key=item.external_key,
        )
        try:
            result = apply_outcome(conn, outcome, via="poll", now=self.clock(), repo=self.repo)
        except NotFound as exc:
            counts.unknown += 1
            log.info("poll: skipped request %s: %s", item.request_id, exc)
            return
        except ValidationFailed as exc:
            counts.invalid += 1
            log.warning("poll: skipped request %s: %s", item.request_id, exc)
            return
        if result.duplicate:
            counts.duplicates += 1
        elif result.applied:
            counts.applied += 1
        else:
            counts.stale += 1
