"""Slow-down and lock-out of repeated FAILED authentications.

Failures are counted over ``failure_window_seconds`` for three subjects:

* the user name from its source address (a *pair*), locked at ``lockout_after``: a client
  that keeps failing with one name locks that name from its own address only;
* the user name from any address, locked at the higher ``user_lockout_after``: guessing
  spread over many addresses;
* the source address, every failure from it whatever the name (counting only unknown
  names would tell a prober which names exist), locked at ``lockout_after``.

Names that do not exist count like names that do, so a lock says nothing about which
users exist.  A failed attempt's answer waits a little longer from ``slowdown_after``
failures of its name, pair or address on.

A locked name (everywhere, or from this address) is refused at once, right password or
wrong, before the password is checked.  A locked *address* refuses only what fails: a
correct password of a user who is not locked still gets in at once, so one client behind
an address (an OA platform, a proxy) that keeps failing cannot lock everyone else behind
it out.  What fails from a locked address is answered ``MAX_DELAY_SECONDS`` after it
arrived, moves the address's lock on to ``lockout_seconds`` from then, and counts against
its name and pair as anywhere else; a name that cannot log in is refused there without
hashing a password, which an answer as late as any other cannot tell.  A correct password
is never delayed.  Everything lives in the database, so all gateway instances share it; a
lock is written to the audit log in the transaction that takes it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import time
from typing import Callable

from ..errors import AuthenticationFailed
from ..settings import SecuritySettings
from ..store import users as user_repo
from ..store.users import PAIR, SOURCE, USER

log = logging.getLogger(__name__)

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
        """The failures and locks of the name, the name from the source, and the source, read in
        ``conn``'s transaction (the authenticator reads them with the user row, one transaction for both)."""
        now = self._clock()
        since = now - dt.timedelta(seconds=self._security.failure_window_seconds)
        return user_repo.standing(conn, username, source, since=since, now=now)

    def admit(self, found: user_repo.Standing) -> None:
        """Refuse a locked user name, everywhere or from this address, before its password is
        checked (``found``: ``read``'s)."""
        for lock in (found.user_lock, found.pair_lock):
            if lock is not None:
                raise _locked(lock)

    def failed(self, username: str, source: str, found: user_repo.Standing,
               error: AuthenticationFailed, *, elapsed: float = 0.0) -> AuthenticationFailed:
        """Count a failed attempt, lock what reached its limit, wait as its standing says;
        returns the error to answer with (the address's lock when it is locked).
        ``elapsed``: seconds since the attempt arrived (a locked address's answers all come
        ``MAX_DELAY_SECONDS`` after arrival, with a password hashed or not)."""
        source_lock = self._count(username, source, found, reason=error.message)
        if source_lock is not None:
            delay = min(MAX_DELAY_SECONDS, max(0.0, MAX_DELAY_SECONDS - elapsed))  # (a clock set back)
        else:
            delay = self.delay_for(max(found.user_failures, found.pair_failures, found.source_failures))
        if delay:  # after the transaction: no write lock is held while waiting
            self._sleep(delay)
        return error if source_lock is None else _locked(source_lock)

    def succeeded(self, username: str, source: str, found: user_repo.Standing) -> None:
        """A right password clears the failures of its name and of its name from this address
        (not the address's: one good account must not launder guesses at others).  With none
        to clear, a correct login costs the one read transaction alone."""
        cleared = [(kind, subject) for kind, subject, failures in (
            (USER, username, found.user_failures),
            (PAIR, user_repo.pair_subject(username, source), found.pair_failures),
        ) if failures]
        if cleared:
            with self._store.transaction(immediate=True) as conn:
                for kind, subject in cleared:
                    user_repo.clear_failures(conn, kind, subject)

    def _count(self, username: str, source: str, found: user_repo.Standing, *,
               reason: str) -> user_repo.Lockout | None:
        """Record the failure of the name, the pair and the address; returns the address's
        lock as it stands now (moved on when it was locked), or None."""
        now = self._clock()
        security = self._security
        window = dt.timedelta(seconds=security.failure_window_seconds)
        lock_for = dt.timedelta(seconds=security.lockout_seconds)
        limits = {USER: security.user_lockout_after, PAIR: security.lockout_after, SOURCE: security.lockout_after}
        subjects = ((USER, username), (PAIR, user_repo.pair_subject(username, source)), (SOURCE, source))
        source_lock, taken = found.source_lock, []
        with self._store.transaction(immediate=True) as conn:
            user_repo.prune_failures(conn, now - window)
            for kind, subject in subjects:
                user_repo.record_failure(conn, kind, subject, now)
                if kind == SOURCE and source_lock is not None:
                    # Still failing: the address stays locked (and slowed) until it has kept quiet a while.
                    if user_repo.extend_lockout(conn, SOURCE, source, now=now, until=now + lock_for):
                        source_lock = dataclasses.replace(source_lock, locked_until=now + lock_for)
                    continue
                failures = user_repo.count_failures(conn, kind, subject, now - window)
                if failures < limits[kind]:
                    continue
                lock = user_repo.Lockout(kind, subject, failures, now, now + lock_for)
                if user_repo.take_lockout(conn, lock):
                    user_repo.clear_failures(conn, kind, subject)  # the count starts afresh after the lock
                    self._audit_lock(conn, lock, username, source, reason)
                    taken.append(lock)
        for lock in taken:
            log.warning("%s locked until %s after %d failed authentications",
                        describe(lock), lock.locked_until.isoformat(), lock.failures)
        return source_lock

    def _audit_lock(self, conn, lock: user_repo.Lockout, username: str, source: str, reason: str) -> None:
        if self._audit is None:
            return
        self._audit(
            conn,
            actor=username,
            source=source,
            operation="AuthLockout",
            targets=audit_targets(lock),
            outcome="Locked",
            details={
                "subject_kind": lock.subject_kind,
                "failures": lock.failures,
                "locked_until": lock.locked_until.isoformat(),
                "last_failure": reason,
            },
            now=lock.locked_at,
        )


