"""Slow-down and lock-out after repeated authentication failures.

Failures are counted per user name (also for names that do not exist, so a lock
says nothing about which users do) and per source address, over
``failure_window_seconds``.  From ``slowdown_after`` failures on, every attempt of
that user or source waits a little longer before it is checked; at ``lockout_after``
the user or source is locked for ``lockout_seconds`` — every attempt is refused at
once, right or wrong, without counting.  Everything lives in the database, so all
gateway instances share it; the lock itself is written to the audit log in the same
transaction.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass
from typing import Callable

from ..errors import AuthenticationFailed
from ..settings import SecuritySettings
from ..store import users as user_repo

log = logging.getLogger(__name__)

USER, SOURCE = "user", "source"
MAX_DELAY_SECONDS = 4.0
_FIRST_DELAY_SECONDS = 0.5


@dataclass(frozen=True)
class Standing:
    """Recent failures of one attempt's user and source (read before checking it)."""

    user_failures: int
    source_failures: int
    delayed: bool = False  # the attempt was slowed down (what was read with it is that old)


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

    def admit(self, found: user_repo.Standing, username: str) -> Standing:
        """Refuse a locked user or source, wait when either has failed often lately, on
        what ``read`` found; returns whether the attempt waited as ``Standing.delayed``."""
        for lock in found.locks:
            raise AuthenticationFailed(_locked_message(lock, username), locked_until=lock.locked_until)
        delay = self.delay_for(max(found.user_failures, found.source_failures))
        if delay:
            self._sleep(delay)
        return Standing(found.user_failures, found.source_failures, delayed=bool(delay))

    def failed(self, username: str, source: str, *, reason: str = "") -> list[user_repo.Lockout]:
        """Count a failure of the user and the source; lock what reached the limit (returned)."""
        now = self._clock()
        window = dt.timedelta(seconds=self._security.failure_window_seconds)
        taken = []
        with self._store.transaction(immediate=True) as conn:
            user_repo.prune_failures(conn, now - window)
            for kind, subject in ((USER, username), (SOURCE, source)):
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
        return taken

    def succeeded(self, username: str, standing: Standing) -> None:
        """A right password clears the user's failures (not the source's: one good
        account must not launder guesses at others)."""
        if standing.user_failures:
            with self._store.transaction(immediate=True) as conn:
                user_repo.clear_failures(conn, USER, username)

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


def _locked_message(lock: user_repo.Lockout, username: str) -> str:
    until = lock.locked_until.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    if lock.subject_kind == USER:
        who = f"user {lock.subject!r}"
        remedy = f"wait, or ask an administrator to run: archive-oa users enable {username}"
    else:
        who = f"source address {lock.subject}"
        remedy = "wait, or ask an administrator to run: archive-oa users unlock --source " + lock.subject
    return f"too many failed authentications for {who}: locked until {until}; {remedy}"
