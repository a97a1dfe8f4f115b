"""Users of the gateway: password hash, roles and organisation scope (hashing is the service's job)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import Connection, insert, select, update

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
    row = conn.execute(select(users).where(users.c.username == username)).first()
    return _record(row) if row else None


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
