"""Users of the gateway and their authentication state.

Password hash, roles and organisation scope (hashing is the service's job); the
encrypted secret PasswordDigest needs; nonces seen (replay protection); failed
attempts and lockouts per user and per source address.
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


@dataclass(frozen=True)
class Lockout:
    subject_kind: str  # "user" | "source"
    subject: str
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
    """Recent failures and live locks of one attempt's user name and source address."""

    user_failures: int
    source_failures: int
    user_lock: Lockout | None = None
    source_lock: Lockout | None = None


def standing(
    conn: Connection, username: str, source: str, *, since: dt.datetime, now: dt.datetime
) -> Standing:
    """What ``count_failures`` and ``active_lockout`` tell of both, in one prepared statement
    (every authenticated request asks); a lock's row is read only when there is one."""
    user, src = username[:SUBJECT_LENGTH], source[:SUBJECT_LENGTH]
    row = conn.execute(_standing_query(), {"user": user, "source": src, "since": since, "now": now}).one()
    user_failures, source_failures, user_locked, source_locked = row
    return Standing(
        user_failures,
        source_failures,
        active_lockout(conn, "user", user, now) if user_locked else None,
        active_lockout(conn, "source", src, now) if source_locked else None,
    )


@functools.cache
def _standing_query():
    # Built once: composing this statement costs more than running it (~0.4 ms of Python).
    def failures(kind: str, param: str):
        return (
            select(func.count())
            .select_from(auth_failures)
            .where(auth_failures.c.subject_kind == kind, auth_failures.c.subject == bindparam(param),
                   auth_failures.c.failed_at >= bindparam("since"))
            .scalar_subquery()
        )

    def locked(kind: str, param: str):
        return (
            select(func.count())
            .select_from(auth_lockouts)
            .where(auth_lockouts.c.subject_kind == kind, auth_lockouts.c.subject == bindparam(param),
                   auth_lockouts.c.locked_until > bindparam("now"))
            .scalar_subquery()
        )

    return select(failures("user", "user"), failures("source", "source"), locked("user", "user"),
                  locked("source", "source"))


def active_lockout(conn: Connection, kind: str, subject: str, now: dt.datetime) -> Lockout | None:
    row = conn.execute(
        select(auth_lockouts).where(
            auth_lockouts.c.subject_kind == kind,
            auth_lockouts.c.subject == subject[:SUBJECT_LENGTH],
            auth_lockouts.c.locked_until > now,
        )
    ).first()
    return Lockout(row.subject_kind, row.subject, row.failures, row.locked_at, row.locked_until) if row else None


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


def release_lockout(conn: Connection, kind: str, subject: str) -> bool:
    """Lift the subject's lock and forget its failures (``users unlock``, ``users enable``);
    True when there was a lock."""
    subject = subject[:SUBJECT_LENGTH]
    released = conn.execute(
        delete(auth_lockouts).where(auth_lockouts.c.subject_kind == kind, auth_lockouts.c.subject == subject)
    ).rowcount
    clear_failures(conn, kind, subject)
    return bool(released)


def list_lockouts(conn: Connection, now: dt.datetime) -> list[Lockout]:
    rows = conn.execute(
        select(auth_lockouts).where(auth_lockouts.c.locked_until > now).order_by(auth_lockouts.c.locked_at)
    )
    return [Lockout(r.subject_kind, r.subject, r.failures, r.locked_at, r.locked_until) for r in rows]


def _insert_for(conn: Connection):
    return postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
