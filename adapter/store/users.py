"""Users of the gateway and their authentication state.

Password hash, roles and organisation scope (hashing is the service's job); the
encrypted secret PasswordDigest needs; nonces seen (replay protection); failed
attempts and lockouts per user name, per user name from one source address, and per
source address.
"""

from __future__ import annotations

import datetime as dt
import functools
from dataclasses import dataclass

from sqlalchemy import Connection, bindparam, delete, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite

from .security_tables import auth_failures, auth_lockouts, user_secrets, ws_nonces
from .tables import users


@dataclass(frozen=True)
class UserRecord:
    username: str
    password_hash: str
    roles: frozenset[str]
    org_scope: frozenset[str] | None  # None: every organisation
    disabled: bool
    created_at: dt.datetime


def get_user(conn: Connection, username: str) -> UserRecord | None:
    row = conn.execute(_user_query(), {"username": username}).first()
    return _record(row) if row else None


@functools.cache
def _user_query():
    # Built once: read on every authenticated request, and composing a statement costs
    # more Python time than SQLite takes to run it.
    return select(users).where(users.c.username == bindparam("username"))


def put_user(conn: Connection, record: UserRecord) -> None:
    """Insert the user, or replace everything but ``created_at`` when the name exists."""
    values = {
        "password_hash": record.password_hash,
        "roles": _join(record.roles),
        "org_scope": None if record.org_scope is None else _join(record.org_scope),
        "disabled": bool(record.disabled),
    }
    changed = conn.execute(update(users).where(users.c.username == record.username).values(**values)).rowcount
    if not changed:
        conn.execute(insert(users).values(username=record.username, created_at=record.created_at, **values))


def list_users(conn: Connection) -> list[UserRecord]:
    return [_record(row) for row in conn.execute(select(users).order_by(users.c.username))]


def _join(names: frozenset[str]) -> str:
    for name in names:
        if not name or any(ch.isspace() for ch in name):
            raise ValueError(f"{name!r} cannot be stored: role and organisation codes have no spaces")
    return " ".join(sorted(names))


def _record(row) -> UserRecord:
    return UserRecord(
        username=row.username,
        password_hash=row.password_hash,
        roles=frozenset(row.roles.split()),
        org_scope=None if row.org_scope is None else frozenset(row.org_scope.split()),
        disabled=bool(row.disabled),
        created_at=row.created_at,
    )


# --- encrypted secrets (PasswordDigest) -------------------------------------------------------


@dataclass(frozen=True)
class StoredSecret:
    username: str
    secret: str  # Fernet token
    key_id: str
    updated_at: dt.datetime


def get_secret(conn: Connection, username: str) -> StoredSecret | None:
    row = conn.execute(select(user_secrets).where(user_secrets.c.username == username)).first()
    return StoredSecret(row.username, row.secret, row.key_id, row.updated_at) if row else None


def put_secret(conn: Connection, username: str, secret: str, key_id: str, now: dt.datetime) -> None:
    values = {"secret": secret, "key_id": key_id, "updated_at": now}
    changed = conn.execute(
        update(user_secrets).where(user_secrets.c.username == username).values(**values)
    ).rowcount
    if not changed:
        conn.execute(insert(user_secrets).values(username=username, **values))


def list_secrets(conn: Connection) -> list[StoredSecret]:
    rows = conn.execute(select(user_secrets).order_by(user_secrets.c.username))
    return [StoredSecret(row.username, row.secret, row.key_id, row.updated_at) for row in rows]


def delete_secret(conn: Connection, username: str) -> None:
    conn.execute(delete(user_secrets).where(user_secrets.c.username == username))


# --- nonces (replay protection) ---------------------------------------------------------------


def remember_nonce(conn: Connection, nonce_hash: str, username: str, now: dt.datetime, expires_at: dt.datetime) -> bool:
    """True when the nonce is new; False when it is already remembered (a replay).

    The primary key decides, so two instances receiving the same token at once cannot
    both accept it.
    """
    stmt = (
        _insert_for(conn)(ws_nonces)
        .values(nonce_hash=nonce_hash, username=username[:100], seen_at=now, expires_at=expires_at)
        .on_conflict_do_nothing(index_elements=["nonce_hash"])
        .returning(ws_nonces.c.nonce_hash)
    )
    return conn.execute(stmt).first() is not None  # INSERT rowcount is -1 on psycopg


