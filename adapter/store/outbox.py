"""The delivery outbox: enqueue in the caller's transaction, claim with a lease, settle.

Every settling update is conditional on the claim still being ours
(``state = IN_FLIGHT``, same ``lease_owner``, same ``attempts``): a worker whose
lease expired while it was talking to the OA changes nothing, and the worker that
re-claimed the row asks the OA before sending again.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Iterable, Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from ..domain.delivery import DeliveryState, check_transition
from .sync_tables import deliveries

S = DeliveryState
#: States a worker may claim once ``next_attempt_at`` has come.
WAITING = (S.PENDING.value, S.UNCERTAIN.value)
#: States that are not final: the delivery still needs work.
OPEN = (S.PENDING.value, S.UNCERTAIN.value, S.IN_FLIGHT.value)


@dataclass(frozen=True)
class Claim:
    """A delivery leased to one worker for one attempt."""

    delivery_id: int
    voucher_id: str
    version: int
    idempotency_key: str
    attempts: int  # attempts made including this one
    owner: str
    lease_until: dt.datetime
    prior_state: DeliveryState  # state before the claim (IN_FLIGHT: an expired lease)
    job_id: str | None = None

    @property
    def ask_first(self) -> bool:
        """The OA may already hold a request for this key: look it up before sending."""
        return self.prior_state in (S.UNCERTAIN, S.IN_FLIGHT)


@dataclass(frozen=True)
class Delivery:
    """A delivery row as stored."""

    id: int
    voucher_id: str
    version: int
    idempotency_key: str
    state: DeliveryState
    attempts: int
    next_attempt_at: dt.datetime
    lease_owner: str | None
    lease_until: dt.datetime | None
    oa_request_id: str | None
    last_error: str | None
    job_id: str | None
    created_at: dt.datetime
    updated_at: dt.datetime
    delivered_at: dt.datetime | None


def _delivery(row) -> Delivery:
    values = dict(row._mapping)
    values["state"] = S(values["state"])
    return Delivery(**values)


def _insert(conn: sa.Connection):
    name = conn.dialect.name
    if name == "postgresql":
        return postgresql.insert(deliveries)
    if name == "sqlite":
        return sqlite.insert(deliveries)
    raise NotImplementedError(f"database {name!r} is not supported: use SQLite or PostgreSQL")


_SECRET = re.compile(r"(?i)(password|passwd|secret|token|authorization)(\s*[=:]\s*)\S+")


def short_error(text: object, limit: int = 480) -> str:
    """One line, bounded, with anything that looks like a credential masked."""
    line = " ".join(str(text).split())
    line = _SECRET.sub(r"\1\2***", line)
    return line if len(line) <= limit else line[: limit - 1] + "…"


# --- enqueue -------------------------------------------------------------------------


@dataclass(frozen=True)
class NewDelivery:
    """One delivery to queue: which voucher version, under which key (and sync job).

    ``ask_first`` queues it UNCERTAIN: its first attempt asks the OA for the key before
    sending, for a voucher that may have been sent before (e.g. re-queued by reconciliation).
    """

    voucher_id: str
    version: int
    idempotency_key: str
    job_id: str | None = None
    ask_first: bool = False

    def row(self, now: dt.datetime) -> dict:
        return {
            "voucher_id": self.voucher_id,
            "version": self.version,
            "idempotency_key": self.idempotency_key,
            "state": (S.UNCERTAIN if self.ask_first else S.PENDING).value,
            "attempts": 0,
            "next_attempt_at": now,
            "job_id": self.job_id,
            "created_at": now,
            "updated_at": now,
        }


def enqueue(
    conn: sa.Connection,
    *,
    voucher_id: str,
    version: int,
    idempotency_key: str,
    now: dt.datetime,
    job_id: str | None = None,
    ask_first: bool = False,
) -> bool:
    """``enqueue_many`` of one delivery: False when the key is already queued."""
    item = NewDelivery(voucher_id, version, idempotency_key, job_id=job_id, ask_first=ask_first)
    return enqueue_many(conn, [item], now)[0]


def enqueue_many(conn: sa.Connection, items: Sequence[NewDelivery], now: dt.datetime) -> list[bool]:
    """Queue each delivery in the caller's transaction, due ``now``; per item, in order,
    False for a key already queued — before, by a concurrent transaction, or earlier in
    ``items`` (content A, B, then A again).

    One strategy, right under concurrency on both databases: insert, and let the unique
    key decide (``ON CONFLICT DO NOTHING``).  PostgreSQL makes a second enqueuer of a key
    wait for the first one's transaction and then skip the row (or insert it, had the
    first rolled back); SQLite's write lock serialises enqueuers.  So a voucher version
    gets one delivery, and no caller sees an ``IntegrityError`` for a key.  SQLAlchemy
    sends the rows as multi-row ``INSERT … RETURNING`` statements ("insertmanyvalues"),
    a few per batch of the importer, not one per delivery.
    """
    fresh: dict[str, int] = {}  # key → index of its first item
    for n, item in enumerate(items):
        fresh.setdefault(item.idempotency_key, n)
    inserted: set[str] = set()
    if fresh:
        stmt = (
            _insert(conn)
            .on_conflict_do_nothing(index_elements=["idempotency_key"])
            .returning(deliveries.c.idempotency_key)  # rowcount is not reliable here (psycopg: -1)
        )
        inserted.update(conn.execute(stmt, [items[n].row(now) for n in fresh.values()]).scalars())
        if inserted:
            new_work(conn)
    # the first item of an inserted key is the one that was queued
    return [fresh[item.idempotency_key] == n and item.idempotency_key in inserted for n, item in enumerate(items)]


#: PostgreSQL channel told of every change that makes a delivery due (``sync/wakeup.py``).
CHANNEL = "archive_oa_outbox"


def new_work(conn: sa.Connection) -> None:
    """Tell idle workers, once the caller's transaction commits, that a delivery is due.

    PostgreSQL: ``NOTIFY`` is transactional — sent at commit, dropped on rollback, and
    repeats within one transaction fold into one — so no worker wakes for work it cannot
    see yet.  SQLite has no notifications: its workers poll ``due`` instead.
    """
    if conn.dialect.name == "postgresql":
        conn.execute(sa.select(sa.func.pg_notify(CHANNEL, "")))


# --- claim ---------------------------------------------------------------------------


# The claim and settle statements are built once: constructing a SQLAlchemy expression
# costs more Python time than SQLite takes to run it, and these run for every delivery.
_TIME = deliveries.c.next_attempt_at.type


def _claim_query(*, of_job: bool):
    due = sa.or_(
        sa.and_(deliveries.c.state.in_(WAITING), deliveries.c.next_attempt_at <= sa.bindparam("now", type_=_TIME)),
        sa.and_(deliveries.c.state == S.IN_FLIGHT.value, deliveries.c.lease_until < sa.bindparam("now", type_=_TIME)),
    )
    query = sa.select(deliveries).where(due)
    if of_job:
        query = query.where(deliveries.c.job_id == sa.bindparam("job_id", type_=deliveries.c.job_id.type))
    query = query.order_by(deliveries.c.next_attempt_at, deliveries.c.id).limit(sa.bindparam("limit", type_=sa.Integer))
    # PostgreSQL: rows others hold are not due for us
    return query, query.with_for_update(skip_locked=True)


#: (any due delivery, one job's due deliveries) → (SQLite, PostgreSQL) query
_DUE = {of_job: _claim_query(of_job=of_job) for of_job in (False, True)}
_TAKE = (
    sa.update(deliveries)
    .where(
        deliveries.c.id == sa.bindparam("row_id"),
        deliveries.c.state == sa.bindparam("row_state"),
        deliveries.c.attempts == sa.bindparam("row_attempts"),
    )
    .values(
        state=S.IN_FLIGHT.value,
        attempts=sa.bindparam("new_attempts", type_=sa.Integer),
        lease_owner=sa.bindparam("owner", type_=deliveries.c.lease_owner.type),
        lease_until=sa.bindparam("new_lease_until", type_=_TIME),
        updated_at=sa.bindparam("now", type_=_TIME),
    )
)


def claim(store, owner: str, limit: int, lease_seconds: float, now: dt.datetime, *,
          job_id: str | None = None, due_by: dt.datetime | None = None) -> list[Claim]:
    """Lease up to ``limit`` due deliveries (of sync job ``job_id`` only, if given) to ``owner``
    and commit at once.  ``due_by`` (default ``now``): only what was due by then.

    Due: PENDING/UNCERTAIN whose ``next_attempt_at`` has come, and IN_FLIGHT rows whose
    lease expired (their holder may have sent: the claim asks the OA first).
    PostgreSQL skips rows other workers hold (``FOR UPDATE SKIP LOCKED``); SQLite
    serialises claimers with ``BEGIN IMMEDIATE``.
    """
    lease_until = now + dt.timedelta(seconds=lease_seconds)
    claims: list[Claim] = []
    with store.transaction(immediate=True) as conn:
        plain, skip_locked = _DUE[job_id is not None]
        query = skip_locked if conn.dialect.name == "postgresql" else plain
        params = {"now": now if due_by is None else min(now, due_by), "limit": limit}
        if job_id is not None:
            params["job_id"] = job_id
        for row in conn.execute(query, params).all():
            prior = S(row.state)
            if prior is S.IN_FLIGHT:  # an expired lease counts as an uncertain attempt
                check_transition(S.IN_FLIGHT, S.UNCERTAIN)
                check_transition(S.UNCERTAIN, S.IN_FLIGHT)
            else:
                check_transition(prior, S.IN_FLIGHT)
            won = conn.execute(_TAKE, {
                "row_id": row.id, "row_state": row.state, "row_attempts": row.attempts,
                "new_attempts": row.attempts + 1, "owner": owner, "new_lease_until": lease_until, "now": now,
            }).rowcount
            if won:
                claims.append(
                    Claim(
                        delivery_id=row.id,
                        voucher_id=row.voucher_id,
                        version=row.version,
                        idempotency_key=row.idempotency_key,
                        attempts=row.attempts + 1,
                        owner=owner,
                        lease_until=lease_until,
                        prior_state=prior,
                        job_id=row.job_id,
                    )
                )
    return claims


def due(conn: sa.Connection, now: dt.datetime) -> bool:
    """Whether some delivery is claimable at ``now``: the read an idle worker polls on SQLite
    (``sync/wakeup.py``), the claim's own condition without its write lock."""
    plain, _ = _DUE[False]
    return conn.execute(plain, {"now": now, "limit": 1}).first() is not None


