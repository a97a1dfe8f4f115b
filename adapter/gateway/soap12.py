"""The gateway in SOAP 1.2: ``/soap12/archive`` and its own WSDL (``/soap12/archive?wsdl``).

The same ``GatewayService`` as SOAP 1.1 — the same operations, types, authentication,
roles, organisation scope and audit, all in its one call wrapper — behind a second
spyne ``Application`` whose protocol is SOAP 1.2.  Only the envelope differs:

- requests are ``application/soap+xml`` envelopes in ``http://www.w3.org/2003/05/soap-envelope``;
- answers are ``application/soap+xml; charset=<[gateway] response_encoding>``;
- a fault is ``env:Fault`` with ``Code/Value`` ``env:Sender`` (the caller must change the
  request) or ``env:Receiver``, a ``Subcode`` naming the stable code (``g:Validation`` …),
  ``Reason/Text`` and ``Detail`` holding the very ``GatewayFault`` element SOAP 1.1 sends;
  Sender faults answer HTTP 400 and Receiver faults 500 (SOAP 1.2 part 2, §7.5.2), a body
  above the limit 413.

spyne 2.14's ``Soap12`` writes a fault's detail only from a dict and its WSDL generator
picks the soap12 binding from the protocol; both are used here, the fault is written
by this module.  A SOAP 1.1 envelope posted here gets a SOAP 1.1 fault (SOAP 1.2
part 1, appendix A) pointing the caller to ``/soap/archive``.
"""

from __future__ import annotations

import copy
import io
import logging
from typing import Callable

from .. import compat  # noqa: F401  (before any spyne import)

from lxml import etree  # noqa: E402
from spyne import Application  # noqa: E402
from spyne.interface.wsdl import Wsdl11  # noqa: E402
from spyne.protocol.soap import Soap12  # noqa: E402
from spyne.server.wsgi import WsgiApplication  # noqa: E402

from .. import safexml  # noqa: E402
from ..errors import AdapterError, ValidationFailed  # noqa: E402
from . import encoding  # noqa: E402
from .app import (  # noqa: E402
    OPERATION_KEY,
    OPERATION_TAGS,
    answer_non_post,
    SOAP12_PATH,
    SOAP_PATH,
    _GatewaySoap11,
    _normalise_fault,
    _read_limited,
    _record_refusal,
    _stable_document,
)
from .auth import OPERATION_ACCESS  # noqa: E402
from .context import CORRELATION_KEY, GatewayServices  # noqa: E402
from .direct import DirectAnswers, SoapVersion  # noqa: E402
from .faults import SOAP11_ENV, GatewayFault, fault_envelope, fault_from_error  # noqa: E402
from .request_body import fingerprint  # noqa: E402
from .service import GatewayService  # noqa: E402
from .types import NAMESPACE  # noqa: E402

log = logging.getLogger(__name__)

SOAP12_ENV = "http://www.w3.org/2003/05/soap-envelope"
WSDL_SOAP12 = "http://schemas.xmlsoap.org/wsdl/soap12/"
MEDIA_TYPE = "application/soap+xml"
BINDING_NAME = "ArchiveGatewaySoap12"
_XML_NS = "http://www.w3.org/XML/1998/namespace"


def _env(name: str) -> str:
    return f"{{{SOAP12_ENV}}}{name}"


class GatewaySoap12(Soap12, _GatewaySoap11):
    """SOAP 1.2 with the gateway's schema validation (every failing place reported, from
    the SOAP 1.1 protocol it inherits) and faults in the gateway's shape."""

    def fault_to_parent(self, ctx, cls, inst, parent, ns, *args, **kwargs):
        fault = inst if isinstance(inst, GatewayFault) else _gateway_fault(inst, ctx)
        parent.append(fault_element(fault))

    def fault_to_http_response_code(self, fault):
        return http_status(fault if isinstance(fault, GatewayFault) else None)

    def serialize(self, ctx, message):
        super().serialize(ctx, message)
        if ctx.out_error is not None:
            # the fault's codes are QNames in text; spyne's namespace clean-up has chosen
            # the prefixes, so they are written now, with the prefixes in scope
            for fault in ctx.out_document.iter(_env("Fault")):
                qualify_codes(fault)


def _gateway_fault(fault, ctx) -> GatewayFault:
    # _normalise_fault has already turned spyne's own faults into GatewayFaults; this is
    # the safety net for anything raised after it ran
    environ = getattr(ctx.transport, "req_env", None) or {}
    return fault_from_error(fault, environ.get(CORRELATION_KEY) or "unknown")