def forget_expired_nonces(conn: Connection, now: dt.datetime) -> int:
    return conn.execute(delete(ws_nonces).where(ws_nonces.c.expires_at < now)).rowcount


# --- failures and lockouts --------------------------------------------------------------------

SUBJECT_LENGTH = 200
USER, PAIR, SOURCE = "user", "pair", "source"  # subject kinds: a name, a name from an address, an address


def pair_subject(username: str, source: str) -> str:
    """The subject of a (user name, source address) pair: the address first (it holds no
    space, so ``split_pair`` reads the pair back), a name too long for the column cut short."""
    return f"{source} {username}"[:SUBJECT_LENGTH]


def split_pair(subject: str) -> tuple[str, str]:
    """``(username, source)`` of a ``pair_subject``."""
    source, _, username = subject.partition(" ")
    return username, source


@dataclass(frozen=True)
class Lockout:
    subject_kind: str  # USER | PAIR | SOURCE
    subject: str  # the name, the address, or for PAIR the ``pair_subject``
    failures: int
    locked_at: dt.datetime
    locked_until: dt.datetime


def record_failure(conn: Connection, kind: str, subject: str, now: dt.datetime) -> None:
    conn.execute(insert(auth_failures).values(subject_kind=kind, subject=subject[:SUBJECT_LENGTH], failed_at=now))


def count_failures(conn: Connection, kind: str, subject: str, since: dt.datetime) -> int:
    return conn.execute(
        select(func.count())
        .select_from(auth_failures)
        .where(
            auth_failures.c.subject_kind == kind,
            auth_failures.c.subject == subject[:SUBJECT_LENGTH],
            auth_failures.c.failed_at >= since,
        )
    ).scalar_one()


def clear_failures(conn: Connection, kind: str, subject: str) -> None:
    conn.execute(
        delete(auth_failures).where(
            auth_failures.c.subject_kind == kind, auth_failures.c.subject == subject[:SUBJECT_LENGTH]
        )
    )


def failure_counts(conn: Connection, since: dt.datetime) -> dict[tuple[str, str], int]:
    """Failures since ``since`` of every subject that has any: {(kind, subject): count}."""
    rows = conn.execute(
        select(auth_failures.c.subject_kind, auth_failures.c.subject, func.count())
        .where(auth_failures.c.failed_at >= since)
        .group_by(auth_failures.c.subject_kind, auth_failures.c.subject)
    )
    return {(kind, subject): count for kind, subject, count in rows}


def prune_failures(conn: Connection, before: dt.datetime) -> int:
    return conn.execute(delete(auth_failures).where(auth_failures.c.failed_at < before)).rowcount


@dataclass(frozen=True)
class Standing:
    """Recent failures and live locks of one attempt's user name (everywhere), the name
    from its source address, and the address."""

    user_failures: int
    source_failures: int
    user_lock: Lockout | None = None
    source_lock: Lockout | None = None
    pair_failures: int = 0
    pair_lock: Lockout | None = None


def standing(
    conn: Connection, username: str, source: str, *, since: dt.datetime, now: dt.datetime
) -> Standing:
    """What ``count_failures`` and ``active_lockout`` tell of the three, in one prepared
    statement (every authenticated request asks); a lock's row is read only when there is one."""
    user, pair, src = username[:SUBJECT_LENGTH], pair_subject(username, source), source[:SUBJECT_LENGTH]
    row = conn.execute(
        _standing_query(), {"user": user, "pair": pair, "source": src, "since": since, "now": now}
    ).one()
    user_failures, pair_failures, source_failures, user_locked, pair_locked, source_locked = row
    return Standing(
        user_failures,
        source_failures,
        active_lockout(conn, USER, user, now) if user_locked else None,
        active_lockout(conn, SOURCE, src, now) if source_locked else None,
        pair_failures,
        active_lockout(conn, PAIR, pair, now) if pair_locked else None,
    )


@functools.cache
def _standing_query():
    # Built once: composing this statement costs more than running it (~0.4 ms of Python).
    def failures(kind: str):
        return (
            select(func.count())
            .select_from(auth_failures)
            .where(auth_failures.c.subject_kind == kind, auth_failures.c.subject == bindparam(kind),
                   auth_failures.c.failed_at >= bindparam("since"))
            .scalar_subquery()
        )

    def locked(kind: str):
        return (
            select(func.count())
            .select_from(auth_lockouts)
            .where(auth_lockouts.c.subject_kind == kind, auth_lockouts.c.subject == bindparam(kind),
                   auth_lockouts.c.locked_until > bindparam("now"))
            .scalar_subquery()
        )

    kinds = (USER, PAIR, SOURCE)
    return select(*(failures(kind) for kind in kinds), *(locked(kind) for kind in kinds))


