"""Passwords out of URLs before a URL is printed or logged: ``config show``, the database
engine's messages, ``backup`` and ``db upgrade`` all show URLs through :func:`mask_url`.

It works on the text as given, for database URLs (``postgresql+psycopg://user:pw@host/db``)
and HTTP URLs (``[oa] url``) alike, and also for text that is not a valid URL at all — the
message saying a URL is invalid must not print its password either.
"""

from __future__ import annotations

import re

#: What every masked secret is shown as.
MASK = "********"

# userinfo up to the last "@": a password with an unescaped "@" or "/" is masked whole, never in part
_USERINFO = re.compile(r"^(?P<head>[A-Za-z][\w+.-]*://[^/@:?#]*:).*@(?P<rest>[^@]*)$", re.S)
# not a URL at all (the message saying so prints it): whatever stands before the "@" may be a password
_NOT_A_URL = re.compile(r"^(?P<head>)(?![A-Za-z][\w+.-]*://).*@(?P<rest>[^@]*)$", re.S)
# ?password=…, &sslpassword=…, ?pwd=…, ?access_token=…, ?api_key=…
_SECRET_PARAMETER = re.compile(r"pass|pwd|secret|token|api_?key", re.I)
_PARAMETER = re.compile(r"(?P<head>[?&;](?P<name>[^=&;#]*)=)(?P<value>[^&;#]*)")


def is_secret_parameter(name: str) -> bool:
    """A query parameter whose value is a password or token (masked; left out of printed commands)."""
    return bool(_SECRET_PARAMETER.search(name))


def mask_url(url: str) -> str:
    """``url`` with the password of its user and the values of password-like query parameters
    replaced by :data:`MASK`; the rest as written."""
    match = _USERINFO.match(url) or _NOT_A_URL.match(url)
    if match:
        url = f"{match.group('head')}{MASK}@{match.group('rest')}"
    head, mark, query = url.partition("?")
    if not mark:
        return url
    masked = _PARAMETER.sub(
        lambda m: m.group("head") + (MASK if is_secret_parameter(m.group("name")) else m.group("value")),
        "?" + query,
    )
    return head + masked
