"""Tables of business documents the OA hands over for archiving (ArchiveDocument).

报销单, 付款单, contracts, reports: unlike vouchers they have no entries, only a
title, an optional amount, free name/value fields and attached files (bytes in the
blob store, addressed by sha256).  ``(source_system, source_id)`` is unique: it is
what makes ArchiveDocument idempotent.
"""

from __future__ import annotations

from sqlalchemy import Column, ForeignKey, Integer, String, Table, Text, UniqueConstraint

from .metadata import metadata
from .types import Money, UtcDateTime

archived_documents = Table(
    "archived_documents",
    metadata,
    Column("archive_id", String(64), primary_key=True),
    Column("source_system", String(64), nullable=False),
    Column("source_id", String(128), nullable=False),
    Column("doc_type", String(32), nullable=False),
    Column("org_code", String(64), nullable=False, index=True),
    Column("period", String(7), nullable=False),
    Column("title", String(500), nullable=False),
    Column("amount", Money, nullable=True),
    Column("oa_request_id", String(64), nullable=True),
    Column("archival_code", String(128), nullable=False, unique=True),  # 档号
    Column("category", String(32), nullable=False),  # 会计凭证 / 财务会计报告 / 其他 …
    Column("retention", String(16), nullable=False),  # PERMANENT / Y30 / Y10 / Y5
    Column("archived_by", String(128), nullable=True),
    Column("archived_at", UtcDateTime, nullable=False),
    UniqueConstraint("source_system", "source_id"),
)

archived_document_fields = Table(
    "archived_document_fields",
    metadata,
    Column("archive_id", String(64), ForeignKey("archived_documents.archive_id"), primary_key=True),
    Column("position", Integer, primary_key=True),
    Column("name", String(200), nullable=False),
    Column("value", Text, nullable=True),
)

archived_document_files = Table(
    "archived_document_files",
    metadata,
    Column("attachment_id", String(80), primary_key=True),
    Column("archive_id", String(64), ForeignKey("archived_documents.archive_id"), nullable=False, index=True),
    Column("position", Integer, nullable=False),
    Column("file_name", String(255), nullable=False),
    Column("mime_type", String(127), nullable=False),
    Column("size", Integer, nullable=False),
    Column("sha256", String(64), nullable=False),
)

#: Last sequence number handed out per archival-code prefix (档号前缀), e.g. "ORG01-2024-PZ-Y30".
archival_sequences = Table(
    "archival_sequences",
    metadata,
    Column("prefix", String(100), primary_key=True),
    Column("last_value", Integer, nullable=False),
)
