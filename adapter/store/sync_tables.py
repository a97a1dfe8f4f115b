"""Tables of the sync engine: the delivery outbox, poll cursors, sync jobs,
applied workflow outcomes and the per-tick schedule locks.

Created by migration ``0002`` (``migrations/versions/0002_sync.py``); keep both in step.
"""

from __future__ import annotations

import sqlalchemy as sa

from .metadata import metadata
from .types import UtcDateTime


#: One row per (voucher version → OA request) delivery; the transactional outbox.
deliveries = sa.Table(
    "deliveries",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("voucher_id", sa.String(64), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    # voucher id + content hash; travels to the OA as externalKey
    sa.Column("idempotency_key", sa.String(200), nullable=False, unique=True),
    sa.Column("state", sa.String(16), nullable=False),  # DeliveryState
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("next_attempt_at", UtcDateTime, nullable=False),
    sa.Column("lease_owner", sa.String(120)),
    sa.Column("lease_until", UtcDateTime),
    sa.Column("oa_request_id", sa.String(64)),
    sa.Column("last_error", sa.String(500)),  # short, never credentials
    sa.Column("job_id", sa.String(36)),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    sa.Column("delivered_at", UtcDateTime),
    sa.Index(None, "state", "next_attempt_at"),
    sa.Index(None, "job_id"),
    sa.Index(None, "voucher_id"),
)

#: Named positions in remote queues (the OA completed-requests queue).
sync_cursors = sa.Table(
    "sync_cursors",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("value", sa.BigInteger, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
)

#: A manual, API or scheduled sync run; its counts are computed from its deliveries.
sync_jobs = sa.Table(
    "sync_jobs",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("kind", sa.String(16), nullable=False),  # manual, api, scheduled
    sa.Column("org_code", sa.String(64)),
    sa.Column("period_from", sa.String(7)),
    sa.Column("period_to", sa.String(7)),
    sa.Column("voucher_count", sa.Integer, nullable=False, default=0),  # vouchers selected
    sa.Column("queued", sa.Integer, nullable=False, default=0),  # deliveries enqueued
    sa.Column("state", sa.String(16), nullable=False),  # RUNNING, FINISHED
    sa.Column("started_at", UtcDateTime, nullable=False),
    sa.Column("finished_at", UtcDateTime),
    sa.Index(None, "started_at"),
)

#: Every workflow outcome applied (or seen), unique on (request, state, finishedAt):
#: a repeat by poll or callback finds its row and changes nothing.
workflow_results = sa.Table(
    "workflow_results",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    # "<request ref>|<state>|<finishedAt ISO UTC>", the idempotency key of an outcome
    sa.Column("outcome_key", sa.String(300), nullable=False, unique=True),
    sa.Column("oa_request_id", sa.String(64)),
    sa.Column("external_key", sa.String(200)),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("finished_at", UtcDateTime, nullable=False),
    sa.Column("via", sa.String(16), nullable=False),  # poll, callback
    sa.Column("voucher_id", sa.String(64)),
    sa.Column("accepted", sa.Boolean, nullable=False, default=True),
    sa.Column("applied", sa.Boolean, nullable=False, default=False),  # changed the voucher
    sa.Column("voucher_state", sa.String(16)),  # the voucher's state after this outcome
    sa.Column("received_at", UtcDateTime, nullable=False),
    sa.Index(None, "voucher_id"),
)

#: One row per scheduled job; a tick is run by whoever moves ``tick`` forward first.
schedule_locks = sa.Table(
    "schedule_locks",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("tick", UtcDateTime),
    sa.Column("owner", sa.String(120)),
    sa.Column("claimed_at", UtcDateTime),
)
