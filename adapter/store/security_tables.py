"""Authentication state shared by every gateway instance (migration 0004)."""

from __future__ import annotations

from sqlalchemy import Column, ForeignKey, Index, Integer, String, Table, Text

from .metadata import metadata
from .tables import users
from .types import UtcDateTime

# The password Fernet-encrypted under the key named by ``key_id`` (PasswordDigest needs the secret).
user_secrets = Table(
    "user_secrets",
    metadata,
    Column("username", String(100), ForeignKey(users.c.username), primary_key=True),
    Column("secret", Text, nullable=False),
    Column("key_id", String(16), nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
)

# Nonces seen within the freshness window; the primary key turns "seen before?" into insert-or-fail.
ws_nonces = Table(
    "ws_nonces",
    metadata,
    Column("nonce_hash", String(64), primary_key=True),  # SHA-256 hex of the decoded nonce
    Column("username", String(100), nullable=False),
    Column("seen_at", UtcDateTime, nullable=False),
    Column("expires_at", UtcDateTime, nullable=False, index=True),
)

# One row per failed authentication, for the user and for the source address (subject_kind).
auth_failures = Table(
    "auth_failures",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("subject_kind", String(8), nullable=False),  # "user" | "source"
    Column("subject", String(200), nullable=False),
    Column("failed_at", UtcDateTime, nullable=False, index=True),
)
Index(
    "ix_auth_failures_subject_kind_subject_failed_at",
    auth_failures.c.subject_kind,
    auth_failures.c.subject,
    auth_failures.c.failed_at,
)

auth_lockouts = Table(
    "auth_lockouts",
    metadata,
    Column("subject_kind", String(8), primary_key=True),
    Column("subject", String(200), primary_key=True),
    Column("failures", Integer, nullable=False),
    Column("locked_at", UtcDateTime, nullable=False),
    Column("locked_until", UtcDateTime, nullable=False),
)
