"""Who is calling and what they may do: credentials, one access table, one check.

Credentials come from a WS-Security ``UsernameToken`` in the SOAP header (parsed here
from the request envelope: spyne has no WS-Security) or from HTTP Basic, for legacy
clients that cannot add SOAP headers.  ``PasswordAuthenticator`` checks them
(PasswordText, PasswordDigest with Nonce and Created, the freshness window, replays,
clear text only over TLS or from this host, slow-down and lock-out).
``OPERATION_ACCESS`` declares, per operation, the role it needs and which argument
names an organisation; ``authorize`` is the only place that enforces it (called by the
service's single call wrapper).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Protocol, Sequence

from ..domain.clock import utc_now
from ..errors import AccessDenied, AuthenticationFailed
from ..security import tokens
from ..security.throttle import Throttle
from ..security.transport import LOCAL, Origin, ProxyPolicy, plaintext_allowed
from ..services.users import Account, Principal, record_audit, refused
from ..settings import SecuritySettings
from ..wsgi_keys import ORIGIN_KEY

WSSE_NS = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
WSU_NS = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"
_TOKEN_PROFILE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0"
PASSWORD_TEXT = _TOKEN_PROFILE + "#PasswordText"
PASSWORD_DIGEST = _TOKEN_PROFILE + "#PasswordDigest"

ANONYMOUS = Principal("anonymous", frozenset(), frozenset())



@dataclass(frozen=True)
class Credentials:
    username: str
    password: str  # the password, or for "wsse-digest" the Base64 digest
    scheme: str  # "basic", "wsse-text" or "wsse-digest"
    nonce: str | None = None  # base64, WS-Security only
    created: str | None = None  # xs:dateTime text, WS-Security only
    nonce_encoding: str | None = None  # the Nonce's EncodingType attribute

    def __repr__(self) -> str:  # never a password in a log line or traceback
        return f"Credentials(username={self.username!r}, scheme={self.scheme!r}, password=***)"


class Authenticator(Protocol):
    def origin(self, environ: Mapping[str, Any]) -> Origin:
        """Where the request comes from (trusted proxies applied)."""

    def authenticate(self, credentials: Credentials, origin: Origin = LOCAL) -> Principal:
        """The principal, or ``AuthenticationFailed``."""


class PasswordAuthenticator:
    """HTTP Basic, UsernameToken PasswordText and PasswordDigest against the user store.

    ``users`` is a ``UserService``; ``security`` defaults to the one it was built with.
    """

    def __init__(
        self,
        users,
        security: SecuritySettings | None = None,
        *,
        clock: Callable[[], dt.datetime] = utc_now,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._users = users
        self.security = security or getattr(users, "security", None) or SecuritySettings()
        self.proxies = ProxyPolicy(self.security.trusted_proxies)
        self._clock = clock
        self.throttle = Throttle(users.store, self.security, clock=clock, sleep=sleep, audit=record_audit)

    def origin(self, environ: Mapping[str, Any]) -> Origin:
        return self.proxies.origin(environ)

    def authenticate(self, credentials: Credentials, origin: Origin = LOCAL) -> Principal:
        if credentials.scheme != "wsse-digest" and not plaintext_allowed(
            origin, allow_plaintext_http=self.security.allow_plaintext_http
        ):
            kind = "HTTP Basic" if credentials.scheme == "basic" else "UsernameToken PasswordText"
            raise AuthenticationFailed(
                f"{kind} over plain HTTP from {origin.address} is refused (the password would travel "
                "in clear text): call over HTTPS, use PasswordDigest, or set [security] "
                "allow_plaintext_http = true (ARCHIVE_OA_SECURITY_ALLOW_PLAINTEXT_HTTP)"
            )
        arrived = self._clock()
        # The throttle's standing and the user row in one read transaction: every request
        # reads both afresh (a lock, a new password, a disabled account count at once).
        with self._users.store.transaction() as conn:
            found = self.throttle.read(conn, credentials.username, origin.address)
            account = self._users.read_account(conn, credentials.username,
                                               with_secret=credentials.scheme == "wsse-digest")
        self.throttle.admit(found)  # a locked name: refused before its password is checked
        try:
            if found.source_lock is not None and not account.may_log_in:
                # From a locked address: refused unhashed (a spray costs no CPU), answered as late.
                raise refused(credentials.username)
            principal = self._verify(credentials, account)
        except AuthenticationFailed as exc:
            elapsed = (self._clock() - arrived).total_seconds()  # a locked address's answers come as late
            refusal = self.throttle.failed(credentials.username, origin.address, found, exc, elapsed=elapsed)
            if refusal is exc:
                raise
            raise refusal from None
        self.throttle.succeeded(credentials.username, origin.address, found)
        return principal

    def _verify(self, credentials: Credentials, account: Account | None) -> Principal:
        window, skew = self.security.token_window_seconds, self.security.clock_skew_seconds
        digest = credentials.scheme == "wsse-digest"
        if digest and (not credentials.nonce or not credentials.created):
            raise AuthenticationFailed(
                "UsernameToken PasswordDigest needs wsse:Nonce and wsu:Created (OASIS UsernameToken "
                "Profile 1.1): send both, new for every request"
            )
        now = self._clock()
        nonce = None
        if credentials.nonce is not None:
            nonce = tokens.decode_nonce(credentials.nonce, credentials.nonce_encoding)
        created = None if credentials.created is None else tokens.parse_created(credentials.created)
        if created is not None:  # PasswordText may carry them too: then they are held to the same rules
            tokens.check_fresh(created, now, window=window, skew=skew)
        if digest:
            principal = self._users.authenticate_digest(
                credentials.username, credentials.password, nonce, credentials.created.strip(), account=account
            )
        else:
            principal = self._users.authenticate(credentials.username, credentials.password, account=account)
        if nonce is not None:
            until = tokens.remembered_until(created or now, window=window)
            self._users.accept_nonce(credentials.username, nonce, max(until, now + dt.timedelta(seconds=1)), now=now)
        return principal


@dataclass(frozen=True)
class Access:
    role: str | None  # None: anonymous
    org_arg: str | None = None  # argument whose orgCode must lie in the caller's scope


#: The role each operation needs (viewer < archivist < operator < admin).  ``auditor`` stands
#: apart and is named by no operation here: it reads the audit log (``archive-oa audit``), no vouchers.
OPERATION_ACCESS: Mapping[str, Access] = {
    "Ping": Access(None),
    "QueryVouchers": Access("viewer"),
    "GetVoucher": Access("viewer"),
    "GetVoucherDocument": Access("viewer"),
    "GetAttachment": Access("viewer"),
    "ArchiveDocument": Access("archivist", org_arg="orgCode"),
    "SubmitWorkflowResult": Access("archivist"),
    "TriggerSync": Access("operator", org_arg="orgCode"),
    "GetSyncStatus": Access("operator"),
    "ReconcilePeriod": Access("operator", org_arg="orgCode"),
}


def credentials_from(environ: Mapping[str, Any], header_elements: Sequence | None) -> Credentials | None:
    """The caller's credentials: the UsernameToken when present, else HTTP Basic."""
    return _from_wsse(header_elements or ()) or _from_basic(environ.get("HTTP_AUTHORIZATION"))


