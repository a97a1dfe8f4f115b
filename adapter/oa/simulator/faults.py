"""Fault injection and answer encoding: a WSGI layer in front of the spyne service.

For every SOAP call (POST) one random draw picks at most one fault:
- ``error``: a soap:Server fault, before the service runs (nothing committed);
- ``drop``: the connection is closed with no answer, before the service runs;
- ``ambiguous``: CreateWorkflowRequest runs and commits, then the answer is held past
  the client's timeout and the connection dropped; on other operations it is a drop.
Latency is added before every call.  Answers are re-encoded to the configured charset
(GBK answers carry it in both the Content-Type and the XML declaration, as legacy OA
stacks do).  The draws come from one seeded ``random.Random``, so a run with
``--seed`` repeats the same sequence of faults for the same sequence of calls.
A test can also script the next calls' faults (``fail_next``), which come before any draw.

A request may come in UTF-8, GBK or GB18030, named in the Content-Type, the XML
declaration or both (read as the gateway reads them, ``archive_oa.gateway.encoding``);
spyne is handed UTF-8.  Every request is read with ``archive_oa.safexml`` (SOAP message policy) before spyne
sees it: a DTD, an entity, XInclude, a processing instruction or a tree beyond the
limits is answered with a soap:Client fault and never reaches the service, and a body
above ``MAX_BODY_BYTES`` is refused without being read.
"""

from __future__ import annotations

import collections
import io
import logging
import random
import threading
import time
from typing import Callable
from xml.sax.saxutils import escape

from lxml import etree

from ... import safexml
from ...errors import ValidationFailed
from ...gateway.encoding import parse_content_type, request_as_utf8
from .config import SimulatorConfig

log = logging.getLogger(__name__)

SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
AMBIGUOUS_OPERATION = "CreateWorkflowRequest"  # the only call whose effect can be lost
#: The largest request read (the adapter's own [gateway] max_body_bytes default).
MAX_BODY_BYTES = 20 * 1024 * 1024
_REQUEST_POLICY = safexml.XmlPolicy.soap_message()


class DropConnection(Exception):
    """Tells the server to close the socket without sending anything."""


class FaultInjector:
    def __init__(
        self,
        app,
        config: Callable[[], SimulatorConfig],
        rng: random.Random,
        stopping: threading.Event | None = None,
    ) -> None:
        self._app = app
        self._config = config
        self._rng = rng
        self._rng_lock = threading.Lock()
        self._stopping = stopping or threading.Event()
        self.injected: dict[str, int] = {"error": 0, "drop": 0, "ambiguous": 0}
        self._scripted: collections.deque[str] = collections.deque()

    def __call__(self, environ, start_response):
        config = self._config()
        if environ.get("REQUEST_METHOD") != "POST":  # the WSDL and other reads: no faults
            return self._answer(environ, start_response, config.encoding)

        try:
            _media_type, charset = parse_content_type(environ.get("CONTENT_TYPE"))
            body = request_as_utf8(_read_body(environ), charset)
            operation = _operation_of(read_request(body))
        except ValidationFailed as refused:
            log.info("request refused: %s", refused.message[:300])
            return self._client_fault(start_response, config.encoding, refused.message)
        if config.latency_ms:
            time.sleep(config.latency_ms / 1000)
        fault = self._draw(config)
        if fault:
            with self._rng_lock:
                self.injected[fault] += 1
            log.info("injecting %s fault into %s", fault, operation)
        if fault == "error":
            return self._server_fault(start_response, config.encoding, operation)
        if fault == "drop" or (fault == "ambiguous" and operation != AMBIGUOUS_OPERATION):
            raise DropConnection(operation)

        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        environ["CONTENT_TYPE"] = "text/xml; charset=utf-8"  # what the body is now
        if fault == "ambiguous":
            captured = _Capture()
            b"".join(self._app(environ, captured))  # runs the call to the end: committed
            self._stopping.wait(config.ambiguous_hold)
            raise DropConnection(operation)
        return self._answer(environ, start_response, config.encoding)

    def fail_next(self, fault: str, calls: int = 1) -> None:
        """Inject ``fault`` (``error``, ``drop`` or ``ambiguous``) into the next ``calls`` calls, whatever the rates."""
        if fault not in self.injected:
            raise ValueError(f"fault {fault!r}: give one of {', '.join(self.injected)}")
        with self._rng_lock:
            self._scripted.extend([fault] * calls)

    def counts(self) -> dict[str, int]:
        """How many faults of each kind were injected so far."""
        with self._rng_lock:
            return dict(self.injected)

    def _draw(self, config: SimulatorConfig) -> str | None:
        with self._rng_lock:
            if self._scripted:
                return self._scripted.popleft()
        if not (config.error_rate or config.drop_rate or config.ambiguous_rate):
            return None
        with self._rng_lock:
            value = self._rng.random()
        for name, rate in (("error", config.error_rate), ("drop", config.drop_rate), ("ambiguous", config.ambiguous_rate)):
            if value < rate:
                return name
            value -= rate
        return None

    def _answer(self, environ, start_response, encoding: str):
        captured = _Capture()
        body = b"".join(self._app(environ, captured))
        headers = captured.headers
        if encoding.lower() != "utf-8" and _is_xml(headers):
            body = reencode(body, encoding)
            headers = [(k, v) for k, v in headers if k.lower() not in ("content-type", "content-length")]
            headers.append(("Content-Type", f"text/xml; charset={encoding.upper()}"))
        headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
        headers.append(("Content-Length", str(len(body))))
        start_response(captured.status, headers)
        return [body]

    @staticmethod
    def _server_fault(start_response, encoding: str, operation: str | None):
        message = f"simulated OA failure in {operation or 'the call'} (error-rate): 系统繁忙，请稍后再试"
        return _fault(start_response, encoding, "soap:Server", message)

    @staticmethod
    def _client_fault(start_response, encoding: str, message: str):
        return _fault(start_response, encoding, "soap:Client", message)


