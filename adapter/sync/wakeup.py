"""How an idle delivery worker hears of new work within a second instead of at the next tick.

New work is an import, a sync job (``archive-oa sync``, ``TriggerSync``), a dead letter
retried or a lease handed back — whichever process or instance made it.
PostgreSQL: each of those sends ``NOTIFY`` on ``outbox.CHANNEL`` when its transaction
commits (``outbox.new_work``); a listener thread, on a connection of its own, wakes the
worker.  SQLite has no notifications between processes: the waiting worker asks the
database every ``POLL_SECONDS`` whether a delivery is due (one indexed read that takes no
write lock).  A retry coming due needs no signal: the worker sleeps until the due time of
what it left.  The delivery schedule stays the fallback (a lost listener connection).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from typing import Callable, Protocol

from sqlalchemy.exc import SQLAlchemyError

from ..store import outbox

log = logging.getLogger(__name__)

#: How often an idle worker on SQLite asks whether a delivery is due.
POLL_SECONDS = 0.5
#: How long the PostgreSQL listener blocks before it looks whether it should stop.
LISTEN_SLICE_SECONDS = 0.5
#: Pause before the listener connects again after losing its connection.
RECONNECT_SECONDS = 5.0


class WorkSignal(Protocol):
    def wait(self, timeout: float) -> bool:
        """Block up to ``timeout`` seconds; True when work may be due (or the signal was closed)."""

    def close(self) -> None:
        """End every wait now and for good: the worker is stopping."""


def work_signal(store, clock: Callable[[], dt.datetime]) -> WorkSignal:
    """The signal for ``store``'s database: a listener on PostgreSQL, a due-poll on SQLite."""
    if store.dialect == "postgresql":
        return PostgresListener(store.engine)
    return DuePoll(store, clock)


class DuePoll:
    """SQLite: asks the outbox every ``interval`` seconds whether a delivery is due."""

    def __init__(self, store, clock: Callable[[], dt.datetime], interval: float = POLL_SECONDS) -> None:
        self.store = store
        self.clock = clock
        self.interval = interval
        self._closed = threading.Event()

    def wait(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not self._closed.is_set():
            if self._due():
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self._closed.wait(min(self.interval, left))
        return True

    def _due(self) -> bool:
        try:
            with self.store.transaction() as conn:
                return outbox.due(conn, self.clock())
        except SQLAlchemyError as exc:  # e.g. locked past the busy timeout: the next poll asks again
            log.debug("due-poll failed: %s", exc)
            return False

    def close(self) -> None:
        self._closed.set()


class PostgresListener:
    """PostgreSQL: ``LISTEN`` on a connection of its own, in a thread that wakes the worker."""

    def __init__(self, engine) -> None:
        # the engine's own connection arguments (host, user, password, sslmode …), minus its pool
        self._args, self._kwargs = engine.dialect.create_connect_args(engine.url)
        self._work = threading.Event()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._listen, name="outbox-listener", daemon=True)
        self._thread.start()

    def wait(self, timeout: float) -> bool:
        fired = self._work.wait(timeout)
        # Cleared after the wake-up: a notification that lands in between is only work the
        # drain that follows claims anyway, as it commits before it is sent.
        self._work.clear()
        return fired or self._closed.is_set()

    def close(self) -> None:
        self._closed.set()
        self._work.set()
        if self._thread is not threading.current_thread():
            # the connection must be gone when the caller drops the database (tests) or exits
            self._thread.join(LISTEN_SLICE_SECONDS + 2.0)

    def _listen(self) -> None:
        import psycopg

        failed = False
        while not self._closed.is_set():
            try:
                with psycopg.connect(*self._args, **self._kwargs, autocommit=True) as conn:
                    conn.execute(f"LISTEN {outbox.CHANNEL}")
                    if failed:
                        log.info("outbox listener connected again")
                        failed = False
                    self._work.set()  # something may have been queued while nobody listened
                    while not self._closed.is_set():
                        for _ in conn.notifies(timeout=LISTEN_SLICE_SECONDS):
                            self._work.set()
            except psycopg.Error as exc:
                # the schedule and the retry due times still drive delivery meanwhile
                log.log(logging.DEBUG if failed else logging.WARNING,
                        "outbox listener lost its connection (%s); delivery falls back to the schedule "
                        "until it reconnects", " ".join(str(exc).split()))
                failed = True
                self._closed.wait(RECONNECT_SECONDS)
