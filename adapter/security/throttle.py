"""Slow-down and lock-out of repeated FAILED authentications.

Failures are counted per user name (also for names that do not exist, so a lock
says nothing about which users do) and per source address (every failure from it,
whatever the name: counting only unknown names would tell a prober which names
exist), over ``failure_window_seconds``.  A failed attempt's answer waits a little
longer from ``slowdown_after`` failures of its name or address on; at
``lockout_after`` the name or the address is locked for ``lockout_seconds``.

The two locks differ in what they refuse.  A locked *user name* is refused at once,
right password or wrong, before the password is checked (answer and timing say
nothing about the password).  A locked *address* refuses only what fails: a correct
password of a user who is not locked still gets in at once, so one client behind an
address (an OA platform, a proxy) that keeps failing cannot lock everyone else behind
it out; its failures still count against their names.  A correct password is never
delayed.  Everything lives in the database, so all gateway instances share it; a
lock is written to the audit log in the transaction that takes it.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from typing import Callable

from ..errors import AuthenticationFailed
from ..settings import SecuritySettings
from ..store import users as user_repo

log = logging.getLogger(__name__)

USER, SOURCE = "user", "source"
MAX_DELAY_SECONDS = 4.0
_FIRST_DELAY_SECONDS = 0.5


class Throttle:
    def __init__(
        self,
        store,
        security: SecuritySettings,
        *,
        clock: Callable[[], dt.datetime],
        sleep: Callable[[float], None] = time.sleep,
        audit: Callable[..., None] | None = None,
    ) -> None:
        self._store = store
        self._security = security
        self._clock = clock
        self._sleep = sleep
        self._audit = audit

    def delay_for(self, failures: int) -> float:
        """0 below ``slowdown_after``; then doubling from half a second, at most a few seconds."""
        beyond = failures - self._security.slowdown_after
        if beyond < 0:
            return 0.0
        return min(MAX_DELAY_SECONDS, _FIRST_DELAY_SECONDS * 2 ** min(beyond, 16))

    def read(self, conn, username: str, source: str) -> user_repo.Standing:
        """The failures and locks of the user and the source, read in ``conn``'s transaction
        (the authenticator reads them with the user row, one transaction for both)."""
        now = self._clock()
        since = now - dt.timedelta(seconds=self._security.failure_window_seconds)
        return user_repo.standing(conn, username, source, since=since, now=now)

    def admit(self, found: user_repo.Standing) -> None:
        """Refuse a locked user name before its password is checked (``found``: ``read``'s)."""
        if found.user_lock is not None:
            raise _locked(found.user_lock)

    def failed(self, username: str, source: str, found: user_repo.Standing,
               error: AuthenticationFailed) -> AuthenticationFailed:
        """Count a failed attempt, lock what reached the limit, wait as its standing says;
        returns the error to answer with (the address's lock when it is locked)."""
        self._count(username, source, found, reason=error.message)
        delay = self.delay_for(max(found.user_failures, found.source_failures))
        if delay:  # after the transaction: no write lock is held while waiting
            self._sleep(delay)
        return error if found.source_lock is None else _locked(found.source_lock)

    def succeeded(self, username: str, found: user_repo.Standing) -> None:
        """A right password clears the user's failures (not the source's: one good
        account must not launder guesses at others)."""
        if found.user_failures:
            with self._store.transaction(immediate=True) as conn:
                user_repo.clear_failures(conn, USER, username)

    def _count(self, username: str, source: str, found: user_repo.Standing, *, reason: str) -> None:
        now = self._clock()
        window = dt.timedelta(seconds=self._security.failure_window_seconds)
        # A locked address does not count on (its lock is not prolonged by what it refuses).
        subjects = [(USER, username)] + ([(SOURCE, source)] if found.source_lock is None else [])
        taken = []
        with self._store.transaction(immediate=True) as conn:
            user_repo.prune_failures(conn, now - window)
            for kind, subject in subjects:
                user_repo.record_failure(conn, kind, subject, now)
                failures = user_repo.count_failures(conn, kind, subject, now - window)
                if failures < self._security.lockout_after:
                    continue
                lock = user_repo.Lockout(
                    kind, subject, failures, now, now + dt.timedelta(seconds=self._security.lockout_seconds)
                )
                if user_repo.take_lockout(conn, lock):
                    user_repo.clear_failures(conn, kind, subject)  # the count starts afresh after the lock
                    self._audit_lock(conn, lock, username, source, reason)
                    taken.append(lock)
        for lock in taken:
            log.warning(
                "%s %r locked until %s after %d failed authentications",
                lock.subject_kind, lock.subject, lock.locked_until.isoformat(), lock.failures,
            )

    def _audit_lock(self, conn, lock: user_repo.Lockout, username: str, source: str, reason: str) -> None:
        if self._audit is None:
            return
        self._audit(
            conn,
            actor=username,
            source=source,
            operation="AuthLockout",
            targets=(f"{lock.subject_kind}:{lock.subject}",),
            outcome="Locked",
            details={
                "subject_kind": lock.subject_kind,
                "failures": lock.failures,
                "locked_until": lock.locked_until.isoformat(),
                "last_failure": reason,
            },
            now=lock.locked_at,
        )


def _locked(lock: user_repo.Lockout) -> AuthenticationFailed:
    return AuthenticationFailed(_locked_message(lock), locked_until=lock.locked_until)


def _locked_message(lock: user_repo.Lockout) -> str:
    until = lock.locked_until.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    if lock.subject_kind == USER:
        return (f"too many failed authentications for user {lock.subject!r}: locked until {until}; wait, "
                f"or ask an administrator to run: archive-oa users unlock {lock.subject}")
    return (f"too many failed authentications for source address {lock.subject}: failed attempts from it "
            f"are refused until {until}; fix the client's credentials, wait, or ask an administrator to "
            f"run: archive-oa users unlock --address {lock.subject}")
