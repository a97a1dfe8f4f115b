"""Archive core: vouchers (versioned), entries, attachments, approvals, request map, users.

Revision ID: 0001
Revises: —
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# A frozen copy of the shapes in adapter/store/tables.py as of this revision; later
# changes get their own revision.  Amounts are exact integer cents on SQLite (no
# decimal type there) and NUMERIC(20, 2) elsewhere, as archive_oa.store.types.Money.
_TS = sa.DateTime(timezone=True)
_MONEY = sa.Numeric(20, 2).with_variant(sa.BigInteger(), "sqlite")
_LATEST = {"sqlite_where": sa.text("is_latest = 1"), "postgresql_where": sa.text("is_latest = true")}


def upgrade() -> None:
    op.create_table(
        "vouchers",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("voucher_id", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("is_latest", sa.Boolean, nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("org_code", sa.String(64), nullable=False),
        sa.Column("org_name", sa.String(200), nullable=False),
        sa.Column("fonds_code", sa.String(64), nullable=False),
        sa.Column("fiscal_year", sa.Integer, nullable=False),
        sa.Column("period", sa.String(7), nullable=False),
        sa.Column("voucher_word", sa.String(16), nullable=False),
        sa.Column("voucher_no", sa.Integer, nullable=False),
        sa.Column("date", sa.Date, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("total_amount", _MONEY, nullable=False),
        sa.Column("attachment_count", sa.Integer, nullable=False),
        sa.Column("preparer", sa.String(100), nullable=False),
        sa.Column("reviewer", sa.String(100)),
        sa.Column("bookkeeper", sa.String(100)),
        sa.Column("cashier", sa.String(100)),
        sa.Column("summary", sa.Text),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("oa_request_id", sa.String(64)),
        sa.Column("decided_at", _TS),
        sa.Column("archival_code", sa.String(100)),
        sa.Column("archive_category", sa.String(32)),
        sa.Column("retention", sa.String(16)),
        sa.Column("archived_at", _TS),
        sa.Column("created_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_vouchers"),
        sa.UniqueConstraint("voucher_id", "version", name="uq_vouchers_voucher_id_version"),
    )
    op.create_index("ux_vouchers_latest", "vouchers", ["voucher_id"], unique=True, **_LATEST)
    op.create_index(
        "ix_vouchers_latest_order", "vouchers", ["org_code", "period", "voucher_word", "voucher_no", "voucher_id"], **_LATEST
    )
    op.create_index("ix_vouchers_latest_state", "vouchers", ["state", "org_code", "period"], **_LATEST)
    op.create_index("ix_vouchers_latest_no", "vouchers", ["voucher_no"], **_LATEST)
    op.create_index("ix_vouchers_oa_request_id", "vouchers", ["oa_request_id"])

    op.create_table(
        "entries",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("voucher_row", sa.Integer, nullable=False),
        sa.Column("line_no", sa.Integer, nullable=False),
        sa.Column("summary", sa.Text, nullable=False),
        sa.Column("account_code", sa.String(64), nullable=False),
        sa.Column("account_name", sa.String(200), nullable=False),
        sa.Column("debit", _MONEY, nullable=False),
        sa.Column("credit", _MONEY, nullable=False),
        sa.Column("currency", sa.String(3)),
        sa.Column("exchange_rate", sa.String(40)),
        sa.Column("original_amount", sa.String(40)),
        sa.Column("auxiliary", sa.Text),
        sa.PrimaryKeyConstraint("id", name="pk_entries"),
        sa.ForeignKeyConstraint(
            ["voucher_row"], ["vouchers.id"], name="fk_entries_voucher_row_vouchers", ondelete="CASCADE"
        ),
    )
    op.create_index("ix_entries_voucher_row", "entries", ["voucher_row", "line_no"])

    op.create_table(
        "attachments",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("voucher_row", sa.Integer, nullable=False),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("attachment_id", sa.String(64), nullable=False),
        sa.Column("file_name", sa.String(255), nullable=False),
        sa.Column("mime_type", sa.String(100), nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("invoice_number", sa.String(64)),
        sa.PrimaryKeyConstraint("id", name="pk_attachments"),
        sa.ForeignKeyConstraint(
            ["voucher_row"], ["vouchers.id"], name="fk_attachments_voucher_row_vouchers", ondelete="CASCADE"
        ),
    )
    op.create_index("ix_attachments_voucher_row", "attachments", ["voucher_row", "position"])
    op.create_index("ix_attachments_attachment_id", "attachments", ["attachment_id"])

    op.create_table(
        "approvals",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("voucher_row", sa.Integer, nullable=False),
        sa.Column("step", sa.Integer, nullable=False),
        sa.Column("approver", sa.String(100), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("comment", sa.Text),
        sa.Column("time", _TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_approvals"),
        sa.ForeignKeyConstraint(
            ["voucher_row"], ["vouchers.id"], name="fk_approvals_voucher_row_vouchers", ondelete="CASCADE"
        ),
    )
    op.create_index("ix_approvals_voucher_row", "approvals", ["voucher_row", "step"])

    op.create_table(
        "request_map",
        sa.Column("external_key", sa.String(200), nullable=False),
        sa.Column("voucher_id", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("oa_request_id", sa.String(64), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("external_key", name="pk_request_map"),
        sa.UniqueConstraint("oa_request_id", name="uq_request_map_oa_request_id"),
    )
    op.create_index("ix_request_map_voucher_id", "request_map", ["voucher_id", "version"])

    op.create_table(
        "users",
        sa.Column("username", sa.String(100), nullable=False),
        sa.Column("password_hash", sa.String(300), nullable=False),
        sa.Column("roles", sa.Text, nullable=False),
        sa.Column("org_scope", sa.Text),
        sa.Column("disabled", sa.Boolean, nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("username", name="pk_users"),
    )


def downgrade() -> None:
    for table in ("users", "request_map", "approvals", "attachments", "entries", "vouchers"):
        op.drop_table(table)
