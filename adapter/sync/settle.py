"""Group commit: the settles of many deliveries in one write transaction.

SQLite has one writer lock.  When each delivery thread settled in its own
``BEGIN IMMEDIATE`` transaction, the threads queued on that lock and slept in SQLite's
busy handler far longer than anyone held it (B3: a third of the workers' time).  Here
a thread hands its settle to ``GroupCommit.run`` and either becomes the *leader* — it
commits every settle queued so far in one transaction — or finds that a leader took
its settle along.  While a leader commits, the next settles queue up: the batch is
whatever finished in the meantime, so one delivery alone waits for nobody.  There is
no thread of its own to start or stop: the leader is a caller.

Each settle runs in its own savepoint, so one that fails (a bug, a constraint) is
rolled back alone and raises in its own caller; a failed commit raises in every caller
of the batch.  Nothing is reported settled before the commit: a crash before it leaves
every claim of the batch IN_FLIGHT until its lease ends, exactly like a crash between
the OA call and a settle of its own — the next claim asks the OA first.
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
        outcomes: list[tuple[Any, BaseException | None]] = []
        try:
            with self.store.transaction(immediate=True) as conn:
                if len(batch) == 1:  # alone: the transaction itself is the savepoint
                    outcomes.append((batch[0].settle(conn), None))
                else:
                    for queued in batch:
                        outcomes.append(_in_savepoint(conn, queued.settle))
        except BaseException as exc:  # noqa: BLE001 — handed to every caller of the batch
            for queued in batch:
                queued.error = exc
                queued.done = True
            if not isinstance(exc, Exception):
                raise
            return
        finally:
            self.batches += 1
            self.settles += len(batch)
        for queued, (result, error) in zip(batch, outcomes):
            queued.result, queued.error, queued.done = result, error, True


def _in_savepoint(conn, settle: Settle) -> tuple[Any, BaseException | None]:
    savepoint = conn.begin_nested()
    try:
        result = settle(conn)
    except Exception as exc:
        savepoint.rollback()
        return None, exc
    savepoint.commit()
    return result, None
