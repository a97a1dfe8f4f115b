"""Repository of archived business documents (ArchiveDocument), SQLAlchemy Core.

Functions take an open ``Connection`` so the caller's transaction spans the whole
unit of work (files into the blob store first, then one insert of rows).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import Connection, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite

from ..domain.model import AttachmentKind, AttachmentMeta
from .document_tables import (
    archival_sequences,
    archived_document_fields,
    archived_document_files,
    archived_documents,
)


@dataclass(frozen=True)
class DocumentField:
    name: str
    value: str | None


@dataclass(frozen=True)
class DocumentFile:
    attachment_id: str
    file_name: str
    mime_type: str
    size: int
    sha256: str


@dataclass(frozen=True)
class ArchivedDocument:
    archive_id: str
    source_system: str
    source_id: str
    doc_type: str
    org_code: str
    period: str
    title: str
    amount: Decimal | None
    oa_request_id: str | None
    archival_code: str  # 档号
    category: str
    retention: str
    archived_at: dt.datetime
    archived_by: str | None = None
    fields: tuple[DocumentField, ...] = ()
    files: tuple[DocumentFile, ...] = ()


def insert_document(conn: Connection, doc: ArchivedDocument) -> None:
    """Insert the document with its fields and files.

    A second document with the same (source_system, source_id) violates the unique
    constraint: the caller turns that into the first document's result.
    """
    conn.execute(
        insert(archived_documents).values(
            archive_id=doc.archive_id,
            source_system=doc.source_system,
            source_id=doc.source_id,
            doc_type=doc.doc_type,
            org_code=doc.org_code,
            period=doc.period,
            title=doc.title,
            amount=doc.amount,
            oa_request_id=doc.oa_request_id,
            archival_code=doc.archival_code,
            category=doc.category,
            retention=doc.retention,
            archived_by=doc.archived_by,
            archived_at=doc.archived_at,
        )
    )
    if doc.fields:
        conn.execute(
            insert(archived_document_fields),
            [
                {"archive_id": doc.archive_id, "position": i, "name": f.name, "value": f.value}
                for i, f in enumerate(doc.fields, start=1)
            ],
        )
    if doc.files:
        conn.execute(
            insert(archived_document_files),
            [
                {
                    "attachment_id": f.attachment_id,
                    "archive_id": doc.archive_id,
                    "position": i,
                    "file_name": f.file_name,
                    "mime_type": f.mime_type,
                    "size": f.size,
                    "sha256": f.sha256,
                }
                for i, f in enumerate(doc.files, start=1)
            ],
        )


def find_by_source(conn: Connection, source_system: str, source_id: str) -> ArchivedDocument | None:
    row = conn.execute(
        select(archived_documents).where(
            archived_documents.c.source_system == source_system,
            archived_documents.c.source_id == source_id,
        )
    ).mappings().first()
    return _load(conn, row) if row else None


def load_document(conn: Connection, archive_id: str) -> ArchivedDocument | None:
    row = conn.execute(
        select(archived_documents).where(archived_documents.c.archive_id == archive_id)
    ).mappings().first()
    return _load(conn, row) if row else None


def find_file(conn: Connection, attachment_id: str) -> tuple[AttachmentMeta, str, str] | None:
    """(meta, archive_id, org_code) of a document's file, like ``vouchers.find_attachment``."""
    row = conn.execute(
        select(archived_document_files, archived_documents.c.org_code)
        .join(archived_documents, archived_documents.c.archive_id == archived_document_files.c.archive_id)
        .where(archived_document_files.c.attachment_id == attachment_id)
    ).mappings().first()
    if row is None:
        return None
    meta = AttachmentMeta(
        attachment_id=row["attachment_id"],
        file_name=row["file_name"],
        mime_type=row["mime_type"],
        size=row["size"],
        sha256=row["sha256"],
        kind=AttachmentKind.OTHER,
    )
    return meta, row["archive_id"], row["org_code"]


def next_sequence(conn: Connection, prefix: str) -> int:
    """The next number for an archival-code prefix, gap-free within committed work.

    The row of a new prefix is created with ON CONFLICT DO NOTHING (a concurrent first
    insert waits, then does nothing); the UPDATE then takes the row lock (PostgreSQL) or
    runs under the write lock (SQLite), so two transactions never get the same number.
    """
    upsert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    conn.execute(
        upsert(archival_sequences)
        .values(prefix=prefix, last_value=0)
        .on_conflict_do_nothing(index_elements=["prefix"])
    )
    return int(
        conn.execute(
            update(archival_sequences)
            .where(archival_sequences.c.prefix == prefix)
            .values(last_value=archival_sequences.c.last_value + 1)
            .returning(archival_sequences.c.last_value)
        ).scalar_one()
    )


def _load(conn: Connection, row) -> ArchivedDocument:
    archive_id = row["archive_id"]
    fields = conn.execute(
        select(archived_document_fields.c.name, archived_document_fields.c.value)
        .where(archived_document_fields.c.archive_id == archive_id)
        .order_by(archived_document_fields.c.position)
    ).all()
    files = conn.execute(
        select(archived_document_files)
        .where(archived_document_files.c.archive_id == archive_id)
        .order_by(archived_document_files.c.position)
    ).mappings().all()
    return ArchivedDocument(
        archive_id=archive_id,
        source_system=row["source_system"],
        source_id=row["source_id"],
        doc_type=row["doc_type"],
        org_code=row["org_code"],
        period=row["period"],
        title=row["title"],
        amount=row["amount"],
        oa_request_id=row["oa_request_id"],
        archival_code=row["archival_code"],
        category=row["category"],
        retention=row["retention"],
        archived_at=row["archived_at"],
        archived_by=row["archived_by"],
        fields=tuple(DocumentField(name, value) for name, value in fields),
        files=tuple(
            DocumentFile(f["attachment_id"], f["file_name"], f["mime_type"], f["size"], f["sha256"])
            for f in files
        ),
    )