def fault_element(fault: GatewayFault) -> etree._Element:
    """``env:Fault`` with Code (and the stable code as Subcode), Reason and Detail."""
    element = etree.Element(_env("Fault"))
    code = etree.SubElement(element, _env("Code"))
    # local names for now: qualify_codes writes them as QNames once the fault is in its envelope
    etree.SubElement(code, _env("Value")).text = "Sender" if fault.faultcode == "Client" else "Receiver"
    subcode = etree.SubElement(code, _env("Subcode"))
    etree.SubElement(subcode, _env("Value")).text = fault.gateway_code
    reason = etree.SubElement(element, _env("Reason"))
    text = etree.SubElement(reason, _env("Text"))
    text.set(f"{{{_XML_NS}}}lang", "en")
    text.text = fault.faultstring
    etree.SubElement(element, _env("Detail")).append(copy.deepcopy(fault.detail))
    return element


def qualify_codes(fault: etree._Element) -> None:
    """Code/Value as ``<env prefix>:Sender`` and Subcode/Value as ``<gateway prefix>:NotFound``,
    using whichever prefixes the envelope declares for the two namespaces."""
    value = fault.find(f"{_env('Code')}/{_env('Value')}")
    subvalue = fault.find(f"{_env('Code')}/{_env('Subcode')}/{_env('Value')}")
    prefixes = {uri: prefix for prefix, uri in subvalue.nsmap.items() if prefix}
    value.text = f"{prefixes[SOAP12_ENV]}:{value.text.rpartition(':')[2]}"
    if NAMESPACE in prefixes:
        subvalue.text = f"{prefixes[NAMESPACE]}:{subvalue.text.rpartition(':')[2]}"
    else:  # no prefix for the gateway namespace in scope: the Detail still carries the code
        fault.find(_env("Code")).remove(subvalue.getparent())


def http_status(fault: GatewayFault | None) -> str:
    if fault is not None and fault.gateway_code == "RequestTooLarge":
        return "413 Request Entity Too Large"
    if fault is not None and fault.faultcode == "Client":
        return "400 Bad Request"
    return "500 Internal Server Error"


#: SOAP 1.2 answers as spyne writes them, for the operations ``direct.py`` answers.
SOAP12 = SoapVersion(SOAP12_ENV, "soap12env", fault_element, qualify_codes, http_status)


def fault_envelope12(fault: GatewayFault, charset: str = encoding.UTF8) -> bytes:
    """A complete SOAP 1.2 fault envelope, for faults raised before spyne sees the request."""
    envelope = etree.Element(_env("Envelope"), nsmap={"soap": SOAP12_ENV, "g": NAMESPACE})
    element = fault_element(fault)
    etree.SubElement(envelope, _env("Body")).append(element)
    qualify_codes(element)
    return etree.tostring(envelope, xml_declaration=True, encoding=charset)


def build_soap12_application(
    services: GatewayServices | None, *, response_encoding: str = encoding.UTF8
) -> Application:
    out_protocol = GatewaySoap12(encoding=response_encoding)
    out_protocol.mime_type = encoding.content_type(MEDIA_TYPE, response_encoding)
    app = Application(
        [GatewayService],
        tns=NAMESPACE,
        name="ArchiveGateway",
        # huge_tree: the body has passed safexml under the [security] limits (as for SOAP 1.1)
        in_protocol=GatewaySoap12(validator="lxml", huge_tree=True),
        out_protocol=out_protocol,
    )
    app.gateway_services = services  # read by GatewayService.call_wrapper, as for SOAP 1.1
    app.event_manager.add_listener("method_exception_object", _normalise_fault)
    return app


def generate_soap12_wsdl(public_url: str) -> bytes:
    """The SOAP 1.2 WSDL with ``soap12:address`` = ``<public_url>/soap12/archive``."""
    app = build_soap12_application(None)
    WsgiApplication(app)  # sets app.transport, which the WSDL's binding names
    wsdl = Wsdl11(app.interface)
    wsdl.build_interface_document(public_url.rstrip("/") + SOAP12_PATH)
    return _stable_document(_named_soap12(wsdl.get_interface_document()))


def _named_soap12(document: bytes) -> bytes:
    """spyne names binding and port after the service, as in the SOAP 1.1 WSDL; here they
    are ``ArchiveGatewaySoap12``, so SoapUI, wsimport and svcutil show which one they use."""
    root = safexml.parse_bytes(document, source="generated WSDL").getroot()
    wsdl_ns = "http://schemas.xmlsoap.org/wsdl/"
    for binding in root.iter(f"{{{wsdl_ns}}}binding"):
        binding.set("name", BINDING_NAME)
    for port in root.iter(f"{{{wsdl_ns}}}port"):
        port.set("name", BINDING_NAME)
        port.set("binding", f"tns:{BINDING_NAME}")
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