#: The lease fence of every settle: the row is still IN_FLIGHT under this very claim
#: (``_claim_params`` fills it in).
_OURS = (
    deliveries.c.id == sa.bindparam("claim_id"),
    deliveries.c.state == S.IN_FLIGHT.value,
    deliveries.c.lease_owner == sa.bindparam("claim_owner"),
    deliveries.c.attempts == sa.bindparam("claim_attempts"),
)


def _claim_params(claim: Claim) -> dict:
    return {"claim_id": claim.delivery_id, "claim_owner": claim.owner, "claim_attempts": claim.attempts}


# --- settle --------------------------------------------------------------------------


def lock(conn: sa.Connection, delivery_id: int) -> None:
    """Hold the delivery row until commit (PostgreSQL; SQLite's write lock already serialises)."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.select(deliveries.c.id).where(deliveries.c.id == delivery_id).with_for_update())


_MARK_DELIVERED = (
    sa.update(deliveries)
    .where(*_OURS)
    .values(
        state=S.DELIVERED.value,
        oa_request_id=sa.bindparam("request_id", type_=deliveries.c.oa_request_id.type),
        lease_owner=None,
        lease_until=None,
        last_error=sa.bindparam("note", type_=deliveries.c.last_error.type),
        delivered_at=sa.bindparam("now", type_=_TIME),
        updated_at=sa.bindparam("now", type_=_TIME),
    )
)


def mark_delivered(conn: sa.Connection, claim: Claim, *, oa_request_id: str, now: dt.datetime, note: str | None = None) -> bool:
    """IN_FLIGHT → DELIVERED; False when the lease is no longer ours (nothing changed)."""
    check_transition(S.IN_FLIGHT, S.DELIVERED)
    result = conn.execute(_MARK_DELIVERED, {
        **_claim_params(claim), "request_id": str(oa_request_id), "note": short_error(note) if note else None,
        "now": now,
    })
    return result.rowcount == 1


def adopt(conn: sa.Connection, delivery: Delivery, *, oa_request_id: str, now: dt.datetime) -> bool:
    """A delivery nobody holds → DELIVERED with the request an OA outcome named.

    Conditional on the row being unchanged since ``delivery`` was read; an IN_FLIGHT
    delivery is left to its worker (it asks the OA and adopts the same request).
    """
    if delivery.state is S.IN_FLIGHT:
        return False
    check_transition(delivery.state, S.DELIVERED)
    result = conn.execute(
        sa.update(deliveries)
        .where(
            deliveries.c.id == delivery.id,
            deliveries.c.state == delivery.state.value,
            deliveries.c.attempts == delivery.attempts,
        )
        .values(
            state=S.DELIVERED.value,
            oa_request_id=str(oa_request_id),
            last_error=short_error(f"adopted from the OA's outcome for request {oa_request_id}"),
            delivered_at=now,
            updated_at=now,
        )
    )
    return result.rowcount == 1


def mark_failed(
    conn: sa.Connection,
    claim: Claim,
    *,
    state: DeliveryState,
    error: object,
    now: dt.datetime,
    next_attempt_at: dt.datetime | None = None,
) -> bool:
    """IN_FLIGHT → PENDING / UNCERTAIN (retry at ``next_attempt_at``) or DEAD."""
    check_transition(S.IN_FLIGHT, state)
    if state is not S.DEAD and next_attempt_at is None:
        raise ValueError(f"a retry to {state.value} needs next_attempt_at")
    values = dict(
        state=state.value,
        lease_owner=None,
        lease_until=None,
        last_error=short_error(error),
        updated_at=now,
    )
    if next_attempt_at is not None:
        values["next_attempt_at"] = next_attempt_at
    return conn.execute(sa.update(deliveries).where(*_OURS).values(**values), _claim_params(claim)).rowcount == 1


_IN_CHUNK = 500  # ids per IN (...) list: far below every driver's parameter limit


def move_to_job(conn: sa.Connection, delivery_ids: Sequence[int], job_id: str) -> int:
    """Open deliveries → sync job ``job_id`` (a new job takes over what is still waiting);
    their state, attempts and lease stay as they are.  Returns how many moved."""
    moved = 0
    for start in range(0, len(delivery_ids), _IN_CHUNK):
        chunk = list(delivery_ids[start : start + _IN_CHUNK])
        moved += conn.execute(
            sa.update(deliveries)
            .where(deliveries.c.id.in_(chunk), deliveries.c.state.in_(OPEN))
            .values(job_id=job_id)
        ).rowcount
    return moved


def release(conn: sa.Connection, claim: Claim, *, now: dt.datetime) -> bool:
    """Give back a claim that was never sent (shutdown): its prior state, attempt not counted."""
    back = S.UNCERTAIN if claim.ask_first else S.PENDING
    check_transition(S.IN_FLIGHT, back)
    result = conn.execute(
        sa.update(deliveries)
        .where(*_OURS)
        .values(state=back.value, attempts=claim.attempts - 1, lease_owner=None, lease_until=None,
                next_attempt_at=now, updated_at=now),
        _claim_params(claim),
    )
    if result.rowcount:
        new_work(conn)  # another instance may take it at once
    return result.rowcount == 1


def release_owner(conn: sa.Connection, owner: str, *, now: dt.datetime) -> int:
    """Every lease ``owner`` still holds → UNCERTAIN, due now (it may have sent)."""
    check_transition(S.IN_FLIGHT, S.UNCERTAIN)
    result = conn.execute(
        sa.update(deliveries)
        .where(deliveries.c.state == S.IN_FLIGHT.value, deliveries.c.lease_owner == owner)
        .values(state=S.UNCERTAIN.value, lease_owner=None, lease_until=None, next_attempt_at=now, updated_at=now)
    )
    if result.rowcount:
        new_work(conn)
    return result.rowcount


# --- read ----------------------------------------------------------------------------


def get(conn: sa.Connection, delivery_id: int) -> Delivery | None:
    row = conn.execute(sa.select(deliveries).where(deliveries.c.id == delivery_id)).first()
    return _delivery(row) if row else None


def find_by_key(conn: sa.Connection, idempotency_key: str) -> Delivery | None:
    row = conn.execute(sa.select(deliveries).where(deliveries.c.idempotency_key == idempotency_key)).first()
    return _delivery(row) if row else None


def for_vouchers(conn: sa.Connection, voucher_ids: Iterable[str]) -> list[Delivery]:
    ids = list(voucher_ids)
    if not ids:
        return []
    rows = conn.execute(
        sa.select(deliveries).where(deliveries.c.voucher_id.in_(ids)).order_by(deliveries.c.id)
    ).all()
    return [_delivery(row) for row in rows]


def list_deliveries(
    conn: sa.Connection,
    *,
    states: Sequence[DeliveryState] | None = None,
    job_id: str | None = None,
    ids: Sequence[int] | None = None,
    limit: int | None = 100,
) -> list[Delivery]:
    """Deliveries in id order; ``limit`` None for all of them."""
    query = sa.select(deliveries).order_by(deliveries.c.id).limit(limit)
    if ids is not None:
        query = query.where(deliveries.c.id.in_(list(ids)))
    if states is not None:
        query = query.where(deliveries.c.state.in_([s.value for s in states]))
    if job_id is not None:
        query = query.where(deliveries.c.job_id == job_id)
    return [_delivery(row) for row in conn.execute(query).all()]


def counts(conn: sa.Connection, *, job_id: str | None = None) -> dict[DeliveryState, int]:
    """Deliveries per state (every state present, zero when none)."""
    query = sa.select(deliveries.c.state, sa.func.count()).group_by(deliveries.c.state)
    if job_id is not None:
        query = query.where(deliveries.c.job_id == job_id)
    found = {S(state): n for state, n in conn.execute(query).all()}
    return {state: found.get(state, 0) for state in S}


def retrying(conn: sa.Connection, *, job_id: str | None = None) -> int:
    """Open deliveries that already failed at least once."""
    query = sa.select(sa.func.count()).where(deliveries.c.state.in_(OPEN), deliveries.c.attempts > 0)
    if job_id is not None:
        query = query.where(deliveries.c.job_id == job_id)
    return conn.execute(query).scalar_one()


def failed(conn: sa.Connection, *, job_id: str) -> list[Delivery]:
    """The job's deliveries whose last attempt failed (dead, or open after a failure), newest change first."""
    query = (
        sa.select(deliveries)
        .where(
            deliveries.c.job_id == job_id,
            deliveries.c.last_error.is_not(None),
            sa.or_(deliveries.c.state == S.DEAD.value,
                   sa.and_(deliveries.c.state.in_(OPEN), deliveries.c.attempts > 0)),
        )
        .order_by(deliveries.c.updated_at.desc(), deliveries.c.id.desc())
    )
    return [_delivery(row) for row in conn.execute(query).all()]


