"""Tables of the local archive and of the users (migration 0001 creates exactly these).

Vouchers are versioned: every stored content is one ``vouchers`` row (surrogate key
``id``), ``is_latest`` marks the current one and a partial unique index guarantees
there is only one.  Queries read latest rows only, so the query indexes are partial
(``WHERE is_latest``): a million vouchers with history keep indexes the size of the
current archive.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Date,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
    true,
)

from ..domain.clock import utc_now
from .metadata import metadata
from .types import DecimalText, Money, UtcDateTime

vouchers = Table(
    "vouchers",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("voucher_id", String(64), nullable=False),
    Column("version", Integer, nullable=False),
    Column("is_latest", Boolean, nullable=False),
    Column("content_hash", String(64), nullable=False),
    Column("org_code", String(64), nullable=False),
    Column("org_name", String(200), nullable=False),
    Column("fonds_code", String(64), nullable=False),
    Column("fiscal_year", Integer, nullable=False),
    Column("period", String(7), nullable=False),  # YYYY-MM: sorts and compares as text
    Column("voucher_word", String(16), nullable=False),
    Column("voucher_no", Integer, nullable=False),
    Column("date", Date, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("total_amount", Money, nullable=False),
    Column("attachment_count", Integer, nullable=False),
    Column("preparer", String(100), nullable=False),
    Column("reviewer", String(100)),
    Column("bookkeeper", String(100)),
    Column("cashier", String(100)),
    Column("summary", Text),
    # workflow part (工作流): kept on the row, the trail in ``approvals``
    Column("state", String(16), nullable=False),
    Column("oa_request_id", String(64)),
    Column("decided_at", UtcDateTime),
    # archive part (归档信息)
    Column("archival_code", String(100)),
    Column("archive_category", String(32)),
    Column("retention", String(16)),
    Column("archived_at", UtcDateTime),
    Column("created_at", UtcDateTime, nullable=False),
    UniqueConstraint("voucher_id", "version"),
)


#: The partial-index condition; queries must repeat it literally (SQLite matches it textually).
LATEST = vouchers.c.is_latest == true()


# One latest row per voucher, enforced by the database.
Index("ux_vouchers_latest", vouchers.c.voucher_id, unique=True, sqlite_where=LATEST, postgresql_where=LATEST)
# QueryVouchers' order and its org/period filters.
Index(
    "ix_vouchers_latest_order",
    vouchers.c.org_code,
    vouchers.c.period,
    vouchers.c.voucher_word,
    vouchers.c.voucher_no,
    vouchers.c.voucher_id,  # the tie-breaker of the order: pages come straight off the index
    sqlite_where=LATEST,
    postgresql_where=LATEST,
)
# State filters: QueryVouchers(state=…) and the sync engine's select_for_sync.
Index(
    "ix_vouchers_latest_state",
    vouchers.c.state,
    vouchers.c.org_code,
    vouchers.c.period,
    sqlite_where=LATEST,
    postgresql_where=LATEST,
)
# Look-ups by number without an organisation (voucherNoFrom/To alone).
Index("ix_vouchers_latest_no", vouchers.c.voucher_no, sqlite_where=LATEST, postgresql_where=LATEST)
Index("ix_vouchers_oa_request_id", vouchers.c.oa_request_id)

entries = Table(
    "entries",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("voucher_row", Integer, ForeignKey("vouchers.id", ondelete="CASCADE"), nullable=False),
    Column("line_no", Integer, nullable=False),
    Column("summary", Text, nullable=False),
    Column("account_code", String(64), nullable=False),
    Column("account_name", String(200), nullable=False),
    Column("debit", Money, nullable=False),
    Column("credit", Money, nullable=False),
    Column("currency", String(3)),
    Column("exchange_rate", DecimalText),
    Column("original_amount", DecimalText),
    # 辅助核算 as a JSON list of {"type", "code", "name"}: read with the entry, never queried
    Column("auxiliary", Text),
)
Index("ix_entries_voucher_row", entries.c.voucher_row, entries.c.line_no)

attachments = Table(
    "attachments",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("voucher_row", Integer, ForeignKey("vouchers.id", ondelete="CASCADE"), nullable=False),
    Column("position", Integer, nullable=False),  # order inside the voucher
    Column("attachment_id", String(64), nullable=False),
    Column("file_name", String(255), nullable=False),
    Column("mime_type", String(100), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("invoice_number", String(64)),
)
Index("ix_attachments_voucher_row", attachments.c.voucher_row, attachments.c.position)
Index("ix_attachments_attachment_id", attachments.c.attachment_id)

approvals = Table(
    "approvals",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("voucher_row", Integer, ForeignKey("vouchers.id", ondelete="CASCADE"), nullable=False),
    Column("step", Integer, nullable=False),
    Column("approver", String(100), nullable=False),
    Column("action", String(32), nullable=False),
    Column("comment", Text),
    Column("time", UtcDateTime, nullable=False),
)
Index("ix_approvals_voucher_row", approvals.c.voucher_row, approvals.c.step)

# externalKey (idempotency key) ⇄ voucher version ⇄ OA request id.
request_map = Table(
    "request_map",
    metadata,
    Column("external_key", String(200), primary_key=True),
    Column("voucher_id", String(64), nullable=False),
    Column("version", Integer, nullable=False),
    Column("oa_request_id", String(64), nullable=False, unique=True),
    Column("created_at", UtcDateTime, nullable=False, default=utc_now),
)
Index("ix_request_map_voucher_id", request_map.c.voucher_id, request_map.c.version)

users = Table(
    "users",
    metadata,
    Column("username", String(100), primary_key=True),
    Column("password_hash", String(300), nullable=False),
    Column("roles", Text, nullable=False),  # space-separated role names
    Column("org_scope", Text),  # space-separated org codes; NULL = every organisation
    Column("disabled", Boolean, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
)
