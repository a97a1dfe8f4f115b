"""Who is calling and what they may do: credentials, one access table, one check.

Credentials come from a WS-Security ``UsernameToken`` in the SOAP header (parsed here
from the request envelope: spyne has no WS-Security) or from HTTP Basic, for legacy
clients that cannot add SOAP headers.  ``OPERATION_ACCESS`` declares, per operation,
the role it needs and which argument names an organisation; ``authorize`` is the only
place that enforces it (called by the service's single call wrapper).

The fuller security of PRODUCT.md §7 plugs in behind ``Authenticator``:
PasswordDigest (nonce + created, freshness window), a shared nonce store refusing
replays, lock-out after repeated failures and the audit record of every call.
``Credentials`` already carries nonce and created for that.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any, Mapping, Protocol, Sequence

from ..errors import AccessDenied, AuthenticationFailed
from ..services.users import Principal

WSSE_NS = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
WSU_NS = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"
_TOKEN_PROFILE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0"
PASSWORD_TEXT = _TOKEN_PROFILE + "#PasswordText"
PASSWORD_DIGEST = _TOKEN_PROFILE + "#PasswordDigest"

ANONYMOUS = Principal("anonymous", frozenset(), frozenset())


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str
    scheme: str  # "basic", "wsse-text" or "wsse-digest"
    nonce: str | None = None  # base64, WS-Security only
    created: str | None = None  # xs:dateTime text, WS-Security only


class Authenticator(Protocol):
    def authenticate(self, credentials: Credentials) -> Principal:
        """The principal, or ``AuthenticationFailed``."""


class PasswordAuthenticator:
    """HTTP Basic and UsernameToken PasswordText, checked against the user store."""

    def __init__(self, users) -> None:
        self._users = users

    def authenticate(self, credentials: Credentials) -> Principal:
        if credentials.scheme == "wsse-digest":
            raise AuthenticationFailed(
                "UsernameToken PasswordDigest is not supported yet: send PasswordText over HTTPS "
                "or use HTTP Basic"
            )
        return self._users.authenticate(credentials.username, credentials.password)


@dataclass(frozen=True)
class Access:
    role: str | None  # None: anonymous
    org_arg: str | None = None  # argument whose orgCode must lie in the caller's scope


#: The role each operation needs (viewer < archivist < operator < admin).
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


def authenticate_call(
    operation: str, authenticator: Authenticator, environ: Mapping[str, Any], header_elements
) -> Principal:
    if OPERATION_ACCESS[operation].role is None:
        return ANONYMOUS
    credentials = credentials_from(environ, header_elements)
    if credentials is None:
        raise AuthenticationFailed(
            f"{operation} needs credentials: send a WS-Security UsernameToken (PasswordText) "
            "or an HTTP Basic Authorization header"
        )
    return authenticator.authenticate(credentials)


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
    try:
        decoded = base64.b64decode(value.strip(), validate=True)
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
        kind = password.get("Type", PASSWORD_TEXT)
        if kind not in (PASSWORD_TEXT, PASSWORD_DIGEST):
            raise AuthenticationFailed(f"UsernameToken Password Type {kind!r} is not supported")
        return Credentials(
            username=username,
            password=password.text or "",
            scheme="wsse-text" if kind == PASSWORD_TEXT else "wsse-digest",
            nonce=token.findtext(f"{{{WSSE_NS}}}Nonce"),
            created=token.findtext(f"{{{WSU_NS}}}Created"),
        )
    return None
