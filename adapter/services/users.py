"""Users, roles and organisation scope of the gateway's callers.

Roles are ranked ``viewer < archivist < operator < admin``: holding a role grants every
lower one.  ``auditor`` stands apart (it reads the audit log and nothing else).
Passwords are kept only as scrypt hashes with a per-user salt, in the text form
``scrypt$n$r$p$salt_b64$hash_b64`` so the cost can be raised later without a migration.

The fuller security of PRODUCT.md §7 (PasswordDigest, nonce replay, lock-out, audit)
builds on ``authenticate``; see ``archive_oa.gateway.auth``.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import os
from dataclasses import dataclass
from typing import Iterable

from ..errors import AuthenticationFailed, Issue, ValidationFailed
from ..store import users as user_repo

#: Hierarchical roles, lowest first.
RANKED_ROLES = ("viewer", "archivist", "operator", "admin")
#: Roles outside the hierarchy.
SEPARATE_ROLES = ("auditor",)
KNOWN_ROLES = frozenset(RANKED_ROLES + SEPARATE_ROLES)

_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**14, 8, 1
_SCRYPT_MAXMEM = 64 * 1024 * 1024


@dataclass(frozen=True)
class Principal:
    """Who is calling: the authenticated user with roles and organisation scope."""

    username: str
    roles: frozenset[str]
    org_scope: frozenset[str] | None  # None: every organisation

    def has_role(self, required: str) -> bool:
        if required in self.roles:
            return True
        if required not in RANKED_ROLES:
            return False
        needed = RANKED_ROLES.index(required)
        return any(role in RANKED_ROLES and RANKED_ROLES.index(role) >= needed for role in self.roles)

    def may_see(self, org_code: str | None) -> bool:
        return self.org_scope is None or org_code in self.org_scope


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    salt = salt or os.urandom(16)
    digest = hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P, maxmem=_SCRYPT_MAXMEM
    )
    b64 = lambda raw: base64.b64encode(raw).decode("ascii")  # noqa: E731
    return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${b64(salt)}${b64(digest)}"


def verify_password(password: str, encoded: str) -> bool:
    try:
        scheme, n, r, p, salt_b64, hash_b64 = encoded.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(hash_b64)
        actual = hashlib.scrypt(
            password.encode("utf-8"),
            salt=base64.b64decode(salt_b64),
            n=int(n),
            r=int(r),
            p=int(p),
            maxmem=_SCRYPT_MAXMEM,
            dklen=len(expected),
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


#: Checked against when the user does not exist, so that the answer takes as long
#: as for a wrong password and does not reveal which user names exist.
_DUMMY_HASH = hash_password("not a password", salt=b"0" * 16)


class UserService:
    def __init__(self, store, *, clock=None) -> None:
        self._store = store
        self._clock = clock or (lambda: dt.datetime.now(dt.timezone.utc))

    def add_user(
        self,
        username: str,
        password: str,
        roles: Iterable[str],
        org_scope: Iterable[str] | None = None,
        *,
        disabled: bool = False,
    ) -> Principal:
        """Create or replace a user; returns what the user will authenticate as."""
        roles = frozenset(roles)
        issues = []
        if not username or not username.strip() or ":" in username:
            issues.append(Issue("username", "user-name", f"user name {username!r} must be non-empty without ':'"))
        if not password:
            issues.append(Issue("password", "password", "the password must not be empty"))
        unknown = sorted(roles - KNOWN_ROLES)
        if unknown or not roles:
            issues.append(
                Issue("roles", "role", f"roles {sorted(roles)} must be one or more of {sorted(KNOWN_ROLES)}")
            )
        if issues:
            raise ValidationFailed(f"user {username!r} not saved: fix the listed fields", issues)
        scope = None if org_scope is None else frozenset(org_scope)
        record = user_repo.UserRecord(
            username=username,
            password_hash=hash_password(password),
            roles=roles,
            org_scope=scope,
            disabled=disabled,
            created_at=self._clock(),
        )
        with self._store.transaction() as conn:
            user_repo.put_user(conn, record)
        return Principal(username, roles, scope)

    def authenticate(self, username: str, password: str) -> Principal:
        with self._store.transaction() as conn:
            record = user_repo.get_user(conn, username)
        encoded = record.password_hash if record else _DUMMY_HASH
        matches = verify_password(password or "", encoded)
        if record is None or record.disabled or not matches:
            raise AuthenticationFailed(
                f"authentication failed for user {username!r}: unknown user, wrong password "
                "or disabled account; check the credentials"
            )
        return Principal(record.username, frozenset(record.roles), record.org_scope)
