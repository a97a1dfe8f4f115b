"""A request's way in, the same for both SOAP versions: the body read within the limit
and inflated, decoded to UTF-8 from whatever charset it is labelled in, parsed under the
XML policy and checked to be one operation call in the endpoint's envelope.

Whatever fails here is a ``ValidationFailed`` (or ``RequestTooLarge``) the endpoint
answers as a fault; a caller of the other SOAP version who must be answered in its own
gets ``ForeignEnvelope``.  A body that fails is logged by its fingerprint only.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from lxml import etree

from .. import safexml
from ..errors import AdapterError, ValidationFailed
from ..wsgi_keys import CORRELATION_KEY, OPERATION_KEY
from . import encoding
from .auth import OPERATION_ACCESS
from .request_body import decode_content, fingerprint, read_limited
from .soap import OTHER, SoapVersion
from .types import NAMESPACE

log = logging.getLogger(__name__)

#: The operation elements a Body may hold.
OPERATION_TAGS = frozenset(f"{{{NAMESPACE}}}{name}" for name in OPERATION_ACCESS)


class ForeignEnvelope(Exception):
    """The other SOAP version's envelope, whose sender can only read a fault in that version."""

    def __init__(self, error: ValidationFailed, version: SoapVersion) -> None:
        super().__init__(error.message)
        self.error, self.version = error, version


@dataclass(frozen=True)
class Request:
    body: bytes  # UTF-8, its declaration (if any) saying so
    envelope: etree._Element
    operation: str  # the operation element's local name, one of ``OPERATION_ACCESS``


def read_request(environ: dict, version: SoapVersion, *, limit: int, policy: safexml.XmlPolicy) -> Request:
    """The request, checked to be one ``version`` operation call (see the module's text);
    the operation's name is left in the environ under ``OPERATION_KEY``."""
    body = decode_content(read_limited(environ, limit), environ.get("HTTP_CONTENT_ENCODING"), limit)
    try:
        return Request(*_checked(environ, body, version, policy))
    except (AdapterError, ForeignEnvelope) as exc:
        code = exc.error.code if isinstance(exc, ForeignEnvelope) else exc.code
        log.warning("request body refused [%s] (%s): %s", environ.get(CORRELATION_KEY), code, fingerprint(body))
        raise


def _checked(environ: dict, body: bytes, version: SoapVersion, policy) -> tuple[bytes, etree._Element, str]:
    media_type, charset = encoding.parse_content_type(environ.get("CONTENT_TYPE"))
    if version.refused_media_type and media_type == version.refused_media_type[0]:
        raise ValidationFailed(version.refused_media_type[1])
    body = encoding.request_as_utf8(body, charset)
    envelope = safexml.parse_bytes(body, source="request", policy=policy).getroot()
    other = OTHER[version]
    if envelope.tag == other.envelope_tag:
        error = ValidationFailed(version.foreign_envelope_message)
        raise ForeignEnvelope(error, other) if version.foreign_fault_in_sender_version else error
    if envelope.tag != version.envelope_tag:
        raise ValidationFailed(
            f"the request is {envelope.tag}, not a {version.name} Envelope: wrap the operation element in "
            f"soap:Envelope/soap:Body (soap = {version.envelope_ns})"
        )
    bodies = envelope.findall(f"{{{version.envelope_ns}}}Body")
    if len(bodies) != 1:
        raise ValidationFailed("the Envelope must contain exactly one soap:Body with the operation element")
    calls = [child for child in bodies[0] if isinstance(child.tag, str)]
    if len(calls) != 1:
        raise ValidationFailed(f"soap:Body must contain exactly one operation element, found {len(calls)}")
    operation = calls[0].tag
    if operation not in OPERATION_TAGS:
        raise ValidationFailed(
            f"unknown operation {operation}: use one of {', '.join(sorted(OPERATION_ACCESS))} "
            f"in namespace {NAMESPACE}"
        )
    environ[OPERATION_KEY] = name = etree.QName(operation).localname
    return body, envelope, name
