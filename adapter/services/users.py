"""Users, roles and organisation scope of the gateway's callers, and their credentials.

Roles are ranked ``viewer < archivist < operator < admin``: holding a role grants every
lower one.  ``auditor`` stands apart (it reads the audit log and nothing else).
Passwords are kept as scrypt hashes (``archive_oa.security.passwords``); PasswordDigest
needs the password itself, so it is also kept Fernet-encrypted under the installation's
key (``archive_oa.security.secrets``) — never in plain text.  Every administrative
change is written to the audit log in the transaction that makes it.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import Counter
from dataclasses import dataclass
from typing import Iterable

from ..domain.clock import utc_now
from ..errors import AuthenticationFailed, ConfigurationError, Conflict, Issue, NotFound, ValidationFailed
from ..security.credential_cache import VerifiedCredentials
from ..security.passwords import DUMMY_HASH, digest_matches, hash_password, verify_password
from ..security.secrets import PUT_BACK, KeyRing, missing_key_ids
from ..security.tokens import nonce_key
from ..settings import SecuritySettings, Settings
from ..store import users as user_repo

__all__ = [
    "KNOWN_ROLES", "RANKED_ROLES", "SEPARATE_ROLES", "Account", "Principal", "Throttled", "UserInfo",
    "UserService",
    "hash_password", "verify_password", "record_audit", "refused",
]

log = logging.getLogger(__name__)

#: Hierarchical roles, lowest first.
RANKED_ROLES = ("viewer", "archivist", "operator", "admin")
#: Roles outside the hierarchy.
SEPARATE_ROLES = ("auditor",)
KNOWN_ROLES = frozenset(RANKED_ROLES + SEPARATE_ROLES)


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


@dataclass(frozen=True)
class UserInfo:
    """What ``users list`` shows: never a hash or a secret."""

    username: str
    roles: frozenset[str]
    org_scope: frozenset[str] | None
    disabled: bool
    digest_ready: bool  # an encrypted secret is stored: PasswordDigest works
    created_at: dt.datetime
    locked_until: dt.datetime | None
    failures: int = 0  # failed authentications within [security] failure_window_seconds


@dataclass(frozen=True)
class Throttled:
    """What ``users list`` shows of a source address, a name that is no user, or a name from
    one address, that failed to authenticate lately or is locked."""

    subject: str  # the address, or the name
    failures: int  # within [security] failure_window_seconds
    locked_until: dt.datetime | None
    address: str | None = None  # a name from one address: the address


@dataclass(frozen=True)
class Account:
    """What authentication reads of one user name: the row (None: no such user) and the
    encrypted secret PasswordDigest needs (None when not read or not stored)."""

    record: user_repo.UserRecord | None
    secret: user_repo.StoredSecret | None = None

    @property
    def may_log_in(self) -> bool:
        """The user exists and is not disabled (its password may still be wrong)."""
        return self.record is not None and not self.record.disabled


@dataclass(frozen=True)
class Actor:
    """Who makes an administrative change, for the audit log."""

    name: str
    source: str = "local"


SYSTEM = Actor("system")


def record_audit(conn, **fields) -> None:
    """THE one call site of the audit log for users and authentication.

    ``archive_oa.services.audit.record`` writes a hash-chained record in ``conn``'s
    transaction.  Until that module is installed, changes are only logged here.
    """
    try:
        from . import audit
    except ModuleNotFoundError as exc:
        if exc.name != f"{__package__}.audit":
            raise
        log.info("audit (no audit log installed): %s", {k: v for k, v in fields.items() if k != "now"})
        return
    audit.record(conn, **fields)


class UserService:
    def __init__(
        self,
        store,
        *,
        clock=None,
        settings: Settings | None = None,
        keys: KeyRing | None = None,
        verified: VerifiedCredentials | None = None,
    ) -> None:
        self.store = store
        self._clock = clock or utc_now
        self.security = settings.security if settings else SecuritySettings()
        # Without settings there is no key: users get no digest secret (PasswordText and Basic only).
        self.keys = keys or (KeyRing(settings) if settings else None)
        # Passwords that matched lately: scrypt once per (user, password) and TTL, not per request.
        if verified is None:
            verified = VerifiedCredentials(self.security.credential_cache_seconds)
        self.verified = verified

    # --- administration -----------------------------------------------------------------------

    def add_user(
        self,
        username: str,
        password: str,
        roles: Iterable[str],
        org_scope: Iterable[str] | None = None,
        *,
        disabled: bool = False,
        replace: bool = True,
        actor: Actor = SYSTEM,
        password_policy: bool = True,
    ) -> Principal:
        """Create (or, with ``replace``, replace) a user; returns what it will authenticate as.

        ``password_policy=False`` is for the demo's users alone (their password is their name)."""
        roles = frozenset(roles)
        scope = None if org_scope is None else frozenset(org_scope)
        passwords = self._password_issues(username, password) if password_policy else _empty_issues(password)
        issues = _name_issues(username) + passwords + _role_issues(roles) + _scope_issues(scope)
        if issues:
            raise ValidationFailed(f"user {username!r} not saved: fix the listed fields", issues)
        now = self._clock()
        record = user_repo.UserRecord(username, hash_password(password), roles, scope, disabled, now)
        with self.store.transaction(immediate=True) as conn:
            existing = user_repo.get_user(conn, username)
            if existing is not None and not replace:
                raise Conflict(f"user {username!r} already exists: change it with users passwd/grant/revoke/scope")
            user_repo.put_user(conn, record)
            self._store_secret(conn, username, password, now)
            self._audit(conn, actor, "UserAdd" if existing is None else "UserReplace", username, now, {
                "roles": sorted(roles), "org_scope": None if scope is None else sorted(scope), "disabled": disabled,
            })
        return Principal(username, roles, scope)

    def set_password(self, username: str, password: str, *, actor: Actor = SYSTEM) -> None:
        issues = self._password_issues(username, password)
        if issues:
            raise ValidationFailed(f"password of user {username!r} not changed: fix the listed rule", issues)
        self._change(username, "UserPassword", actor, {}, password=password)

    def set_disabled(self, username: str, disabled: bool, *, actor: Actor = SYSTEM) -> None:
        """Disable or enable; enabling also lifts a lockout of the user name."""
        self._change(username, "UserDisable" if disabled else "UserEnable", actor, {}, disabled=disabled)

    def grant(self, username: str, roles: Iterable[str], *, actor: Actor = SYSTEM) -> frozenset[str]:
        roles = frozenset(roles)
        issues = _role_issues(roles)
        if issues:
            raise ValidationFailed(f"no role granted to user {username!r}", issues)
        return self._change(username, "UserGrant", actor, {"roles": sorted(roles)}, add_roles=roles).roles

    def revoke(self, username: str, roles: Iterable[str], *, actor: Actor = SYSTEM) -> frozenset[str]:
        roles = frozenset(roles)
        return self._change(username, "UserRevoke", actor, {"roles": sorted(roles)}, remove_roles=roles).roles

    def set_scope(self, username: str, org_scope: Iterable[str] | None, *, actor: Actor = SYSTEM) -> None:
        scope = None if org_scope is None else frozenset(org_scope)
        issues = _scope_issues(scope)
        if issues:
            raise ValidationFailed(f"scope of user {username!r} not changed", issues)
        detail = {"org_scope": None if scope is None else sorted(scope)}
        self._change(username, "UserScope", actor, detail, scope=scope, set_scope=True)

    def unlock(self, kind: str, subject: str, *, actor: Actor = SYSTEM) -> list[user_repo.Lockout]:
        """Lift the locks of a user name (kind "user": everywhere and from every address) or of
        a source address (kind "source": its own and those of every name from it), and forget
        their failures; returns the live locks lifted, the subject's own first."""
        now = self._clock()
        with self.store.transaction(immediate=True) as conn:
            lifted = user_repo.release(conn, kind, subject, now)
            pairs = [user_repo.split_pair(lock.subject) for lock in lifted if lock.subject_kind == user_repo.PAIR]
            self._audit(conn, actor, "AuthUnlock", f"{kind}:{subject}", now, {
                "was_locked": any(lock.subject_kind == kind for lock in lifted),
                # the other half of each pair lock lifted: a name's addresses, an address's names
                "pair_locks_lifted": [source if kind == user_repo.USER else name for name, source in pairs],
            })
        return lifted

    def list_users(self) -> list[UserInfo]:
        """Every user with its recent failed authentications and its lock."""
        with self.store.transaction() as conn:
            records = user_repo.list_users(conn)
            secrets = {s.username for s in user_repo.list_secrets(conn)}
            failures, locks = self._throttle_state(conn, user_repo.USER)
        return [
            UserInfo(r.username, r.roles, r.org_scope, r.disabled, r.username in secrets, r.created_at,
                     locks.get(r.username), failures.get(r.username, 0))
            for r in records
        ]

    def list_addresses(self) -> list[Throttled]:
        """Source addresses that failed to authenticate lately or are locked."""
        with self.store.transaction() as conn:
            return _throttled(*self._throttle_state(conn, user_repo.SOURCE))

    def list_unknown_names(self) -> list[Throttled]:
        """Names that are no user but failed to authenticate lately or are locked."""
        with self.store.transaction() as conn:
            known = {record.username for record in user_repo.list_users(conn)}
            failures, locks = self._throttle_state(conn, user_repo.USER)
        return [t for t in _throttled(failures, locks) if t.subject not in known]

    def list_pairs(self) -> list[Throttled]:
        """User names (known or not) that failed lately from one source address, or are locked
        from it: ``subject`` the name, ``address`` the address; by name, then address."""
        with self.store.transaction() as conn:
            listed = _throttled(*self._throttle_state(conn, user_repo.PAIR))
        pairs = [(user_repo.split_pair(t.subject), t) for t in listed]
        return sorted((Throttled(name, t.failures, t.locked_until, source) for (name, source), t in pairs),
                      key=lambda t: (t.subject, t.address))

    def _throttle_state(self, conn, kind: str) -> tuple[dict[str, int], dict[str, dt.datetime]]:
        """Failures within the window and live locks of one kind of subject, by subject."""
        now = self._clock()
        since = now - dt.timedelta(seconds=self.security.failure_window_seconds)
        counts = user_repo.failure_counts(conn, since)
        failures = {subject: n for (k, subject), n in counts.items() if k == kind}
        locks = {lock.subject: lock.locked_until for lock in user_repo.list_lockouts(conn, now)
                 if lock.subject_kind == kind}
        return failures, locks

    def _password_issues(self, username: str, password: str) -> list[Issue]:
        """The password rules of ``users add`` and ``users passwd``."""
        issues = _empty_issues(password)
        shortest = self.security.min_password_length
        if password and len(password) < shortest:
            issues.append(Issue("password", "min-password-length",
                                f"the password has {len(password)} characters, [security] min_password_length "
                                f"asks for at least {shortest}: choose a longer one (a few words make a good one)"))
        if password and password.casefold() == username.casefold():
            issues.append(Issue("password", "not-the-user-name",
                                "the password equals the user name (ignoring case): choose another"))
        return issues

    def rotate_key(self, *, actor: Actor = SYSTEM) -> tuple[int, str]:
        """Re-encrypt every stored secret with the current first key: (count, key id).

        With the key file, a new key is generated first and kept beside the old one
        until every secret is re-encrypted; then the file holds the new key alone.
        With configured keys, the first configured key is the new one.
        """
        keys = self._require_keys()
        old = keys.box()
        if keys.from_file:
            from ..security.secrets import generate_key

            current = keys.file_keys()
            new_key = generate_key()
            box = keys.replace_file_keys([new_key, *current])  # both decrypt while re-encrypting
        else:
            box = old
        now = self._clock()
        with self.store.transaction(immediate=True) as conn:
            stored = user_repo.list_secrets(conn)
            for secret in stored:
                token, key_id = box.encrypt(box.decrypt(secret.secret, secret.key_id))
                user_repo.put_secret(conn, secret.username, token, key_id, now)
            self._audit(conn, actor, "KeyRotate", box.primary_key_id, now, {"secrets": len(stored)})
        if keys.from_file:
            keys.replace_file_keys([new_key])
        return len(stored), box.primary_key_id

    def key_problem(self) -> str | None:
        """Why PasswordDigest cannot work for some stored secrets (their key is not at hand), or
        None.  Creates no key: ``serve`` says this once at start instead of a failure per call."""
        if self.keys is None:
            return None
        with self.store.transaction() as conn:
            needed = Counter(secret.key_id for secret in user_repo.list_secrets(conn))
        missing = missing_key_ids(needed, self.keys.key_ids())
        if not missing:
            return None
        have = ", ".join(self.keys.key_ids()) or "none: it does not exist"
        return (f"PasswordDigest fails for {sum(needed[k] for k in missing)} user(s): their stored secrets were "
                f"encrypted with key id {', '.join(missing)}, which is not among the keys of {self.keys.where} "
                f"(ids {have}): {PUT_BACK}")

    # --- authentication -----------------------------------------------------------------------

    def read_account(self, conn, username: str, *, with_secret: bool = False) -> Account:
        """The user row (and for PasswordDigest the encrypted secret) in ``conn``'s transaction:
        the authenticator reads it with the throttle's standing, one transaction for both."""
        record = user_repo.get_user(conn, username)
        secret = user_repo.get_secret(conn, username) if with_secret and record is not None else None
        return Account(record, secret)

    def authenticate(self, username: str, password: str, *, account: Account | None = None) -> Principal:
        """HTTP Basic / PasswordText: the password against its scrypt hash.

        A password that matched this very hash lately is not hashed again
        (``VerifiedCredentials``); the row is read every time (here, or by the caller
        for this request: ``account``), so a new password, a disabled account or other
        roles count from the next request on, in every instance.
        """
        if account is None:
            with self.store.transaction() as conn:
                account = self.read_account(conn, username)
        record = account.record
        password = password or ""
        if record is not None and not record.disabled and self.verified.matches(
            username, password, record.password_hash
        ):
            return _principal(record)
        encoded = record.password_hash if record else DUMMY_HASH
        matches = verify_password(password, encoded)
        if record is None or record.disabled or not matches:
            raise refused(username)
        self.verified.remember(username, password, record.password_hash)
        return _principal(record)

    def authenticate_digest(
        self, username: str, digest: str, nonce: bytes, created: str, *, account: Account | None = None
    ) -> Principal:
        """PasswordDigest: Base64(SHA-1(nonce + created + password)) with the decrypted password.
        ``account``: the row and secret the caller read for this request (``read_account``)."""
        if account is None:
            with self.store.transaction() as conn:
                account = self.read_account(conn, username, with_secret=True)
        record, stored = account.record, account.secret
        password = None
        if stored is not None and self.keys is not None:
            try:
                password = self.keys.decrypt(stored.secret, stored.key_id)
            except ConfigurationError as exc:
                log.error("PasswordDigest for user %r impossible: %s", username, exc)
        elif record is not None:
            log.warning(
                "user %r has no encrypted secret for PasswordDigest: set the password again "
                "(archive-oa users passwd %s), or let the client send PasswordText over HTTPS", username, username,
            )
        matches = password is not None and digest_matches(digest, nonce, created, password)
        if record is None or record.disabled or not matches:
            raise refused(username)
        return _principal(record)

    def accept_nonce(self, username: str, nonce: bytes, remember_until: dt.datetime, *, now: dt.datetime) -> None:
        """Remember a nonce (shared by every instance); a nonce already remembered is a replay."""
        with self.store.transaction(immediate=True) as conn:
            user_repo.forget_expired_nonces(conn, now)
            fresh = user_repo.remember_nonce(conn, nonce_key(nonce), username, now, remember_until)
        if not fresh:
            raise AuthenticationFailed(
                "this UsernameToken Nonce was already used: replay refused; send a new random Nonce "
                "(and Created) with every request"
            )

    # --- helpers ------------------------------------------------------------------------------

    def _change(self, username, operation, actor, details, *, password=None, disabled=None,
                add_roles=frozenset(), remove_roles=frozenset(), scope=None, set_scope=False):
        now = self._clock()
        with self.store.transaction(immediate=True) as conn:
            record = user_repo.get_user(conn, username)
            if record is None:
                raise NotFound(f"user {username!r} does not exist: see archive-oa users list, or add it")
            roles = (record.roles | add_roles) - remove_roles
            if not roles:
                raise ValidationFailed(
                    f"user {username!r} would hold no role: keep one, or disable the user instead",
                    [Issue("roles", "role", f"revoking {sorted(remove_roles)} leaves none")],
                )
            changed = user_repo.UserRecord(
                username=username,
                password_hash=hash_password(password) if password is not None else record.password_hash,
                roles=roles,
                org_scope=scope if set_scope else record.org_scope,
                disabled=record.disabled if disabled is None else disabled,
                created_at=record.created_at,
            )
            user_repo.put_user(conn, changed)
            if password is not None:
                self._store_secret(conn, username, password, now)
            if disabled is False:  # its locks everywhere and from every address
                user_repo.release(conn, user_repo.USER, username, now)
            self._audit(conn, actor, operation, username, now, details)
        return changed

    def _store_secret(self, conn, username: str, password: str, now: dt.datetime) -> None:
        if self.keys is None:
            user_repo.delete_secret(conn, username)  # a stale secret must not outlive a new password
            return
        token, key_id = self.keys.box().encrypt(password)
        user_repo.put_secret(conn, username, token, key_id, now)

    def _require_keys(self) -> KeyRing:
        if self.keys is None:
            raise ConfigurationError("no settings given to UserService: it cannot find the encryption key")
        return self.keys

    @staticmethod
    def _audit(conn, actor: Actor, operation: str, target: str, now, details) -> None:
        record_audit(conn, actor=actor.name, source=actor.source, operation=operation, targets=(target,),
                     outcome="OK", details=details or None, now=now)


