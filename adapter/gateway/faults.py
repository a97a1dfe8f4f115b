"""SOAP faults of the gateway: the one place errors become what a caller sees.

Every fault is ``soap:Client`` (the caller must change the request) or ``soap:Server``
and carries in ``detail`` one ``GatewayFault`` element::

    <detail><g:GatewayFault xmlns:g="urn:archive-oa:gateway:1">
      <g:code>Validation</g:code> <g:message>…what to fix…</g:message>
      <g:correlationId>…</g:correlationId>
      <g:issues><g:issue><g:place/><g:rule/><g:message/><g:line/></g:issue></g:issues>
    </g:GatewayFault></detail>

``code`` is stable (Authentication, AccessDenied, Validation, NotFound, Conflict,
RequestTooLarge, Unavailable, Internal).  Unexpected errors are logged here with their
traceback and reach the caller only as ``Internal`` with the correlation id: never a
stack trace, a file path or a SQL statement.
"""

from __future__ import annotations

import copy
import logging
from typing import Iterable

from .. import compat  # noqa: F401  (before any spyne import)

from lxml import etree  # noqa: E402
from spyne.model.fault import Fault  # noqa: E402

from ..errors import AdapterError, Issue  # noqa: E402
from .types import NAMESPACE  # noqa: E402

log = logging.getLogger(__name__)

SOAP11_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
CODES = (
    "Authentication",
    "AccessDenied",
    "Validation",
    "NotFound",
    "Conflict",
    "RequestTooLarge",
    "Unavailable",
    "Internal",
)
_CLIENT_CODES = frozenset(CODES[:6])
INTERNAL_MESSAGE = (
    "the gateway failed to process the request; it has been logged — "
    "quote the correlation id when reporting it"
)


def _g(name: str) -> str:
    return f"{{{NAMESPACE}}}{name}"


def detail_element(
    code: str, message: str, correlation_id: str, issues: Iterable[Issue] = ()
) -> etree._Element:
    root = etree.Element(_g("GatewayFault"), nsmap={"g": NAMESPACE})
    etree.SubElement(root, _g("code")).text = code
    etree.SubElement(root, _g("message")).text = message
    etree.SubElement(root, _g("correlationId")).text = correlation_id
    issues = list(issues)
    if issues:
        parent = etree.SubElement(root, _g("issues"))
        for issue in issues:
            item = etree.SubElement(parent, _g("issue"))
            etree.SubElement(item, _g("place")).text = issue.place
            etree.SubElement(item, _g("rule")).text = issue.rule
            etree.SubElement(item, _g("message")).text = issue.message
            if issue.line:
                etree.SubElement(item, _g("line")).text = str(issue.line)
    return root


class GatewayFault(Fault):
    """A spyne ``Fault`` whose detail is the ``GatewayFault`` element."""

    def __init__(self, code: str, message: str, correlation_id: str, issues: Iterable[Issue] = ()):
        issues = tuple(issues)
        super().__init__(
            faultcode="Client" if code in _CLIENT_CODES else "Server",
            faultstring=f"{code}: {message}",
            detail=detail_element(code, message, correlation_id, issues),
        )
        self.gateway_code = code
        self.gateway_message = message
        self.correlation_id = correlation_id
        self.issues = issues

    @property
    def http_status(self) -> str:
        # SOAP 1.1 §6.2 and WS-I BP R1126: a fault travels with 500; an oversized body
        # is refused before it is read, like any HTTP server would (413).
        if self.gateway_code == "RequestTooLarge":
            return "413 Request Entity Too Large"
        return "500 Internal Server Error"


def fault_from_error(exc: BaseException, correlation_id: str) -> GatewayFault:
    """Map an exception raised below the gateway to the fault the caller sees."""
    if isinstance(exc, GatewayFault):
        return exc
    if isinstance(exc, AdapterError) and exc.code in _CLIENT_CODES:
        return GatewayFault(exc.code, exc.message, correlation_id, getattr(exc, "issues", ()))
    if isinstance(exc, AdapterError) and exc.code == "Unavailable":
        log.warning("unavailable [%s]: %s", correlation_id, exc.message)
        return GatewayFault(
            "Unavailable", "a service the gateway depends on is unavailable; retry later", correlation_id
        )
    log.error("internal error [%s]", correlation_id, exc_info=exc)
    return GatewayFault("Internal", INTERNAL_MESSAGE, correlation_id)


def fault_from_spyne(fault: Fault, correlation_id: str) -> GatewayFault:
    """spyne's own faults (XML syntax, schema validation, unknown method) in our shape."""
    if isinstance(fault, GatewayFault):
        return fault
    code = str(fault.faultcode or "")
    if code == "Client" or code.startswith("Client."):
        text = str(fault.faultstring or code)
        return GatewayFault("Validation", f"{text}; fix the request", correlation_id)
    log.error("spyne server fault [%s]: %r", correlation_id, fault)
    return GatewayFault("Internal", INTERNAL_MESSAGE, correlation_id)


def fault_envelope(fault: GatewayFault, encoding: str = "utf-8") -> bytes:
    """A complete SOAP 1.1 fault envelope, for faults raised before spyne sees the request."""
    envelope = etree.Element(f"{{{SOAP11_ENV}}}Envelope", nsmap={"soap": SOAP11_ENV})
    body = etree.SubElement(envelope, f"{{{SOAP11_ENV}}}Body")
    element = etree.SubElement(body, f"{{{SOAP11_ENV}}}Fault")
    etree.SubElement(element, "faultcode").text = f"soap:{fault.faultcode}"
    etree.SubElement(element, "faultstring").text = fault.faultstring
    etree.SubElement(element, "detail").append(copy.deepcopy(fault.detail))
    return etree.tostring(envelope, xml_declaration=True, encoding=encoding)
