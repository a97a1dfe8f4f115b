"""The gateway's spyne protocols and ``Application``, one per SOAP version.

spyne reads a request into the operation's arguments, runs the ``@rpc`` method and
writes its answer; what the gateway changes in that, for both versions alike:

- the schema check forgives indentation in empty elements and reports every failing
  place, the missing required elements first (``schema_check``);
- every fault, spyne's own included (XML syntax, schema, unknown method), leaves in the
  gateway's shape (``faults``), logged once and, when no operation ran, audited once.
"""

from __future__ import annotations

import binascii
import logging
import threading
import uuid

from .. import compat  # noqa: F401  (before any spyne import)

from spyne import Application  # noqa: E402
from spyne.model.binary import BINARY_ENCODING_BASE64, BINARY_ENCODING_USE_DEFAULT  # noqa: E402
from spyne.protocol.soap import Soap11, Soap12  # noqa: E402

from ..services.call_audit import record_rejected_request  # noqa: E402
from ..wsgi_keys import CORRELATION_KEY, OPERATION_KEY, STARTED_KEY  # noqa: E402
from . import faults, schema_check  # noqa: E402
from .faults import GatewayFault, fault_from_error, fault_from_spyne  # noqa: E402
from .service import GatewayService  # noqa: E402
from .types import NAMESPACE  # noqa: E402

log = logging.getLogger(__name__)

#: spyne loggers that write a whole failed request (``%r in string %r``, "Failed document
#: is …") or a second copy of a fault this layer already logged: a body may be 20 MB,
#: binary, or carry a UsernameToken password, so they are kept quiet.
_SPYNE_BODY_LOGGERS = (
    "spyne.application.client",
    "spyne.application.server",
    "spyne.protocol.soap.soap11.invalid",
    "spyne.protocol.xml.invalid",
    "spyne.server._base",
    "spyne.server.wsgi",
)


class _GatewayProtocol:
    """What both SOAP versions' protocols add to spyne's (mixed in before the version's class)."""

    #: One compiled schema serves every thread, and its ``error_log`` is shared state:
    #: validate and read the log under a lock so requests never see each other's errors.
    _validation_lock = threading.Lock()

    def validate_body(self, ctx, message):
        if ctx.in_body_doc is not None:
            self.check(ctx.in_body_doc, _correlation_of(ctx))

    def check(self, element, correlation_id: str) -> None:
        """The schema check of an operation element, its forgiven indentation dropped first;
        a refusal is raised as the ``Validation`` fault (``schema_check.refusal``)."""
        schema = self.validation_schema
        if schema is None:
            return
        cls = self._prepare(element)
        with self._validation_lock:
            if schema.validate(element):
                return
            errors = [(e.path, e.message, e.line) for e in schema.error_log]
        raise schema_check.refusal(errors, element, cls, correlation_id)

    def _prepare(self, element):
        """The wire class of the operation ``element`` calls (``None`` if unknown), with
        the element's forgiven indentation dropped."""
        descriptors = self.app.interface.service_method_map.get(element.tag)
        if not descriptors:
            return None
        cls = descriptors[0].in_message
        schema_check.drop_indentation(element, cls)
        return cls

    def byte_array_from_element(self, ctx, cls, element):
        """An ``xs:base64Binary`` argument (an ArchiveDocument's file) decoded from its text
        at once.  spyne's ``ByteArray.from_base64`` first joins the text character by
        character, ``"".join(text)``: a list of one pointer a character, 16 MB alive for a
        2 MB file's text; the joined text is the text itself, so the bytes are the same."""
        text = element.text
        encoding = self.get_cls_attrs(cls).encoding
        if text and text.isascii() and encoding in (BINARY_ENCODING_USE_DEFAULT, BINARY_ENCODING_BASE64) \
                and self.binary_encoding == BINARY_ENCODING_BASE64:
            # ``b64decode`` would copy the text to bytes first; ``a2b_base64`` reads it in place
            return (binascii.a2b_base64(text),)  # spyne's value: a sequence of byte chunks
        return super().byte_array_from_element(ctx, cls, element)

    def fault_to_parent(self, ctx, cls, inst, parent, ns, *args, **kwargs):
        fault = inst if isinstance(inst, GatewayFault) else _gateway_fault(inst, ctx)
        parent.append(faults.fault_element(fault, self.ns_soap_env))

    def serialize(self, ctx, message):
        super().serialize(ctx, message)
        if ctx.out_error is not None:
            # the fault's codes are QNames in text; spyne's namespace clean-up has chosen
            # the prefixes, so they are written now, with the prefixes in scope
            for fault in ctx.out_document.iter(f"{{{self.ns_soap_env}}}Fault"):
                faults.qualify(fault)


