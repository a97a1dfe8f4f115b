"""Group commit: the small writes of many threads in one write transaction.

SQLite has one writer lock.  When every thread wrote in its own ``BEGIN IMMEDIATE``
transaction, the threads queued on that lock and slept in SQLite's busy handler far
longer than anyone held it (B3: a third of the delivery workers' time; B1: most of a
read call's audit record).  Here a thread hands its write to ``GroupCommit.run`` and
either becomes the *leader* — it commits every write queued so far in one transaction —
or finds that a leader took its write along.  While a leader commits, the next writes
queue up: the batch is whatever finished in the meantime, so a write alone waits for
nobody.  There is no thread of its own to start or stop: the leader is a caller.

Each ``Store`` has one (``store.group_commit``): deliveries settle through it and the
gateway appends the audit records of calls that changed nothing through it, so the
process's writers take turns at one in-process lock.

A batch that fails (a write raises, or the commit does) is rolled back and run again
one write per transaction, so that only what fails on its own fails, in its own caller.
(Savepoints would do the same, but cost two more statements per write on the path every
call takes.)  Nothing is reported written before the commit: a crash before it loses the
whole batch, exactly like a crash before a transaction of its own.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
from collections.abc import Iterator
from typing import Any, Callable, Generic, TypeVar

T = TypeVar("T")

#: One write: runs inside the batch's write transaction, on its connection.
Write = Callable[[Any], T]


class _Queued(Generic[T]):
    __slots__ = ("write", "done", "result", "error")

    def __init__(self, write: Write) -> None:
        self.write = write
        self.done = False
        self.result: T | None = None
        self.error: BaseException | None = None


class GroupCommit:
    """Runs writes from many threads, all queued ones in one ``store.transaction(immediate=True)``."""

    def __init__(self, store) -> None:
        self.store = store
        self._queued: list[_Queued] = []
        self._queue_lock = threading.Lock()
        self._commit_lock = threading.Lock()  # held by the leader while it commits
        self.batches = 0  # transactions committed or tried (for tests and the bench)
        self.writes = 0  # writes they carried

    def run(self, write: Write[T]) -> T:
        """Run ``write(conn)`` in a write transaction shared with concurrent callers; its result.

        Returns once that transaction has committed; raises what ``write`` raised, or what
        the commit raised (then nothing of it was written).
        """
        mine = _Queued(write)
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
        whose busy handler sleeps whole milliseconds before it looks again; writes that
        arrive meanwhile queue up and go in the next batch.
        """
        with self._commit_lock:
            yield

    def _commit(self, batch: list[_Queued]) -> None:
        try:
            # A fresh context: the batch carries other callers' writes, so no write hook of
            # the leader's own (its gateway call's audit record) may run in its transaction.
            results = contextvars.Context().run(self._transaction, batch)
        except Exception as exc:  # noqa: BLE001 - handed to the callers
            if len(batch) > 1:
                for queued in batch:  # rolled back: again one by one, so only what fails alone fails
                    self._commit([queued])
                return
            batch[0].error, batch[0].done = exc, True
            return
        except BaseException as exc:  # KeyboardInterrupt, SystemExit: every caller hears, then it goes on
            for queued in batch:
                queued.error, queued.done = exc, True
            raise
        for queued, result in zip(batch, results):
            queued.result, queued.error, queued.done = result, None, True

    def _transaction(self, batch: list[_Queued]) -> list[Any]:
        self.batches += 1
        self.writes += len(batch)
        with self.store.transaction(immediate=True) as conn:
            return [queued.write(conn) for queued in batch]
