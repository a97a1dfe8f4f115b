"""Enqueue many deliveries at once: ``outbox.enqueue`` for a batch of imported vouchers.

The same rows and the same answers as calling ``outbox.enqueue`` once per delivery, in
order — PENDING, due ``now``, and False for a key already queued, also earlier in the same
batch (content A, B, then A again) — in two statements instead of one per delivery: a read
of the keys already queued and one ``executemany`` insert.  Per-row enqueue was a third of
the import's time (its statement and cache key were built anew for every voucher).

A concurrent enqueuer of the same key between the read and the insert makes the insert
fail on the unique key (``IntegrityError``): the caller's transaction rolls back and is
retried, and the retry reads that key as queued.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, bindparam, insert, select

from ..domain.delivery import DeliveryState
from .sync_tables import deliveries

_IN_CHUNK = 500  # keys per IN (...) list: far below every driver's parameter limit
_QUEUED_KEYS = select(deliveries.c.idempotency_key).where(
    deliveries.c.idempotency_key.in_(bindparam("keys", expanding=True))
)


@dataclass(frozen=True)
class NewDelivery:
    voucher_id: str
    version: int
    idempotency_key: str


def enqueue_many(conn: Connection, items: Sequence[NewDelivery], now: dt.datetime) -> list[bool]:
    """Queue each delivery in the caller's transaction; False for a key already queued."""
    keys = sorted({item.idempotency_key for item in items})
    taken: set[str] = set()
    for start in range(0, len(keys), _IN_CHUNK):
        taken.update(conn.execute(_QUEUED_KEYS, {"keys": keys[start : start + _IN_CHUNK]}).scalars())
    queued, rows = [], []
    for item in items:
        new = item.idempotency_key not in taken
        if new:
            taken.add(item.idempotency_key)
            rows.append({
                "voucher_id": item.voucher_id,
                "version": item.version,
                "idempotency_key": item.idempotency_key,
                "state": DeliveryState.PENDING.value,
                "attempts": 0,
                "next_attempt_at": now,
                "job_id": None,
                "created_at": now,
                "updated_at": now,
            })
        queued.append(new)
    if rows:
        conn.execute(insert(deliveries), rows)
    return queued
