"""Sync jobs (one manual, API or scheduled run) and the per-tick schedule locks."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from .sync_tables import schedule_locks, sync_jobs


@dataclass(frozen=True)
class JobRow:
    id: str
    kind: str
    org_code: str | None
    period_from: str | None
    period_to: str | None
    voucher_count: int
    queued: int
    state: str  # RUNNING, FINISHED
    started_at: dt.datetime
    finished_at: dt.datetime | None


def create_job(
    conn: sa.Connection,
    *,
    kind: str,
    now: dt.datetime,
    org_code: str | None = None,
    period_from: str | None = None,
    period_to: str | None = None,
) -> str:
    job_id = uuid.uuid4().hex
    conn.execute(
        sa.insert(sync_jobs).values(
            id=job_id,
            kind=kind,
            org_code=org_code,
            period_from=period_from,
            period_to=period_to,
            voucher_count=0,
            queued=0,
            state="RUNNING",
            started_at=now,
        )
    )
    return job_id


def set_job_counts(conn: sa.Connection, job_id: str, *, voucher_count: int, queued: int) -> None:
    conn.execute(
        sa.update(sync_jobs).where(sync_jobs.c.id == job_id).values(voucher_count=voucher_count, queued=queued)
    )


def add_queued(conn: sa.Connection, job_id: str, delta: int) -> None:
    """Deliveries joined (``delta`` > 0) or left (< 0) the job: its ``queued`` follows."""
    if delta:
        conn.execute(sa.update(sync_jobs).where(sync_jobs.c.id == job_id).values(queued=sync_jobs.c.queued + delta))


def finish_job(conn: sa.Connection, job_id: str, *, finished_at: dt.datetime) -> None:
    conn.execute(
        sa.update(sync_jobs)
        .where(sync_jobs.c.id == job_id, sync_jobs.c.state != "FINISHED")
        .values(state="FINISHED", finished_at=finished_at)
    )


def get_job(conn: sa.Connection, job_id: str | None) -> JobRow | None:
    """The job ``job_id``, or the latest job when ``job_id`` is None."""
    query = sa.select(sync_jobs)
    if job_id is None:
        query = query.order_by(sync_jobs.c.started_at.desc(), sync_jobs.c.id.desc()).limit(1)
    else:
        query = query.where(sync_jobs.c.id == job_id)
    row = conn.execute(query).first()
    return JobRow(**row._mapping) if row else None


def claim_tick(conn: sa.Connection, name: str, *, tick: dt.datetime, owner: str, now: dt.datetime) -> bool:
    """Win the run of schedule ``name`` at ``tick``; only one caller ever wins a given tick.

    A conditional update moves the row's tick forward; the first instance to do it
    runs the job, every other instance sees zero rows changed.
    """
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    conn.execute(insert(schedule_locks).values(name=name).on_conflict_do_nothing(index_elements=["name"]))
    won = conn.execute(
        sa.update(schedule_locks)
        .where(
            schedule_locks.c.name == name,
            sa.or_(schedule_locks.c.tick.is_(None), schedule_locks.c.tick < tick),
        )
        .values(tick=tick, owner=owner, claimed_at=now)
    ).rowcount
    return won == 1


def job_orgs(conn: sa.Connection, job_id: str) -> set[str]:
    """The organisations whose vouchers job ``job_id`` queued."""
    from .sync_tables import deliveries
    from .tables import vouchers

    query = (
        sa.select(vouchers.c.org_code)
        .distinct()
        .join(deliveries, deliveries.c.voucher_id == vouchers.c.voucher_id)
        .where(deliveries.c.job_id == job_id)
    )
    return {row.org_code for row in conn.execute(query)}


def recent_jobs(conn: sa.Connection, limit: int = 100) -> list[JobRow]:
    """The newest jobs first."""
    query = sa.select(sync_jobs).order_by(sync_jobs.c.started_at.desc(), sync_jobs.c.id.desc()).limit(limit)
    return [JobRow(**row._mapping) for row in conn.execute(query)]
