"""The UsernameToken's Nonce and Created: decoding and the freshness window.

OASIS UsernameToken Profile 1.1 §3.1 / WS-I BSP 1.1: the Nonce is base64 (its
``EncodingType`` may only say so) and Created an ``xs:dateTime`` in UTC.  A token is
fresh while Created lies within ``window`` seconds in the past and at most ``skew``
seconds in the future (clocks ahead of ours).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import re

from ..errors import AuthenticationFailed

BASE64_BINARY = (
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-soap-message-security-1.0#Base64Binary"
)
MIN_NONCE_BYTES = 8
MAX_NONCE_BYTES = 256
_FRACTION = re.compile(r"(\.\d{1,6})\d*")  # Python parses at most 6 fraction digits


def decode_nonce(text: str | None, encoding_type: str | None = None) -> bytes:
    if encoding_type not in (None, "", BASE64_BINARY):
        raise AuthenticationFailed(
            f"wsse:Nonce EncodingType {encoding_type!r} is not supported: send the nonce base64-encoded "
            f"(EncodingType {BASE64_BINARY})"
        )
    try:
        nonce = base64.b64decode((text or "").strip(), validate=True)
    except (binascii.Error, ValueError):
        raise AuthenticationFailed("wsse:Nonce is not valid base64: send 16 random bytes, base64-encoded") from None
    if not MIN_NONCE_BYTES <= len(nonce) <= MAX_NONCE_BYTES:
        raise AuthenticationFailed(
            f"wsse:Nonce has {len(nonce)} bytes: send {MIN_NONCE_BYTES}-{MAX_NONCE_BYTES} random bytes "
            "(16 recommended), base64-encoded, new for every request"
        )
    return nonce


def nonce_key(nonce: bytes) -> str:
    """What the nonce store keeps: fixed length, whatever the nonce's size."""
    return hashlib.sha256(nonce).hexdigest()


def parse_created(text: str | None) -> dt.datetime:
    value = (text or "").strip()
    try:
        parsed = dt.datetime.fromisoformat(_FRACTION.sub(r"\1", value))
    except ValueError:
        parsed = None
    if parsed is None or parsed.tzinfo is None:
        raise AuthenticationFailed(
            f"wsu:Created {value!r} is not an xs:dateTime with a time zone: send UTC, e.g. 2026-01-31T08:00:00Z"
        )
    return parsed.astimezone(dt.timezone.utc)


def check_fresh(created: dt.datetime, now: dt.datetime, *, window: int, skew: int) -> None:
    age = (now - created).total_seconds()
    if age > window:
        raise AuthenticationFailed(
            f"wsu:Created {created.isoformat()} is {int(age)} s old, more than the {window} s allowed: "
            "create a new UsernameToken for every request and check the client's clock"
        )
    if -age > skew:
        raise AuthenticationFailed(
            f"wsu:Created {created.isoformat()} is {int(-age)} s in the future, more than the {skew} s "
            "allowed for clock differences: check the client's clock (NTP)"
        )


def remembered_until(created: dt.datetime, *, window: int) -> dt.datetime:
    """How long a nonce must be remembered: until a token with that Created is stale anyway."""
    return created + dt.timedelta(seconds=window)