@dataclass(frozen=True)
class Claim:
    """The credentials a request carries, read once per request: ``credentials`` (None:
    none sent), or ``error`` when they cannot be read (malformed Basic, a bad UsernameToken),
    raised when the operation needs them."""

    credentials: Credentials | None
    error: Exception | None = None

    @property
    def username(self) -> str:
        """The name claimed, recorded for calls refused before authentication."""
        return self.credentials.username if self.credentials is not None else "anonymous"


def claim_from(environ: Mapping[str, Any], header_elements: Sequence | None) -> Claim:
    """``credentials_from``, its failure kept for ``authenticate_call`` to raise."""
    try:
        return Claim(credentials_from(environ, header_elements))
    except Exception as exc:  # noqa: BLE001 - raised by authenticate_call, where the call is audited
        return Claim(None, exc)


def authenticate_call(
    operation: str, authenticator: Authenticator, environ: Mapping[str, Any], claim: Claim
) -> Principal:
    """The caller of ``operation`` from the request's credentials (``claim_from``); the
    request's ``Origin`` is taken from ``ORIGIN_KEY`` when the gateway app set it."""
    if OPERATION_ACCESS[operation].role is None:
        return ANONYMOUS
    if claim.error is not None:
        raise claim.error
    credentials = claim.credentials
    if credentials is None:
        raise AuthenticationFailed(
            f"{operation} needs credentials: send a WS-Security UsernameToken (PasswordDigest, or "
            "PasswordText over HTTPS) or an HTTP Basic Authorization header over HTTPS"
        )
    origin = environ.get(ORIGIN_KEY) or authenticator.origin(environ)
    return authenticator.authenticate(credentials, origin)