def active_lockout(conn: Connection, kind: str, subject: str, now: dt.datetime) -> Lockout | None:
    row = conn.execute(
        select(auth_lockouts).where(
            auth_lockouts.c.subject_kind == kind,
            auth_lockouts.c.subject == subject[:SUBJECT_LENGTH],
            auth_lockouts.c.locked_until > now,
        )
    ).first()
    return _lockout(row) if row else None


def take_lockout(conn: Connection, lock: Lockout) -> bool:
    """Lock the subject; False when a live lock already exists (someone else locked it first).

    An expired lock of the subject is removed first, so the key stays free for the next one.
    """
    subject = lock.subject[:SUBJECT_LENGTH]
    conn.execute(
        delete(auth_lockouts).where(
            auth_lockouts.c.subject_kind == lock.subject_kind,
            auth_lockouts.c.subject == subject,
            auth_lockouts.c.locked_until <= lock.locked_at,
        )
    )
    stmt = (
        _insert_for(conn)(auth_lockouts)
        .values(
            subject_kind=lock.subject_kind,
            subject=subject,
            failures=lock.failures,
            locked_at=lock.locked_at,
            locked_until=lock.locked_until,
        )
        .on_conflict_do_nothing(index_elements=["subject_kind", "subject"])
        .returning(auth_lockouts.c.subject)
    )
    return conn.execute(stmt).first() is not None


def extend_lockout(conn: Connection, kind: str, subject: str, *, now: dt.datetime, until: dt.datetime) -> bool:
    """Move a live lock's end to ``until`` (never earlier) and count one more failure on it;
    False when the subject has no live lock."""
    return bool(conn.execute(
        update(auth_lockouts)
        .where(auth_lockouts.c.subject_kind == kind, auth_lockouts.c.subject == subject[:SUBJECT_LENGTH],
               auth_lockouts.c.locked_until > now, auth_lockouts.c.locked_until < until)
        .values(locked_until=until, failures=auth_lockouts.c.failures + 1)
    ).rowcount)


def release(conn: Connection, kind: str, subject: str, now: dt.datetime) -> list[Lockout]:
    """Lift the locks of a user name (kind USER) or a source address (kind SOURCE) and of
    every pair of it, and forget their failures (``users unlock``, ``users enable``).
    Returns the live locks lifted, the subject's own first."""
    subjects = [(kind, subject[:SUBJECT_LENGTH])] + [(PAIR, pair) for pair in _pairs_of(conn, kind, subject)]
    lifted = []
    for each_kind, each in subjects:
        lock = active_lockout(conn, each_kind, each, now)
        if lock is not None:
            lifted.append(lock)
        conn.execute(delete(auth_lockouts).where(auth_lockouts.c.subject_kind == each_kind,
                                                 auth_lockouts.c.subject == each))
        clear_failures(conn, each_kind, each)
    return lifted


def _pairs_of(conn: Connection, kind: str, subject: str) -> list[str]:
    """The pair subjects, locked or failing, of a user name or a source address."""
    if kind == SOURCE:
        def candidate(column):  # the address leads the pair: its prefix decides
            return column.startswith(f"{subject} ", autoescape=True)

        def belongs(pair):
            return split_pair(pair)[1] == subject
    else:
        def candidate(column):  # then the exact test below (a name may hold spaces, may be cut short)
            return column.contains(f" {subject[:100]}", autoescape=True)

        def belongs(pair):
            return pair_subject(subject, split_pair(pair)[1]) == pair
    found = set()
    for table in (auth_lockouts, auth_failures):
        rows = conn.execute(
            select(table.c.subject).distinct().where(table.c.subject_kind == PAIR, candidate(table.c.subject))
        )
        found.update(pair for (pair,) in rows if belongs(pair))
    return sorted(found)


def list_lockouts(conn: Connection, now: dt.datetime) -> list[Lockout]:
    rows = conn.execute(
        select(auth_lockouts).where(auth_lockouts.c.locked_until > now).order_by(auth_lockouts.c.locked_at)
    )
    return [_lockout(row) for row in rows]


def _lockout(row) -> Lockout:
    return Lockout(row.subject_kind, row.subject, row.failures, row.locked_at, row.locked_until)


def _insert_for(conn: Connection):
    return postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
