"""Sync engine: delivery outbox, poll cursors, sync jobs, workflow results, schedule locks.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

# A frozen copy of the shapes in adapter/store/sync_tables.py as of this revision;
# later changes get their own revision instead of editing this one.
_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "deliveries",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("voucher_id", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("idempotency_key", sa.String(200), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", _TS, nullable=False),
        sa.Column("lease_owner", sa.String(120)),
        sa.Column("lease_until", _TS),
        sa.Column("oa_request_id", sa.String(64)),
        sa.Column("last_error", sa.String(500)),
        sa.Column("job_id", sa.String(36)),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.Column("delivered_at", _TS),
        sa.PrimaryKeyConstraint("id", name="pk_deliveries"),
        sa.UniqueConstraint("idempotency_key", name="uq_deliveries_idempotency_key"),
    )
    op.create_index("ix_deliveries_state_next_attempt_at", "deliveries", ["state", "next_attempt_at"])
    op.create_index("ix_deliveries_job_id", "deliveries", ["job_id"])
    op.create_index("ix_deliveries_voucher_id", "deliveries", ["voucher_id"])

    op.create_table(
        "sync_cursors",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("value", sa.BigInteger, nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_sync_cursors"),
    )

    op.create_table(
        "sync_jobs",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("org_code", sa.String(64)),
        sa.Column("period_from", sa.String(7)),
        sa.Column("period_to", sa.String(7)),
        sa.Column("voucher_count", sa.Integer, nullable=False),
        sa.Column("queued", sa.Integer, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("started_at", _TS, nullable=False),
        sa.Column("finished_at", _TS),
        sa.PrimaryKeyConstraint("id", name="pk_sync_jobs"),
    )
    op.create_index("ix_sync_jobs_started_at", "sync_jobs", ["started_at"])

    op.create_table(
        "workflow_results",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("outcome_key", sa.String(300), nullable=False),
        sa.Column("oa_request_id", sa.String(64)),
        sa.Column("external_key", sa.String(200)),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("finished_at", _TS, nullable=False),
        sa.Column("via", sa.String(16), nullable=False),
        sa.Column("voucher_id", sa.String(64)),
        sa.Column("accepted", sa.Boolean, nullable=False),
        sa.Column("applied", sa.Boolean, nullable=False),
        sa.Column("voucher_state", sa.String(16)),
        sa.Column("received_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_workflow_results"),
        sa.UniqueConstraint("outcome_key", name="uq_workflow_results_outcome_key"),
    )
    op.create_index("ix_workflow_results_voucher_id", "workflow_results", ["voucher_id"])

    op.create_table(
        "schedule_locks",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("tick", _TS),
        sa.Column("owner", sa.String(120)),
        sa.Column("claimed_at", _TS),
        sa.PrimaryKeyConstraint("name", name="pk_schedule_locks"),
    )


def downgrade() -> None:
    op.drop_table("schedule_locks")
    op.drop_index("ix_workflow_results_voucher_id", table_name="workflow_results")
    op.drop_table("workflow_results")
    op.drop_index("ix_sync_jobs_started_at", table_name="sync_jobs")
    op.drop_table("sync_jobs")
    op.drop_table("sync_cursors")
    op.drop_index("ix_deliveries_voucher_id", table_name="deliveries")
    op.drop_index("ix_deliveries_job_id", table_name="deliveries")
    op.drop_index("ix_deliveries_state_next_attempt_at", table_name="deliveries")
    op.drop_table("deliveries")
