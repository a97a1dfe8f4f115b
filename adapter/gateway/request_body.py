"""A request body as the gateway accepts it: bounded before, while and after decompression.

``[gateway] max_body_bytes`` bounds the bytes read from the socket and, separately, the
bytes a ``Content-Encoding: gzip`` or ``deflate`` body inflates to — decompression stops
one byte past the limit, so a gzip bomb costs at most the limit in memory, never its
expanded size.  A body that fails is described in logs by ``fingerprint`` (size,
SHA-256 and a short escaped prefix), never in full: it may be huge, binary, or carry a
password in a UsernameToken.
"""

from __future__ import annotations

import hashlib
import zlib

from ..errors import RequestTooLarge, ValidationFailed
from ..wsgi_keys import BODY_REFUSED_KEY

_CHUNK = 64 * 1024
_PREFIX_BYTES = 48
#: Content-Encoding → zlib window bits (gzip header; zlib header).  Raw deflate is
#: tried when a "deflate" body has no zlib header, as some clients send it that way.
_CODINGS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


def too_large(limit: int, what: str = "the request body") -> RequestTooLarge:
    return RequestTooLarge(
        f"{what} exceeds [gateway] max_body_bytes = {limit} bytes: send smaller attachments "
        "(or ask the operator to raise the limit)"
    )


def read_limited(environ, limit: int) -> bytes:
    """The body from ``wsgi.input``: at most ``limit`` bytes, else ``RequestTooLarge``
    (a declared Content-Length above the limit is refused before reading, and a body the
    server already refused is not read at all)."""
    if environ.get(BODY_REFUSED_KEY):
        raise too_large(limit)
    length_text = (environ.get("CONTENT_LENGTH") or "").strip()
    stream = environ["wsgi.input"]
    if length_text:
        try:
            length = int(length_text)
        except ValueError:
            raise ValidationFailed(f"Content-Length {length_text!r} is not a number: send the body's size") from None
        if length < 0:
            raise ValidationFailed(f"Content-Length {length} is negative: send the body's size")
        if length > limit:
            raise too_large(limit)
        return stream.read(length)
    body = stream.read(limit + 1)
    if len(body) > limit:
        raise too_large(limit)
    return body


def decode_content(body: bytes, content_encoding: str | None, limit: int) -> bytes:
    """``body`` with its Content-Encoding undone, inflating to at most ``limit`` bytes."""
    codings = [c.strip().lower() for c in (content_encoding or "").split(",") if c.strip()]
    codings = [c for c in codings if c != "identity"]
    if not codings:
        return body
    if len(codings) > 1:
        raise ValidationFailed(
            f"Content-Encoding {content_encoding!r} stacks {len(codings)} codings: compress the body once "
            "(gzip or deflate)"
        )
    coding = codings[0]
    if coding not in _CODINGS:
        raise ValidationFailed(
            f"Content-Encoding {coding!r} is not supported: send the body uncompressed, gzip or deflate"
        )
    try:
        return _inflate(body, _CODINGS[coding], limit)
    except zlib.error:
        if coding != "deflate":
            raise _corrupt(coding) from None
    try:
        return _inflate(body, -zlib.MAX_WBITS, limit)  # raw deflate, no zlib header
    except zlib.error:
        raise _corrupt(coding) from None


def _inflate(data: bytes, wbits: int, limit: int) -> bytes:
    """Inflate every member (gzip allows several), stopping one byte past ``limit``."""
    out = bytearray()
    pending = data
    while pending:
        inflater = zlib.decompressobj(wbits)
        chunk_input = pending
        while chunk_input:
            out += inflater.decompress(chunk_input, limit + 1 - len(out))
            if len(out) > limit:
                raise too_large(limit, "the decompressed request body")
            chunk_input = inflater.unconsumed_tail
            if inflater.eof:
                break
        if not inflater.eof:
            raise zlib.error("truncated stream")
        out += inflater.flush()
        pending = inflater.unused_data if wbits > zlib.MAX_WBITS else b""  # only gzip has members
    if len(out) > limit:
        raise too_large(limit, "the decompressed request body")
    return bytes(out)


def _corrupt(coding: str) -> ValidationFailed:
    return ValidationFailed(
        f"the body is not valid {coding} data (corrupt or truncated): send the complete compressed body, "
        "or drop the Content-Encoding header"
    )


def fingerprint(body: bytes) -> str:
    """How logs name a body: ``1234 bytes sha256=… starts b'<soap:Env…'``."""
    digest = hashlib.sha256(body).hexdigest()[:16]
    prefix = body[:_PREFIX_BYTES]
    more = "…" if len(body) > _PREFIX_BYTES else ""
    return f"{len(body)} bytes sha256={digest} starts {prefix!r}{more}"
