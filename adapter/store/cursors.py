"""Named cursors into remote queues; moved by compare-and-set so two pollers never
both advance from the same position."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from .sync_tables import sync_cursors


def get_cursor(conn: sa.Connection, name: str, default: int = 0) -> int:
    value = conn.execute(sa.select(sync_cursors.c.value).where(sync_cursors.c.name == name)).scalar()
    return default if value is None else int(value)


def advance_cursor(
    conn: sa.Connection, name: str, *, expected: int, value: int, now: dt.datetime, default: int = 0
) -> bool:
    """Move ``name`` from ``expected`` to ``value`` in the caller's transaction.

    False (nothing written) when someone else moved it first: the caller rolls back.
    """
    exists = conn.execute(sa.select(sync_cursors.c.name).where(sync_cursors.c.name == name)).first()
    if exists is None:
        if expected != default:
            return False
        insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
        stmt = insert(sync_cursors).values(name=name, value=value, updated_at=now)
        stmt = stmt.on_conflict_do_nothing(index_elements=["name"]).returning(sync_cursors.c.name)
        return conn.execute(stmt).first() is not None  # INSERT rowcount is -1 on psycopg
    moved = conn.execute(
        sa.update(sync_cursors)
        .where(sync_cursors.c.name == name, sync_cursors.c.value == expected)
        .values(value=value, updated_at=now)
    ).rowcount
    return moved == 1
