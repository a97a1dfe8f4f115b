"""Operations answered beside spyne: ``GetAttachment`` streamed from its blob file, and
``GetVoucher`` and ``QueryVouchers`` written as text.

spyne builds a whole answer in memory: for ``GetAttachment`` of a 50 MB file that is the
bytes, their base64 text, the text inside the lxml tree, the serialized envelope and the
server's copy of it — 333 MB alive at once (bench B5).  Here the file travels in base64
pieces through a WSGI iterator: the envelope's head, the content, its tail.  For
``GetVoucher`` (the most frequent call) and ``QueryVouchers``, spyne's wire objects and
tree cost more than the rest of the call; ``wire_text`` writes the same answer straight from the mapping's fields.
Either way the answer is what spyne would write, byte for byte
(``tests/test_gateway_direct.py`` compares the two).

Only the answer is written differently.  A request is taken here when it has the plain
shape every client sends (see ``_plain_call``) and passes the same schema check spyne
applies; anything else — a schema error, ``xsi:nil``, SOAP-encoding ``href``s — is left to
spyne, which answers or refuses it as it always has.  The call itself runs through
``service.perform_call``, like spyne's: the same authentication, role and scope check,
audit record and faults, the faults written in spyne's shape for each SOAP version.
"""

from __future__ import annotations

import binascii
import dataclasses
import logging
from dataclasses import dataclass
from typing import Any, BinaryIO, Callable, Iterable, Iterator, Mapping

from lxml import etree

from ..errors import IntegrityError
from ..services import audit as audit_service
from ..services.call_audit import CallAudit, client_address
from . import mapping, wire_text
from . import types as wire
from ..wsgi_keys import CORRELATION_KEY
from .context import GatewayCall
from .faults import GatewayFault, fault_envelope
from . import service
from .service import AUDIT_TARGETS, perform_call
from .types import NAMESPACE
from .wire_text import element

log = logging.getLogger(__name__)

#: Raw bytes per piece of the streamed file: a multiple of 3, so every piece but the last
#: encodes to base64 without padding and the pieces join into one valid base64 text;
#: 768 KiB raw is 1 MiB of base64 — few system calls, little memory.
CHUNK_BYTES = 3 * 256 * 1024
#: Stands in for the content while the envelope is serialized.  The content element is
#: the answer's last, so the envelope is split at the mark's last occurrence: text of the
#: other fields (a file name) cannot move the split even if it held the same characters.
_MARK = "@@archive-oa-content@@"
#: Parses answers this module wrote itself (no DTD, no entities; long texts are fine).
_OWN_TEXT = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=True)


@dataclass(frozen=True)
class Answer:
    """What a direct operation hands back: the response element as text (for a streamed
    file, ``_MARK`` where its content goes) and the open file with its size."""

    response: str
    file: BinaryIO | None = None
    size: int = 0