def describe(lock: user_repo.Lockout) -> str:
    """What a lock holds, in words: "user 'alice'", "user 'alice' from 10.0.0.5", "source address 10.0.0.5"."""
    if lock.subject_kind == PAIR:
        username, source = user_repo.split_pair(lock.subject)
        return f"user {username!r} from {source}"
    return f"user {lock.subject!r}" if lock.subject_kind == USER else f"source address {lock.subject}"


def audit_targets(lock: user_repo.Lockout) -> tuple[str, ...]:
    """The audit record's targets: "user:NAME", "source:ADDRESS", both for a pair."""
    if lock.subject_kind == PAIR:
        username, source = user_repo.split_pair(lock.subject)
        return (f"{USER}:{username}", f"{SOURCE}:{source}")
    return (f"{lock.subject_kind}:{lock.subject}",)


def _locked(lock: user_repo.Lockout) -> AuthenticationFailed:
    return AuthenticationFailed(_locked_message(lock), locked_until=lock.locked_until)


def _locked_message(lock: user_repo.Lockout) -> str:
    until = lock.locked_until.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    if lock.subject_kind == SOURCE:
        return (f"too many failed authentications for source address {lock.subject}: failed attempts from it "
                f"are refused and slowed until {until}, each further one moves that on; fix the client's "
                f"credentials, wait, or ask an administrator to run: archive-oa users unlock --address "
                f"{lock.subject}")
    username, source = user_repo.split_pair(lock.subject) if lock.subject_kind == PAIR else (lock.subject, "")
    where = f" for attempts from source address {source}" if source else ""
    return (f"too many failed authentications for user {username!r}: locked until {until}{where}; wait, "
            f"or ask an administrator to run: archive-oa users unlock {username}")