def authorize(operation: str, principal: Principal, arguments: Mapping[str, Any]) -> None:
    access = OPERATION_ACCESS[operation]
    if access.role is None:
        return
    if not principal.has_role(access.role):
        held = ", ".join(sorted(principal.roles)) or "none"
        raise AccessDenied(
            f"{operation} needs the role {access.role!r} or higher; user {principal.username!r} "
            f"holds: {held}"
        )
    if access.org_arg:
        org = arguments.get(access.org_arg)
        if org and not principal.may_see(org):
            raise AccessDenied(
                f"{access.org_arg} {org!r} is outside the organisation scope of user {principal.username!r}"
            )


def _from_basic(header: str | None) -> Credentials | None:
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    token = value.strip()
    if "-" in token or "_" in token:  # suds encodes Basic with the URL-safe alphabet
        token = token.replace("-", "+").replace("_", "/")
    try:
        decoded = base64.b64decode(token, validate=True)
    except (binascii.Error, ValueError):
        raise AuthenticationFailed("the HTTP Basic Authorization header is not valid base64") from None
    # RFC 7617 recommends UTF-8; legacy Chinese clients may send GBK.
    for encoding in ("utf-8", "gbk"):
        try:
            text = decoded.decode(encoding)
            break
        except UnicodeDecodeError:
            continue
    else:
        raise AuthenticationFailed("the HTTP Basic credentials are neither UTF-8 nor GBK text")
    username, sep, password = text.partition(":")
    if not sep:
        raise AuthenticationFailed("HTTP Basic credentials must be 'user:password'")
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in username):
        raise AuthenticationFailed("the HTTP Basic user name contains control characters")
    return Credentials(username, password, "basic")


def _from_wsse(header_elements: Sequence) -> Credentials | None:
    for header in header_elements:
        if getattr(header, "tag", None) != f"{{{WSSE_NS}}}Security":
            continue
        token = header.find(f"{{{WSSE_NS}}}UsernameToken")
        if token is None:
            continue
        username = (token.findtext(f"{{{WSSE_NS}}}Username") or "").strip()
        password = token.find(f"{{{WSSE_NS}}}Password")
        if not username or password is None:
            raise AuthenticationFailed("the UsernameToken needs a Username and a Password")
        kind = (password.get("Type") or PASSWORD_TEXT).strip()
        if kind not in (PASSWORD_TEXT, PASSWORD_DIGEST):
            raise AuthenticationFailed(f"UsernameToken Password Type {kind!r} is not supported")
        nonce = token.find(f"{{{WSSE_NS}}}Nonce")
        return Credentials(
            username=username,
            password=password.text or "",
            scheme="wsse-text" if kind == PASSWORD_TEXT else "wsse-digest",
            nonce=None if nonce is None else (nonce.text or ""),
            created=token.findtext(f"{{{WSU_NS}}}Created"),
            nonce_encoding=None if nonce is None else nonce.get("EncodingType"),
        )
    return None