class DirectAnswers:
    """The operations of one SOAP endpoint answered here; ``None`` leaves a request to spyne.

    ``protocol`` is the endpoint's spyne input protocol: its schema check (``is_valid``)
    and its reading of argument text (``from_unicode``) are used as they are;
    ``charset`` and ``content_type`` are those of spyne's answers on the endpoint."""

    def __init__(self, services, version, *, protocol, charset: str, content_type: str) -> None:
        self.services = services
        self._version = version
        self._protocol = protocol
        self._charset = charset
        self._content_type = content_type
        ns, prefix = version.envelope_ns, version.answer_prefix
        self._head = (f"<?xml version='1.0' encoding='{charset}'?>\n<{prefix}:Envelope xmlns:{prefix}=\"{ns}\" "
                      f'xmlns:{wire_text.PREFIX}="{NAMESPACE}"><{prefix}:Body>')
        self._tail = f"</{prefix}:Body></{prefix}:Envelope>"

    def __call__(self, environ: dict, respond: Callable, envelope: etree._Element) -> Iterable[bytes] | None:
        call = _plain_call(envelope, self._version.envelope_ns)
        if call is None or not self._protocol.is_valid(call.element):
            return None
        try:
            arguments = {name: self._protocol.from_unicode(call.operation.arguments[name], text)
                         for name, text in call.arguments.items()}
        except Exception:  # noqa: BLE001 - spyne refuses it again, in its words, and audits the refusal
            return None
        call = dataclasses.replace(call, arguments=arguments)
        opened: list[BinaryIO] = []  # closed here if the call fails after opening a file
        callers: list[str] = []

        def run(gateway_call: GatewayCall) -> Answer:
            callers.append(gateway_call.principal.username)
            answer = call.operation.handler(gateway_call, call.arguments)
            if answer.file is not None:
                opened.append(answer.file)
            return answer

        try:
            answer = perform_call(self.services, environ, call.operation.name, call.arguments, call.headers, run)
        except GatewayFault as fault:
            for file in opened:
                file.close()
            return self._fault(respond, fault)
        text = self._envelope(answer.response)
        if answer.file is None:
            return self._respond(respond, text)
        head, _, tail = text.rpartition(_MARK.encode("ascii"))
        length = len(head) + 4 * ((answer.size + 2) // 3) + len(tail)
        respond("200 OK", [("Content-Type", self._content_type), ("Content-Length", str(length))])
        report = _BreakReport(self.services, environ, call, callers[0])
        return _StreamedFile(head, answer.file, answer.size, tail, report)

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


# --- which requests are taken -------------------------------------------------------


_TNS = f"{{{NAMESPACE}}}"
_XML_ID = "{http://www.w3.org/XML/1998/namespace}id"


def _has_id(envelope: etree._Element) -> bool:
    """Whether any element carries an ``id`` or ``xml:id`` (spyne would follow SOAP-encoding
    references to it).  A walk of the few elements of a plain call: an lxml XPath would
    let go of the interpreter lock for its evaluator's lock, one more hand-over between
    the server's threads per request."""
    return any("id" in e.attrib or _XML_ID in e.attrib for e in envelope.iter(etree.Element))


@dataclass(frozen=True)
class _Operation:
    name: str
    arguments: Mapping[str, type]  # wire name → spyne type, as the @rpc method declares them
    handler: Callable[[GatewayCall, Mapping[str, Any]], Answer]


@dataclass(frozen=True)
class _Call:
    operation: _Operation
    element: etree._Element
    arguments: dict[str, Any]  # by wire name: the text, then the value spyne would read from it
    headers: list | None  # the first soap:Header's children, as spyne hands them on


def _plain_call(envelope: etree._Element, envelope_ns: str) -> _Call | None:
    """The call when the request has the plain shape, else None (spyne takes it).

    Plain: the operation element is the Body's first node; it and its argument elements
    carry no attributes (no ``xsi:nil``, ``xsi:type``, ``href``), each argument appears
    at most once and holds text only; no element anywhere has an ``id`` (spyne would
    resolve SOAP-encoding references through it).  The text is then what spyne reads
    (``element.text``); order and required arguments are the schema's to check."""
    body = envelope.find(f"{{{envelope_ns}}}Body")
    if body is None or len(body) == 0:
        return None
    element = body[0]
    operation = _OPERATIONS.get(element.tag)
    if operation is None or element.attrib:
        return None
    arguments = {}
    for child in element:
        name = child.tag[len(_TNS):] if child.tag.startswith(_TNS) else None
        if name not in operation.arguments or name in arguments or child.attrib or len(child):
            return None
        arguments[name] = child.text or ""
    if _has_id(envelope):
        return None
    headers = envelope.findall(f"{{{envelope_ns}}}Header")
    return _Call(operation, element, arguments, list(headers[0]) if headers else None)


# --- GetAttachment -----------------------------------------------------------------------


def get_attachment(call: GatewayCall, arguments: Mapping[str, Any]) -> Answer:
    """``GetAttachment``: the attachment's metadata and its blob, opened and checked by
    ``ArchiveService.open_attachment`` — not read, it is streamed."""
    meta, file = call.services.archive.open_attachment(arguments["attachmentId"], call.scope)
    response = wire_text.response("GetAttachment", [  # spyne leaves out an optional element without a value
        element("attachmentId", meta.attachment_id), element("fileName", meta.file_name),
        element("mimeType", meta.mime_type), element("size", None if meta.size is None else str(meta.size)),
        element("sha256", meta.sha256), element("content", _MARK),
    ])
    return Answer(response, file, meta.size)


def get_voucher(call: GatewayCall, arguments: Mapping[str, Any]) -> Answer:
    """``GetVoucher``: the service's voucher, through the mapping spyne's answer uses."""
    voucher = call.services.archive.get_voucher(arguments["voucherId"], call.scope)
    parts: list[str] = []
    wire_text.write_element("voucher", wire.Voucher, mapping.voucher_fields(voucher), parts)
    return Answer(wire_text.response("GetVoucher", parts))


def query_vouchers(call: GatewayCall, arguments: Mapping[str, Any]) -> Answer:
    """``QueryVouchers``: one page of summaries, through the query and mapping spyne's answer uses."""
    result = call.services.archive.query_vouchers(service.voucher_query(call.scope, **arguments))
    parts = [element("total", str(result.total)), element("page", str(result.page)),
             element("pageSize", str(result.page_size))]
    wire_text.write_element("items", service.SummaryList, [mapping.summary_fields(s) for s in result.items], parts)
    return Answer(wire_text.response("QueryVouchers", parts))


def _declared_arguments(name: str) -> dict[str, type]:
    """The operation's arguments by wire name with their spyne types, from its @rpc."""
    descriptor = service.GatewayService.public_methods[name]
    return dict(descriptor.in_message._type_info.items())


_OPERATIONS: dict[str, _Operation] = {
    f"{_TNS}{name}": _Operation(name, _declared_arguments(name), handler) for name, handler in (
        ("GetAttachment", get_attachment),
        ("GetVoucher", get_voucher),
        ("QueryVouchers", query_vouchers),
    )
}


class _StreamedFile:
    """The WSGI body of a streamed answer: head, the file in base64 pieces, tail.

    The file was checked just before; should it come out shorter or longer now (changed
    on disk since), the answer can no longer become a fault: the iterator raises, the
    server drops the connection, and the failure is logged and audited."""

    def __init__(self, head: bytes, file: BinaryIO, size: int, tail: bytes, report: _BreakReport) -> None:
        self._head, self._file, self._size, self._tail = head, file, size, tail
        self._report = report

    def __iter__(self) -> Iterator[bytes]:
        yield self._head
        buffer = bytearray(CHUNK_BYTES)
        sent = 0
        while n := _read_full(self._file, buffer):
            sent += n
            if sent > self._size:
                break
            yield binascii.b2a_base64(memoryview(buffer)[:n], newline=False)
        if sent != self._size:
            raise self._report.broken(f"the blob changed on disk while it was sent: {sent} bytes read, "
                                      f"{self._size} checked; the answer was cut off")
        yield self._tail

    def close(self) -> None:
        self._file.close()


def _read_full(file: BinaryIO, buffer: bytearray) -> int:
    """Fill ``buffer`` but at the end of the file: a short piece in the middle would put
    base64 padding inside the text."""
    view = memoryview(buffer)
    filled = 0
    while filled < len(buffer):
        n = file.readinto(view[filled:])
        if not n:
            break
        filled += n
    return filled


class _BreakReport:
    """Logs and audits an answer that broke off after it had started."""

    def __init__(self, services, environ: Mapping, call: _Call, actor: str) -> None:
        self._services, self._environ, self._call, self._actor = services, environ, call, actor

    def broken(self, message: str) -> IntegrityError:
        correlation_id = self._environ.get(CORRELATION_KEY)
        operation = self._call.operation.name
        log.error("%s [%s] aborted: %s", operation, correlation_id, message)
        audit = CallAudit(
            self._services.store, operation=operation, source=client_address(self._environ),
            correlation_id=correlation_id, actor=self._actor, clock=self._services.clock,
            targets=audit_service.targets_from(self._call.arguments, AUDIT_TARGETS.get(operation, ())),
        )
        audit.details["stage"] = "answer"
        audit.failed("Internal")
        return IntegrityError(message)