def _principal(record: user_repo.UserRecord) -> Principal:
    return Principal(record.username, frozenset(record.roles), record.org_scope)


def refused(username: str) -> AuthenticationFailed:
    """The answer to credentials that do not match: one message for every reason, so that a
    caller learns nothing about which users exist."""
    return AuthenticationFailed(
        f"authentication failed for user {username!r}: unknown user, wrong password "
        "or disabled account; check the credentials"
    )


def _name_issues(username: str) -> list[Issue]:
    if not username or not username.strip() or ":" in username or len(username) > 100 or username != username.strip():
        return [Issue("username", "user-name",
                      f"user name {username!r} must be 1-100 characters without ':' or surrounding spaces")]
    return []


def _empty_issues(password: str) -> list[Issue]:
    return [] if password else [Issue("password", "password", "the password must not be empty")]


def _throttled(failures: dict[str, int], locks: dict[str, dt.datetime]) -> list[Throttled]:
    return [Throttled(subject, failures.get(subject, 0), locks.get(subject))
            for subject in sorted(failures.keys() | locks.keys())]


def _role_issues(roles: frozenset[str]) -> list[Issue]:
    unknown = sorted(roles - KNOWN_ROLES)
    if unknown or not roles:
        return [Issue("roles", "role", f"roles {sorted(roles)} must be one or more of {sorted(KNOWN_ROLES)}")]
    return []


def _scope_issues(scope: frozenset[str] | None) -> list[Issue]:
    bad = sorted(code for code in scope or () if not code or any(ch.isspace() for ch in code))
    if bad or scope == frozenset():
        return [Issue("org_scope", "org-code",
                      f"organisation codes {bad or '(none)'} must be one or more codes without spaces "
                      "(or every organisation)")]
    return []
