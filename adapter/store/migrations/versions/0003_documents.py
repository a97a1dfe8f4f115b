"""Archived business documents (ArchiveDocument) and archival-code sequences.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

# Frozen copies of archive_oa.store.types: Money is integer cents on SQLite.
_TS = sa.DateTime(timezone=True)
_MONEY = sa.Numeric(20, 2).with_variant(sa.BigInteger(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "archived_documents",
        sa.Column("archive_id", sa.String(64), nullable=False),
        sa.Column("source_system", sa.String(64), nullable=False),
        sa.Column("source_id", sa.String(128), nullable=False),
        sa.Column("doc_type", sa.String(32), nullable=False),
        sa.Column("org_code", sa.String(64), nullable=False),
        sa.Column("period", sa.String(7), nullable=False),
        sa.Column("title", sa.String(500), nullable=False),
        sa.Column("amount", _MONEY, nullable=True),
        sa.Column("oa_request_id", sa.String(64), nullable=True),
        sa.Column("archival_code", sa.String(128), nullable=False),
        sa.Column("category", sa.String(32), nullable=False),
        sa.Column("retention", sa.String(16), nullable=False),
        sa.Column("archived_by", sa.String(128), nullable=True),
        sa.Column("archived_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("archive_id", name=op.f("pk_archived_documents")),
        sa.UniqueConstraint("archival_code", name=op.f("uq_archived_documents_archival_code")),
        sa.UniqueConstraint(
            "source_system", "source_id", name=op.f("uq_archived_documents_source_system_source_id")
        ),
    )
    op.create_index(op.f("ix_archived_documents_org_code"), "archived_documents", ["org_code"])
    op.create_table(
        "archived_document_fields",
        sa.Column("archive_id", sa.String(64), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("value", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["archive_id"],
            ["archived_documents.archive_id"],
            name=op.f("fk_archived_document_fields_archive_id_archived_documents"),
        ),
        sa.PrimaryKeyConstraint("archive_id", "position", name=op.f("pk_archived_document_fields")),
    )
    op.create_table(
        "archived_document_files",
        sa.Column("attachment_id", sa.String(80), nullable=False),
        sa.Column("archive_id", sa.String(64), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("file_name", sa.String(255), nullable=False),
        sa.Column("mime_type", sa.String(127), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.ForeignKeyConstraint(
            ["archive_id"],
            ["archived_documents.archive_id"],
            name=op.f("fk_archived_document_files_archive_id_archived_documents"),
        ),
        sa.PrimaryKeyConstraint("attachment_id", name=op.f("pk_archived_document_files")),
    )
    op.create_index(
        op.f("ix_archived_document_files_archive_id"), "archived_document_files", ["archive_id"]
    )
    op.create_table(
        "archival_sequences",
        sa.Column("prefix", sa.String(100), nullable=False),
        sa.Column("last_value", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("prefix", name=op.f("pk_archival_sequences")),
    )


def downgrade() -> None:
    op.drop_table("archival_sequences")
    op.drop_index(op.f("ix_archived_document_files_archive_id"), table_name="archived_document_files")
    op.drop_table("archived_document_files")
    op.drop_table("archived_document_fields")
    op.drop_index(op.f("ix_archived_documents_org_code"), table_name="archived_documents")
    op.drop_table("archived_documents")