def _fault(start_response, encoding: str, code: str, message: str):
    body = (
        f'<?xml version="1.0" encoding="{encoding.upper()}"?>'
        f'<soap:Envelope xmlns:soap="{SOAP_ENV}"><soap:Body><soap:Fault>'
        f"<faultcode>{code}</faultcode><faultstring>{escape(message)}</faultstring>"
        "</soap:Fault></soap:Body></soap:Envelope>"
    ).encode(encoding, errors="xmlcharrefreplace")
    start_response(
        "500 Internal Server Error",
        [("Content-Type", f"text/xml; charset={encoding.upper()}"), ("Content-Length", str(len(body)))],
    )
    return [body]


def read_request(body: bytes) -> etree._Element:
    """The request envelope, read by safexml under the SOAP message policy
    (``ValidationFailed`` for a DTD, an entity, a PI, XInclude, a tree beyond the limits
    or malformed XML)."""
    return safexml.parse_bytes(body, source="request", policy=_REQUEST_POLICY).getroot()


def operation_name(body: bytes) -> str | None:
    """Local name of the first element in the SOAP Body, or None if it cannot be read."""
    try:
        return _operation_of(read_request(body))
    except ValidationFailed:
        return None


def _operation_of(root: etree._Element) -> str | None:
    found = root.find(f"{{{SOAP_ENV}}}Body")
    if found is None or len(found) == 0 or not isinstance(found[0].tag, str):
        return None
    return etree.QName(found[0]).localname


def reencode(body: bytes, encoding: str) -> bytes:
    """The same XML document in another charset, with a matching XML declaration."""
    document = safexml.parse_bytes(body, source="answer").getroot()
    return etree.tostring(document, encoding=encoding.upper(), xml_declaration=True)


def _read_body(environ) -> bytes:
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    if length > MAX_BODY_BYTES:
        raise ValidationFailed(f"the request body of {length} bytes exceeds {MAX_BODY_BYTES} bytes: send less")
    return environ["wsgi.input"].read(length) if length > 0 else b""


def _is_xml(headers) -> bool:
    content_type = next((v for k, v in headers if k.lower() == "content-type"), "")
    return "xml" in content_type


class _Capture:
    """A start_response that keeps status and headers for the layer to rewrite."""

    def __init__(self) -> None:
        self.status = "500 Internal Server Error"
        self.headers: list[tuple[str, str]] = []

    def __call__(self, status, headers, exc_info=None):
        self.status = status
        self.headers = list(headers)
        return lambda data: None
