"""The audit log: one append-only, hash-chained table (migration 0005 creates it).

``seq`` is the record's position in the chain, assigned by the writer (1, 2, 3 …
without gaps) rather than by the database, so a deleted record leaves a visible
hole.  ``hash`` is SHA-256 over the record's fields and ``prev_hash`` (the hash of
record ``seq - 1``); ``targets`` and ``details`` are kept as the exact JSON text that
was hashed.  Nothing ever updates or deletes a row; on PostgreSQL a trigger refuses it.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, Integer, String, Table, Text

from .metadata import metadata
from .types import UtcDateTime

audit_log = Table(
    "audit_log",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("at", UtcDateTime, nullable=False),
    Column("actor", String(128), nullable=False),  # user name, or "anonymous", or cli:<os user>
    Column("source", String(128), nullable=True),  # client address, or "cli"
    Column("operation", String(64), nullable=False),  # SOAP operation or administrative action
    Column("targets", Text, nullable=False),  # JSON array of "name=value" strings
    Column("outcome", String(32), nullable=False),  # "OK" or a fault code
    Column("duration_ms", Integer, nullable=True),
    Column("correlation_id", String(64), nullable=True),
    Column("details", Text, nullable=True),  # JSON object, no secrets
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    Index("ix_audit_log_actor_seq", "actor", "seq"),
    Index("ix_audit_log_operation_seq", "operation", "seq"),
    Index("ix_audit_log_at", "at"),
)