class GatewaySoap11(_GatewayProtocol, Soap11):
    """SOAP 1.1 as the gateway speaks it."""


class GatewaySoap12(_GatewayProtocol, Soap12):
    """SOAP 1.2 as the gateway speaks it; a Sender fault answers 400, a Receiver fault 500
    (SOAP 1.2 part 2, §7.5.2), a body above the limit 413."""

    def fault_to_http_response_code(self, fault):
        return faults.soap12_status(fault if isinstance(fault, GatewayFault) else None)


def _gateway_fault(fault, ctx) -> GatewayFault:
    # _normalise_fault has already turned spyne's own faults into GatewayFaults; this is
    # the safety net for anything raised after it ran
    environ = getattr(ctx.transport, "req_env", None) or {}
    return fault_from_error(fault, environ.get(CORRELATION_KEY) or "unknown")


def build_application(protocol: type, services, *, content_type: str, response_encoding: str) -> Application:
    """The spyne ``Application`` of one SOAP version (``protocol``): the gateway's
    service, reading requests validated against the schema and answering in
    ``response_encoding`` with ``content_type``."""
    out_protocol = protocol(encoding=response_encoding)
    out_protocol.mime_type = content_type
    app = Application(
        [GatewayService],
        tns=NAMESPACE,
        name="ArchiveGateway",
        # The body reaching spyne has passed safexml under [security] limits; libxml2's
        # own 10 MB text-node cap would otherwise refuse a large base64 attachment
        # that those limits allow.
        in_protocol=protocol(validator="lxml", huge_tree=True),
        out_protocol=out_protocol,
    )
    app.gateway_services = services  # read by GatewayService.call_wrapper
    # Every fault is logged once, by fault_from_error or _normalise_fault, with its
    # correlation id; spyne would log each again, some with the whole request.
    for name in _SPYNE_BODY_LOGGERS:
        logging.getLogger(name).setLevel(logging.CRITICAL)
    app.event_manager.add_listener("method_exception_object", _normalise_fault)
    return app


def _correlation_of(ctx) -> str:
    environ = getattr(ctx.transport, "req_env", None) or {}
    return environ.get(CORRELATION_KEY) or uuid.uuid4().hex


def _normalise_fault(ctx) -> None:
    """spyne's own faults (schema, syntax, unknown method) get our detail and codes.

    A fault of the protocol stage (``in_error``: the request did not deserialise, so no
    operation ran and the call wrapper never saw it) is logged and audited here; faults
    of the call itself are audited by the call wrapper."""
    if ctx.out_error is not None and not isinstance(ctx.out_error, GatewayFault):
        fault = fault_from_spyne(ctx.out_error, _correlation_of(ctx))
        ctx.out_error = fault
        if ctx.in_error is not None:
            ctx.in_error = fault
    if ctx.in_error is not None and isinstance(ctx.out_error, GatewayFault):
        environ = getattr(ctx.transport, "req_env", None) or {}
        services = getattr(ctx.app, "gateway_services", None)
        if services is not None:
            record_refusal(services, environ, ctx.out_error, "protocol")


def record_refusal(services, environ, fault: GatewayFault, stage: str) -> None:
    """One log line and one audit record for a request refused before any operation ran."""
    rule = fault.issues[0].rule if fault.issues else None
    log.info("request refused at %s [%s]: %s", stage, fault.correlation_id, _clip(fault.faultstring))
    details = {"stage": stage, **({"rule": rule} if rule else {})}
    record_rejected_request(
        services.store, environ=environ, code=fault.gateway_code, correlation_id=fault.correlation_id,
        operation=environ.get(OPERATION_KEY), started=environ.get(STARTED_KEY), details=details,
    )


def _clip(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
