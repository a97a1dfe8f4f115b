"""Group commit: the settles of many deliveries in one write transaction.

SQLite has one writer lock.  When each delivery thread settled in its own
``BEGIN IMMEDIATE`` transaction, the threads queued on that lock and slept in SQLite's
busy handler far longer than anyone held it (B3: a third of the workers' time).  Here
a thread hands its settle to ``GroupCommit.run`` and either becomes the *leader* — it
commits every settle queued so far in one transaction — or finds that a leader took
its settle along.  While a leader commits, the next settles queue up: the batch is
whatever finished in the meantime, so one delivery alone waits for nobody.  There is
no thread of its own to start or stop: the leader is a caller.

A settle that raises (a bug, a constraint) rolls the batch back; the batch is then run
again one settle per transaction, so that one raises in its own caller and the others
commit.  (Savepoints would do the same, but cost two more statements per settle on the
path every delivery takes — and each statement is a GIL round trip for the leader.)
A failed commit raises in every caller of the batch.  Nothing is reported settled
before the commit: a crash before it leaves every claim of the batch IN_FLIGHT until
its lease ends, exactly like a crash between the OA call and a settle of its own — the
next claim asks the OA first.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any, Callable, Generic, TypeVar

T = TypeVar("T")

#: One settle: runs inside the batch's write transaction, on its connection.
Settle = Callable[[Any], T]


class _Queued(Generic[T]):
    __slots__ = ("settle", "done", "result", "error")

    def __init__(self, settle: Settle) -> None:
        self.settle = settle
        self.done = False
        self.result: T | None = None
        self.error: BaseException | None = None


class GroupCommit:
    """Runs settles from many threads, all queued ones in one ``store.transaction(immediate=True)``."""

    def __init__(self, store) -> None:
        self.store = store
        self._queued: list[_Queued] = []
        self._queue_lock = threading.Lock()
        self._commit_lock = threading.Lock()  # held by the leader while it commits
        self.batches = 0  # transactions committed or tried (for tests and the bench)
        self.settles = 0  # settles they carried

    def run(self, settle: Settle[T]) -> T:
        """Run ``settle(conn)`` in a write transaction shared with concurrent callers; its result.

        Returns once that transaction has committed; raises what ``settle`` raised, or
        what the commit raised (then nothing of the batch was written).
        """
        mine = _Queued(settle)
        with self._queue_lock:
            self._queued.append(mine)
        with self._commit_lock:
            if not mine.done:  # no leader took it along: lead, with everything queued meanwhile
                with self._queue_lock:
                    batch, self._queued = self._queued, []
                self._commit(batch)
        if mine.error is not None:
            raise mine.error
        return mine.result  # type: ignore[return-value]

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold off the batches while the caller writes in a transaction of its own (the claims).

        The process's writers then take turns at this lock instead of meeting at SQLite's,
        whose busy handler sleeps whole milliseconds before it looks again; settles that
        arrive meanwhile queue up and go in the next batch.
        """
        with self._commit_lock:
            yield

    def _commit(self, batch: list[_Queued]) -> None:
        try:
            results = self._transaction(batch)
        except _SettleFailed as failed:
            if len(batch) > 1:
                for queued in batch:  # rolled back: again one by one, so only that settle fails
                    self._commit([queued])
                return
            batch[0].error, batch[0].done = failed.error, True
            return
        except BaseException as exc:  # noqa: BLE001 — begin or commit failed: for every caller
            for queued in batch:
                queued.error, queued.done = exc, True
            if not isinstance(exc, Exception):
                raise
            return
        for queued, result in zip(batch, results):
            queued.result, queued.error, queued.done = result, None, True

    def _transaction(self, batch: list[_Queued]) -> list[Any]:
        self.batches += 1
        self.settles += len(batch)
        with self.store.transaction(immediate=True) as conn:
            results = []
            for queued in batch:
                try:
                    results.append(queued.settle(conn))
                except Exception as exc:
                    raise _SettleFailed(exc) from exc
            return results


class _SettleFailed(Exception):
    """A settle raised ``error`` (not the transaction around it)."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error