class Soap12Endpoint:
    """The WSGI handler of ``/soap12/archive``, mounted by the ``GatewayApp`` it belongs to:
    the same services, body limit, XML policy, public URL and audit of refusals."""

    def __init__(self, gateway, *, response_encoding: str) -> None:
        self._gateway = gateway
        self._charset = encoding.response_charset(response_encoding)
        self._soap = WsgiApplication(
            build_soap12_application(gateway.services, response_encoding=self._charset),
            max_content_length=gateway.max_body_bytes,
        )
        self._direct = DirectAnswers(
            gateway.services, SOAP12, protocol=self._soap.app.in_protocol, charset=self._charset,
            content_type=self._soap.app.out_protocol.mime_type,
        )
        self._wsdl: tuple[str, bytes] | None = None

    def wsdl(self) -> bytes:
        url = self._gateway.public_url
        cached = self._wsdl  # (url, document), replaced whole: no lock needed
        if cached is None or cached[0] != url:
            cached = self._wsdl = (url, generate_soap12_wsdl(url))
        return cached[1]

    def __call__(self, environ: dict, respond: Callable) -> list[bytes]:
        correlation_id = environ[CORRELATION_KEY]
        answered = answer_non_post(environ, respond, self.wsdl, self._fault, "SOAP 1.2", SOAP12_PATH, correlation_id)
        if answered is not None:
            return answered
        try:
            body, envelope = self._checked_body(environ)
        except Exception as exc:  # noqa: BLE001 - every refusal is a fault, logged and audited once
            soap11 = isinstance(exc, _Soap11Envelope)
            fault = fault_from_error(exc.error if soap11 else exc, correlation_id)
            _record_refusal(self._gateway.services, environ, fault, "intake")
            return self._soap11_fault(respond, fault) if soap11 else self._fault(respond, fault)
        answered = self._direct(environ, respond, envelope)
        if answered is not None:
            return answered
        environ = dict(environ)
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        environ["CONTENT_TYPE"] = f"{MEDIA_TYPE}; charset=utf-8"
        return self._soap(environ, respond)

    def _checked_body(self, environ) -> tuple[bytes, etree._Element]:
        """The body as UTF-8 and its envelope, checked to be one SOAP 1.2 operation call; a body that
        fails is logged by its fingerprint only (as on the SOAP 1.1 endpoint)."""
        body = _read_limited(environ, self._gateway.max_body_bytes)
        try:
            return self._checked_envelope(environ, body)
        except (AdapterError, _Soap11Envelope) as exc:
            code = exc.error.code if isinstance(exc, _Soap11Envelope) else exc.code
            log.warning("request body refused [%s] (%s): %s", environ.get(CORRELATION_KEY), code, fingerprint(body))
            raise

    def _checked_envelope(self, environ, body: bytes) -> tuple[bytes, etree._Element]:
        _media_type, charset = encoding.parse_content_type(environ.get("CONTENT_TYPE"))
        body = encoding.request_as_utf8(body, charset)
        envelope = safexml.parse_bytes(body, source="request", policy=self._gateway.xml_policy).getroot()
        if envelope.tag == f"{{{SOAP11_ENV}}}Envelope":
            raise _Soap11Envelope(ValidationFailed(
                f"SOAP 1.1 envelope received on the SOAP 1.2 endpoint: POST it to {SOAP_PATH}, "
                f"or send a SOAP 1.2 envelope ({SOAP12_ENV})"
            ))
        if envelope.tag != _env("Envelope"):
            raise ValidationFailed(
                f"the request is {envelope.tag}, not a SOAP 1.2 Envelope: wrap the operation element in "
                f"soap:Envelope/soap:Body (soap = {SOAP12_ENV})"
            )
        bodies = envelope.findall(_env("Body"))
        if len(bodies) != 1:
            raise ValidationFailed("the Envelope must contain exactly one soap:Body with the operation element")
        calls = [child for child in bodies[0] if isinstance(child.tag, str)]
        if len(calls) != 1:
            raise ValidationFailed(f"soap:Body must contain exactly one operation element, found {len(calls)}")
        if calls[0].tag not in OPERATION_TAGS:
            raise ValidationFailed(
                f"unknown operation {calls[0].tag}: use one of {', '.join(sorted(OPERATION_ACCESS))} "
                f"in namespace {NAMESPACE}"
            )
        environ[OPERATION_KEY] = etree.QName(calls[0]).localname
        return body, envelope

    def _fault(self, respond, fault: GatewayFault, status: str | None = None, headers=()) -> list[bytes]:
        body = fault_envelope12(fault, self._charset)
        respond(status or http_status(fault), [
            ("Content-Type", encoding.content_type(MEDIA_TYPE, self._charset)),
            ("Content-Length", str(len(body))),
            *headers,
        ])
        return [body]

    def _soap11_fault(self, respond, fault: GatewayFault) -> list[bytes]:
        body = fault_envelope(fault, self._charset)
        respond(fault.http_status, [("Content-Type", encoding.content_type("text/xml", self._charset)),
                                    ("Content-Length", str(len(body)))])
        return [body]


class _Soap11Envelope(Exception):
    """A SOAP 1.1 caller on the 1.2 endpoint: it can only read a SOAP 1.1 fault."""

    def __init__(self, error: ValidationFailed) -> None:
        super().__init__(error.message)
        self.error = error
