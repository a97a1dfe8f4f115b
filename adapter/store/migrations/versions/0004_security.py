"""Authentication state: encrypted digest secrets, seen nonces, failures and lockouts.

Revision ID: 0004
Revises: 0003

Everything here is shared by every gateway instance through the database: a nonce
replayed against another instance, or failures spread over several, are still caught.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# Frozen copy of archive_oa.store.types.UtcDateTime's DDL.
_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    # The password itself, Fernet-encrypted: PasswordDigest needs it (a hash cannot answer a digest).
    op.create_table(
        "user_secrets",
        sa.Column("username", sa.String(100), nullable=False),
        sa.Column("secret", sa.Text(), nullable=False),
        sa.Column("key_id", sa.String(16), nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.ForeignKeyConstraint(
            ["username"], ["users.username"], name=op.f("fk_user_secrets_username_users")
        ),
        sa.PrimaryKeyConstraint("username", name=op.f("pk_user_secrets")),
    )
    # A nonce is accepted once: the primary key makes the insert the check (insert-or-fail).
    op.create_table(
        "ws_nonces",
        sa.Column("nonce_hash", sa.String(64), nullable=False),
        sa.Column("username", sa.String(100), nullable=False),
        sa.Column("seen_at", _TS, nullable=False),
        sa.Column("expires_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("nonce_hash", name=op.f("pk_ws_nonces")),
    )
    op.create_index(op.f("ix_ws_nonces_expires_at"), "ws_nonces", ["expires_at"])
    op.create_table(
        "auth_failures",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("subject_kind", sa.String(8), nullable=False),
        sa.Column("subject", sa.String(200), nullable=False),
        sa.Column("failed_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_auth_failures")),
    )
    op.create_index(
        op.f("ix_auth_failures_subject_kind_subject_failed_at"),
        "auth_failures",
        ["subject_kind", "subject", "failed_at"],
    )
    op.create_index(op.f("ix_auth_failures_failed_at"), "auth_failures", ["failed_at"])
    # One live lock per user or source: the primary key decides which instance locks (and audits).
    op.create_table(
        "auth_lockouts",
        sa.Column("subject_kind", sa.String(8), nullable=False),
        sa.Column("subject", sa.String(200), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("locked_at", _TS, nullable=False),
        sa.Column("locked_until", _TS, nullable=False),
        sa.PrimaryKeyConstraint("subject_kind", "subject", name=op.f("pk_auth_lockouts")),
    )


def downgrade() -> None:
    op.drop_table("auth_lockouts")
    op.drop_index(op.f("ix_auth_failures_failed_at"), table_name="auth_failures")
    op.drop_index(op.f("ix_auth_failures_subject_kind_subject_failed_at"), table_name="auth_failures")
    op.drop_table("auth_failures")
    op.drop_index(op.f("ix_ws_nonces_expires_at"), table_name="ws_nonces")
    op.drop_table("ws_nonces")
    op.drop_table("user_secrets")
