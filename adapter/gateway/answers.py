"""The operations of one SOAP endpoint (every one ``@written``), answered without spyne's
object model.

A request is read one way whatever its shape, the way spyne reads it: SOAP-encoding
``href``s resolved to their ``id``s, the operation element checked against the schema
(``check``: the same refusals), its arguments read by spyne's own
``from_element`` (``xsi:nil`` and all).  The call runs through ``perform_call``: the
authentication, role and scope check, audit record and faults of every operation.  The answer is written as text from the operation's declared out message
(``wire_text``), a ``FileContent`` streamed (``streamed``), a fault in spyne's shape for
the SOAP version.  ``tests/test_gateway_answers.py`` holds every answer, byte for byte,
against spyne's for the same request.
"""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Callable, Iterable, Mapping

from lxml import etree

from .. import compat  # noqa: F401  (before any spyne import)

from spyne.model.fault import Fault  # noqa: E402
from spyne.protocol.soap.soap11 import resolve_hrefs  # noqa: E402

from ..errors import IntegrityError  # noqa: E402
from ..services import audit as audit_service  # noqa: E402
from ..services.call_audit import CallAudit, client_address  # noqa: E402
from ..wsgi_keys import CORRELATION_KEY  # noqa: E402
from . import wire_text  # noqa: E402
from .faults import GatewayFault, fault_envelope, fault_from_error, fault_from_spyne  # noqa: E402
from .protocol import record_refusal  # noqa: E402
from .service import AUDIT_TARGETS, perform_call  # noqa: E402
from .streamed import FileContent, StreamedBody, base64_length  # noqa: E402
from .types import NAMESPACE  # noqa: E402

log = logging.getLogger(__name__)

#: Parses answers this module wrote itself (no DTD, no entities; long texts are fine).
_OWN_TEXT = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=True)


class WrittenAnswers:
    """Answers a ``@written`` operation's call on one endpoint.

    ``protocol`` is the endpoint's spyne input protocol (its schema check and argument
    reading); ``charset`` and ``content_type`` are the endpoint's answers'."""

    def __init__(self, services, version, *, protocol, charset: str, content_type: str) -> None:
        self.services = services
        self._version = version
        self._protocol = protocol
        # what spyne's ``from_element`` reads from its context: the interface (``xsi:type``)
        self._read_context = SimpleNamespace(app=protocol.app)
        self._charset = charset
        self._content_type = content_type
        ns, prefix = version.envelope_ns, version.answer_prefix
        self._head = (f"<?xml version='1.0' encoding='{charset}'?>\n<{prefix}:Envelope xmlns:{prefix}=\"{ns}\" "
                      f'xmlns:{wire_text.PREFIX}="{NAMESPACE}"><{prefix}:Body>')
        self._tail = f"</{prefix}:Body></{prefix}:Envelope>"

    def __call__(self, environ: dict, respond: Callable, envelope: etree._Element, descriptor) -> Iterable[bytes]:
        try:
            headers, arguments = self._read(envelope, descriptor, environ[CORRELATION_KEY])
        except GatewayFault as fault:  # no operation ran: refused as spyne refuses, and audited so
            record_refusal(self.services, environ, fault, "protocol")
            return self._fault(respond, fault)
        streamed: list[FileContent] = []  # closed here if the call fails after opening a file

        def run(call):
            result = descriptor.function(call, *arguments.values())
            streamed.extend(v for v in (result if isinstance(result, tuple) else (result,))
                            if isinstance(v, FileContent))
            return call.principal.username, result

        try:
            actor, result = perform_call(self.services, environ, descriptor.name, arguments, headers, run)
        except GatewayFault as fault:
            for content in streamed:
                content.close()
            return self._fault(respond, fault)
        text = self._envelope(wire_text.response(descriptor.out_message, result))
        if not streamed:
            return self._respond(respond, text)
        (content,) = streamed
        head, _, tail = text.rpartition(wire_text.CONTENT_MARK.encode("ascii"))
        length = len(head) + base64_length(content.size) + len(tail)
        respond("200 OK", [("Content-Type", self._content_type), ("Content-Length", str(length))])
        return StreamedBody(head, content, tail, _BreakReport(self.services, environ, descriptor.name, arguments,
                                                              actor).broken)

    def _read(self, envelope: etree._Element, descriptor, correlation_id: str) -> tuple[list | None, dict]:
        """The SOAP Header's children (None without one) and the arguments by wire name,
        read as spyne reads them (``spyne.protocol.soap.soap11``)."""
        try:
            ids = {e.get("id"): e for e in envelope.iter(etree.Element) if e.get("id")}
            if ids:
                resolve_hrefs(envelope, ids)
            ns = self._version.envelope_ns
            headers = envelope.findall(f"{{{ns}}}Header")
            element = next(e for e in envelope.find(f"{{{ns}}}Body") if isinstance(e.tag, str))
            self._protocol.check(element, correlation_id)
            message = descriptor.in_message
            values = self._protocol.from_element(self._read_context, message, element)
        except GatewayFault:
            raise
        except Fault as fault:
            raise fault_from_spyne(fault, correlation_id) from None
        except Exception as exc:  # noqa: BLE001 - an href to no id, say: a fault, never a traceback
            raise fault_from_error(exc, correlation_id) from None
        arguments = {name: getattr(values, name, None) for name in message._type_info}
        return (list(headers[0]) if headers else None), arguments

    def _envelope(self, response: str) -> bytes:
        text = f"{self._head}{response}{self._tail}"
        if self._charset == "UTF-8":
            return text.encode("utf-8")
        # libxml2 writes characters GBK lacks as character references, and its GBK is not
        # Python's (the euro sign): let it write the answer, as it does for spyne
        tree = etree.fromstring(text.replace(self._charset, "UTF-8", 1).encode("utf-8"), _OWN_TEXT)
        return etree.tostring(tree, xml_declaration=True, encoding=self._charset)

    def _respond(self, respond, body: bytes, status: str = "200 OK") -> list[bytes]:
        respond(status, [("Content-Type", self._content_type), ("Content-Length", str(len(body)))])
        return [body]

    def _fault(self, respond, fault: GatewayFault) -> list[bytes]:
        ns, prefix = self._version.envelope_ns, self._version.answer_prefix
        body = fault_envelope(fault, self._charset, envelope_ns=ns, nsmap={prefix: ns, "tns": NAMESPACE})
        return self._respond(respond, body, self._version.http_status(fault))


class _BreakReport:
    """Logs and audits an answer that broke off after it had started."""

    def __init__(self, services, environ: Mapping, operation: str, arguments: Mapping, actor: str) -> None:
        self._services, self._environ = services, environ
        self._operation, self._arguments, self._actor = operation, arguments, actor

    def broken(self, message: str) -> IntegrityError:
        correlation_id = self._environ.get(CORRELATION_KEY)
        log.error("%s [%s] aborted: %s", self._operation, correlation_id, message)
        audit = CallAudit(
            self._services.store, operation=self._operation, source=client_address(self._environ),
            correlation_id=correlation_id, actor=self._actor, clock=self._services.clock,
            targets=audit_service.targets_from(self._arguments, AUDIT_TARGETS.get(self._operation, ())),
        )
        audit.details["stage"] = "answer"
        audit.failed("Internal")
        return IntegrityError(message)