def last_change(conn: sa.Connection, *, job_id: str) -> dt.datetime | None:
    """When a delivery of the job last changed (its finish time once none is open)."""
    return conn.execute(
        sa.select(sa.func.max(deliveries.c.updated_at)).where(deliveries.c.job_id == job_id)
    ).scalar_one()


def next_due(conn: sa.Connection, *, job_id: str | None = None) -> dt.datetime | None:
    """When the earliest open delivery (of sync job ``job_id``, if given) becomes claimable
    (None: nothing open)."""
    of_job = () if job_id is None else (deliveries.c.job_id == job_id,)
    waiting = conn.execute(
        sa.select(sa.func.min(deliveries.c.next_attempt_at)).where(deliveries.c.state.in_(WAITING), *of_job)
    ).scalar_one()
    leased = conn.execute(
        sa.select(sa.func.min(deliveries.c.lease_until)).where(deliveries.c.state == S.IN_FLIGHT.value, *of_job)
    ).scalar_one()
    # func.min returns its argument's type, so both come back as aware UTC datetimes
    times = [t for t in (waiting, leased) if t is not None]
    return min(times) if times else None


# --- dead letters --------------------------------------------------------------------


def retry_dead(conn: sa.Connection, ids: Sequence[int] | None, *, now: dt.datetime) -> int:
    """DEAD → due again with a fresh attempt budget (all dead letters when ``ids`` is None).

    A delivery that was ever attempted goes to UNCERTAIN: the OA may hold its request.
    """
    query = sa.select(deliveries.c.id, deliveries.c.attempts).where(deliveries.c.state == S.DEAD.value)
    if ids is not None:
        query = query.where(deliveries.c.id.in_(list(ids)))
    changed = 0
    for row in conn.execute(query).all():
        target = S.UNCERTAIN if row.attempts > 0 else S.PENDING
        check_transition(S.DEAD, target)
        changed += conn.execute(
            sa.update(deliveries)
            .where(deliveries.c.id == row.id, deliveries.c.state == S.DEAD.value)
            .values(state=target.value, attempts=0, next_attempt_at=now, updated_at=now)
        ).rowcount
    if changed:
        new_work(conn)
    return changed


def discard_dead(conn: sa.Connection, ids: Sequence[int] | None) -> list[Delivery]:
    """Delete dead letters (all when ``ids`` is None); returns what was deleted."""
    query = sa.select(deliveries).where(deliveries.c.state == S.DEAD.value)
    if ids is not None:
        query = query.where(deliveries.c.id.in_(list(ids)))
    gone = [_delivery(row) for row in conn.execute(query).all()]
    if gone:
        conn.execute(
            sa.delete(deliveries).where(
                deliveries.c.id.in_([d.id for d in gone]), deliveries.c.state == S.DEAD.value
            )
        )
    return gone
