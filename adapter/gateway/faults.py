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


# --- the fault in its envelope: one builder for both SOAP versions ------------------------

SOAP12_ENV = "http://www.w3.org/2003/05/soap-envelope"
_XML_NS = "http://www.w3.org/XML/1998/namespace"


def soap11_fault(fault: GatewayFault) -> etree._Element:
    """``soap:Fault`` as spyne writes it: faultcode (its prefix set by ``qualify_soap11``),
    faultstring, an empty faultactor and the ``GatewayFault`` detail."""
    element = etree.Element(f"{{{SOAP11_ENV}}}Fault")
    etree.SubElement(element, "faultcode").text = fault.faultcode
    etree.SubElement(element, "faultstring").text = fault.faultstring
    etree.SubElement(element, "faultactor").text = ""
    etree.SubElement(element, "detail").append(copy.deepcopy(fault.detail))
    return element


def qualify_soap11(element: etree._Element) -> None:
    """faultcode as a QName with whichever prefix the envelope declares for SOAP 1.1."""
    code = element.find("faultcode")
    prefix = {uri: prefix for prefix, uri in element.nsmap.items() if prefix}[SOAP11_ENV]
    code.text = f"{prefix}:{code.text.rpartition(':')[2]}"


def _env12(name: str) -> str:
    return f"{{{SOAP12_ENV}}}{name}"


def soap12_fault(fault: GatewayFault) -> etree._Element:
    """``env:Fault`` with Code (``Sender``: the caller must change the request, else
    ``Receiver``) and the stable code as Subcode, Reason and the ``GatewayFault`` Detail."""
    element = etree.Element(_env12("Fault"))
    code = etree.SubElement(element, _env12("Code"))
    # local names for now: qualify_soap12 writes them as QNames once the fault is in its envelope
    etree.SubElement(code, _env12("Value")).text = "Sender" if fault.faultcode == "Client" else "Receiver"
    subcode = etree.SubElement(code, _env12("Subcode"))
    etree.SubElement(subcode, _env12("Value")).text = fault.gateway_code
    reason = etree.SubElement(element, _env12("Reason"))
    text = etree.SubElement(reason, _env12("Text"))
    text.set(f"{{{_XML_NS}}}lang", "en")
    text.text = fault.faultstring
    etree.SubElement(element, _env12("Detail")).append(copy.deepcopy(fault.detail))
    return element


def qualify_soap12(fault: etree._Element) -> None:
    """Code/Value as ``<env prefix>:Sender`` and Subcode/Value as ``<gateway prefix>:NotFound``,
    using whichever prefixes the envelope declares for the two namespaces."""
    value = fault.find(f"{_env12('Code')}/{_env12('Value')}")
    subvalue = fault.find(f"{_env12('Code')}/{_env12('Subcode')}/{_env12('Value')}")
    prefixes = {uri: prefix for prefix, uri in subvalue.nsmap.items() if prefix}
    value.text = f"{prefixes[SOAP12_ENV]}:{value.text.rpartition(':')[2]}"
    if NAMESPACE in prefixes:
        subvalue.text = f"{prefixes[NAMESPACE]}:{subvalue.text.rpartition(':')[2]}"
    else:  # no prefix for the gateway namespace in scope: the Detail still carries the code
        fault.find(_env12("Code")).remove(subvalue.getparent())


#: envelope namespace → (the fault element, its codes qualified once in the envelope)
_SHAPES = {SOAP11_ENV: (soap11_fault, qualify_soap11), SOAP12_ENV: (soap12_fault, qualify_soap12)}


def fault_element(fault: GatewayFault, envelope_ns: str) -> etree._Element:
    """The fault in the shape of the SOAP version whose envelope namespace is ``envelope_ns``."""
    return _SHAPES[envelope_ns][0](fault)


def qualify(element: etree._Element) -> None:
    """Write the fault's codes as QNames, with the prefixes in scope where it now stands."""
    _SHAPES[etree.QName(element).namespace][1](element)


def fault_envelope(fault: GatewayFault, encoding: str = "utf-8", *, envelope_ns: str = SOAP11_ENV,
                   nsmap: dict | None = None) -> bytes:
    """A complete fault envelope in ``encoding``: every fault the gateway writes itself.

    ``nsmap`` is the envelope's namespace declarations (default: ``soap`` for the envelope
    namespace); the prefixes chosen there are the ones the fault's codes are written with."""
    envelope = etree.Element(f"{{{envelope_ns}}}Envelope", nsmap=nsmap or {"soap": envelope_ns})
    element = fault_element(fault, envelope_ns)
    etree.SubElement(envelope, f"{{{envelope_ns}}}Body").append(element)
    qualify(element)
    return etree.tostring(envelope, xml_declaration=True, encoding=encoding)


def soap12_status(fault: GatewayFault | None) -> str:
    """SOAP 1.2's HTTP status of a fault (part 2, §7.5.2): a Sender fault 400, a Receiver
    fault 500; a body above the limit 413.  (SOAP 1.1's is ``GatewayFault.http_status``.)"""
    if fault is not None and fault.gateway_code == "RequestTooLarge":
        return "413 Request Entity Too Large"
    if fault is not None and fault.faultcode == "Client":
        return "400 Bad Request"
    return "500 Internal Server Error"
