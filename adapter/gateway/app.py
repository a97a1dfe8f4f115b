"""The gateway's WSGI application: ``/soap/archive`` (SOAP 1.1 + ``?wsdl``), ``/soap12/archive``
(SOAP 1.2, see ``soap12.py``) and ``/healthz``.

spyne does the SOAP work — but for ``GetAttachment``, ``GetVoucher`` and ``QueryVouchers``,
which ``direct.py`` answers (the file streamed, the rest written as text) in the very
shape spyne writes.  This layer makes sure that whatever
arrives — too large, not XML, a DTD, the wrong encoding, not an envelope, no Body, an
unknown operation — is answered with a SOAP fault carrying a stable code, never an HTML
error page.  It also serves the WSDL with ``soap:address`` set to the configured public
URL rather than whatever host name the first caller used.
"""

from __future__ import annotations

import io
import json
import logging
import re
import threading
import time
import uuid
from typing import Callable, Iterable

from .. import compat  # noqa: F401  (before any spyne import)

from lxml import etree  # noqa: E402
from spyne import Application  # noqa: E402
from spyne.interface.wsdl import Wsdl11  # noqa: E402
from spyne.protocol.soap import Soap11  # noqa: E402
from spyne.server.wsgi import WsgiApplication  # noqa: E402

from .. import safexml  # noqa: E402
from ..services.call_audit import CLIENT_ADDRESS_KEY, record_rejected_request  # noqa: E402
from . import encoding, schema_check, wsdl_shape  # noqa: E402
from ..errors import AdapterError, ValidationFailed  # noqa: E402
from ..settings import Settings  # noqa: E402
from .auth import OPERATION_ACCESS, ORIGIN_KEY, PasswordAuthenticator  # noqa: E402
from .context import CORRELATION_KEY, GatewayServices  # noqa: E402
from .faults import SOAP11_ENV, GatewayFault, fault_envelope, fault_from_error, fault_from_spyne  # noqa: E402
from .request_body import decode_content, fingerprint, read_limited  # noqa: E402
from .service import GatewayService  # noqa: E402
from .types import NAMESPACE  # noqa: E402

log = logging.getLogger(__name__)

SOAP_PATH = "/soap/archive"
SOAP12_PATH = "/soap12/archive"
SOAP12_ENV = "http://www.w3.org/2003/05/soap-envelope"
_CORRELATION_HEADER = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
#: The operation elements a SOAP 1.1 Body may hold.
OPERATION_TAGS = frozenset(f"{{{NAMESPACE}}}{name}" for name in OPERATION_ACCESS)
#: WSGI environ keys set by this layer: when the request arrived (``time.monotonic()``)
#: and the operation its envelope names, once checked (for the audit of refusals).
STARTED_KEY = "archive_oa.started"
OPERATION_KEY = "archive_oa.operation"
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


class _GatewaySoap11(Soap11):
    """SOAP 1.1 whose schema validation forgives indentation in empty elements and reports
    every failing place, the missing required elements first (``schema_check``)."""

    #: One compiled schema serves every thread, and its ``error_log`` is shared state:
    #: validate and read the log under a lock so requests never see each other's errors.
    _validation_lock = threading.Lock()

    def validate_body(self, ctx, message):
        schema = self.validation_schema
        if schema is None or ctx.in_body_doc is None:
            return
        cls = self._prepare(ctx.in_body_doc)
        with self._validation_lock:
            if schema.validate(ctx.in_body_doc):
                return
            errors = [(e.path, e.message, e.line) for e in schema.error_log]
        raise schema_check.refusal(errors, ctx.in_body_doc, cls, _correlation_of(ctx))

    def is_valid(self, element) -> bool:
        """The check ``validate_body`` makes, as a yes or no (for the direct answers)."""
        self._prepare(element)
        with self._validation_lock:
            return bool(self.validation_schema.validate(element))

    def _prepare(self, element):
        """The wire class of the operation ``element`` calls (``None`` if unknown), with
        the element's forgiven indentation dropped."""
        descriptors = self.app.interface.service_method_map.get(element.tag)
        if not descriptors:
            return None
        cls = descriptors[0].in_message
        schema_check.drop_indentation(element, cls)
        return cls


def build_application(services: GatewayServices | None, *, response_encoding: str = "utf-8") -> Application:
    out_protocol = Soap11(encoding=response_encoding)
    out_protocol.mime_type = f"text/xml; charset={response_encoding.lower()}"
    app = Application(
        [GatewayService],
        tns=NAMESPACE,
        name="ArchiveGateway",
        # The body reaching spyne has passed safexml under [security] limits; libxml2's
        # own 10 MB text-node cap would otherwise refuse a large base64 attachment
        # that those limits allow.
        in_protocol=_GatewaySoap11(validator="lxml", huge_tree=True),
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
            _record_refusal(services, environ, ctx.out_error, "protocol")


def _record_refusal(services, environ, fault: GatewayFault, stage: str) -> None:
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


def generate_wsdl(public_url: str) -> bytes:
    """The gateway's WSDL with ``soap:address`` = ``<public_url>/soap/archive``."""
    app = build_application(None)
    WsgiApplication(app)  # sets app.transport, which the WSDL's binding names
    wsdl = Wsdl11(app.interface)
    wsdl.build_interface_document(public_url.rstrip("/") + SOAP_PATH)
    return _stable_document(wsdl.get_interface_document())


def _stable_document(document: bytes) -> bytes:
    """spyne emits schema declarations in hash order; sorted by kind and name they are
    the same on every run (their order has no meaning in XSD), so the checked-in WSDL
    can be compared byte for byte.  Pretty-printed UTF-8 keeps 中文 readable."""
    root = safexml.parse_bytes(document, source="generated WSDL").getroot()
    wsdl_shape.tidy(root)
    for schema in root.iter("{http://www.w3.org/2001/XMLSchema}schema"):
        declarations = sorted(schema, key=lambda e: (etree.QName(e).localname, e.get("name") or ""))
        for child in declarations:
            schema.remove(child)
        imports = [e for e in declarations if etree.QName(e).localname == "import"]
        for child in imports + [e for e in declarations if e not in imports]:
            schema.append(child)
    etree.indent(root, space="  ")
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)


def build_gateway_services(settings: Settings, store, *, transforms=None, sync=None) -> GatewayServices:
    """The default wiring: archive service, password authenticator, optional sync service."""
    from ..services.archive import ArchiveService
    from ..services.users import UserService

    return GatewayServices(
        store=store,
        archive=ArchiveService(store, transforms),
        authenticator=PasswordAuthenticator(UserService(store, settings=settings)),
        sync=sync,
    )


class GatewayApp:
    """The WSGI callable; see ``make_gateway_app``."""

    def __init__(self, settings: Settings, services: GatewayServices) -> None:
        self.services = services
        self.max_body_bytes = settings.gateway.max_body_bytes
        self.xml_policy = safexml.XmlPolicy.soap_message(settings.security)
        self._public_url = settings.public_url
        self._public_url_configured = bool(settings.gateway.public_url)
        self._encoding = encoding.response_charset(settings.gateway.response_encoding)
        self._soap = WsgiApplication(
            build_application(services, response_encoding=self._encoding),
            max_content_length=self.max_body_bytes,
        )
        from .direct import SOAP11, DirectAnswers  # imported here: they build on this module
        from .soap12 import Soap12Endpoint

        self._direct = DirectAnswers(
            services, SOAP11, protocol=self._soap.app.in_protocol, charset=self._encoding,
            content_type=self._soap.app.out_protocol.mime_type,
        )
        self._soap12 = Soap12Endpoint(self, response_encoding=self._encoding)
        self._wsdl_lock = threading.Lock()
        self._wsdl: bytes | None = None

    @property
    def public_url(self) -> str:
        return self._public_url

    def adopt_listening_url(self, url: str) -> None:
        """Called by the server once bound: without a configured public URL, the WSDL
        names the address actually listened on (port 0 picks a free port)."""
        if not self._public_url_configured:
            with self._wsdl_lock:
                self._public_url, self._wsdl = url.rstrip("/"), None

    def wsdl(self) -> bytes:
        with self._wsdl_lock:
            if self._wsdl is None:
                self._wsdl = generate_wsdl(self._public_url)
            return self._wsdl

    # --- WSGI ----------------------------------------------------------------

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        header = environ.get("HTTP_X_CORRELATION_ID", "")
        correlation_id = header if _CORRELATION_HEADER.match(header) else uuid.uuid4().hex
        environ[CORRELATION_KEY] = correlation_id
        environ[STARTED_KEY] = time.monotonic()
        environ[CLIENT_ADDRESS_KEY] = self._client_address(environ)

        def respond(status, headers, exc_info=None):
            return start_response(status, list(headers) + [("X-Correlation-Id", correlation_id)], exc_info)

        path = environ.get("PATH_INFO") or "/"
        try:
            if path == "/healthz":
                return self._healthz(respond)
            if path.rstrip("/") == SOAP_PATH:
                return self._soap_endpoint(environ, respond, correlation_id)
            if path.rstrip("/") == SOAP12_PATH:
                return self._soap12(environ, respond)
            return _plain(respond, "404 Not Found", f"nothing at {path}; the SOAP endpoint is {SOAP_PATH}\n")
        except Exception as exc:  # the last line of defence: still a SOAP fault, no traceback
            return self._fault(respond, fault_from_error(exc, correlation_id))

    def _healthz(self, respond) -> list[bytes]:
        try:
            reachable = bool(self.services.store.ping())
        except Exception:  # noqa: BLE001 - a broken store is exactly what healthz reports
            log.exception("health check: store.ping failed")
            reachable = False
        body = json.dumps(
            {"status": "ok" if reachable else "unavailable", "database": reachable, "version": self.services.version}
        ).encode()
        status = "200 OK" if reachable else "503 Service Unavailable"
        respond(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]

    def _soap_endpoint(self, environ, respond, correlation_id):
        answered = answer_non_post(environ, respond, self.wsdl, self._fault, "SOAP 1.1", SOAP_PATH, correlation_id)
        if answered is not None:
            return answered
        try:
            body, content_type, envelope = self._checked_body(environ)
        except Exception as exc:  # noqa: BLE001 - every refusal is a fault, logged and audited once
            fault = fault_from_error(exc, correlation_id)
            _record_refusal(self.services, environ, fault, "intake")
            return self._fault(respond, fault)
        answered = self._direct(environ, respond, envelope)
        if answered is not None:
            return answered
        environ = dict(environ)
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        environ["CONTENT_TYPE"] = content_type
        return self._soap(environ, respond)

    def _client_address(self, environ) -> str | None:
        """The caller's address with trusted proxies applied, for audit records; the whole
        ``Origin`` is kept under ``ORIGIN_KEY`` for authentication (worked out once)."""
        origin = getattr(self.services.authenticator, "origin", None)
        try:
            found = origin(environ) if origin else None
        except Exception:  # noqa: BLE001 - a bad forwarding header must not cost the answer
            return environ.get("REMOTE_ADDR")  # authentication meets the same error again
        if found is None:
            return environ.get("REMOTE_ADDR")
        environ[ORIGIN_KEY] = found
        return found.address

    def _checked_body(self, environ) -> tuple[bytes, str, etree._Element]:
        """The request body, read and inflated within the limit and checked to be one
        SOAP 1.1 operation call; returned as UTF-8 bytes spyne parses without a charset
        header, with their parsed envelope.  A body that fails is logged by its
        fingerprint only."""
        body = _read_limited(environ, self.max_body_bytes)
        try:
            return self._checked_envelope(environ, body)
        except AdapterError as exc:
            log.warning("request body refused [%s] (%s): %s", environ.get(CORRELATION_KEY), exc.code,
                        fingerprint(body))
            raise

    def _checked_envelope(self, environ, body: bytes) -> tuple[bytes, str, etree._Element]:
        media_type, charset = _content_type(environ.get("CONTENT_TYPE"))
        if media_type == "application/soap+xml":
            raise ValidationFailed(f"SOAP 1.2 is served at {SOAP12_PATH}: send SOAP 1.1 here with Content-Type text/xml")
        body = encoding.request_as_utf8(body, charset)
        envelope = safexml.parse_bytes(body, source="request", policy=self.xml_policy).getroot()
        if envelope.tag == f"{{{SOAP12_ENV}}}Envelope":
            raise ValidationFailed(
                f"SOAP 1.2 envelope received: send a SOAP 1.1 envelope ({SOAP11_ENV}) here, or SOAP 1.2 to {SOAP12_PATH}"
            )
        if envelope.tag != f"{{{SOAP11_ENV}}}Envelope":
            raise ValidationFailed(
                f"the request is {envelope.tag}, not a SOAP 1.1 Envelope: wrap the operation element in "
                f"soap:Envelope/soap:Body (soap = {SOAP11_ENV})"
            )
        bodies = envelope.findall(f"{{{SOAP11_ENV}}}Body")
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
        environ[OPERATION_KEY] = etree.QName(operation).localname
        return body, "text/xml", envelope

    def _fault(self, respond, fault: GatewayFault, status: str | None = None, headers=()) -> list[bytes]:
        body = fault_envelope(fault, self._encoding)
        respond(
            status or fault.http_status,
            [
                ("Content-Type", f"text/xml; charset={self._encoding.lower()}"),
                ("Content-Length", str(len(body))),
                *headers,
            ],
        )
        return [body]


def make_gateway_app(settings, services: GatewayServices | None = None) -> GatewayApp:
    """The gateway as a WSGI callable (``/soap/archive``, ``?wsdl``, ``/healthz``).

    ``make_gateway_app(settings, services)``, or ``make_gateway_app(adapter)`` with the
    wired ``archive_oa.bootstrap.Adapter`` (its settings, store, archive, users, sync and metrics).
    """
    if services is None:
        adapter = settings
        settings = adapter.settings
        services = GatewayServices(
            store=adapter.store,
            archive=adapter.archive,
            authenticator=PasswordAuthenticator(adapter.users),
            sync=_LazySync(adapter),
            metrics=adapter.metrics,
        )
    return GatewayApp(settings, services)


class _LazySync:
    """``adapter.sync`` built on first use: the OA client behind it is only needed by
    the sync operations, so the gateway starts (and reads work) without it."""

    def __init__(self, adapter) -> None:
        self._adapter = adapter

    def __getattr__(self, name):
        return getattr(self._adapter.sync, name)


def _read_limited(environ, limit: int) -> bytes:
    """The request body within ``limit`` bytes, read and — for ``Content-Encoding: gzip``
    or ``deflate`` — inflated to at most ``limit`` bytes (see ``request_body``)."""
    return decode_content(read_limited(environ, limit), environ.get("HTTP_CONTENT_ENCODING"), limit)


def _content_type(header: str | None) -> tuple[str, str | None]:
    if not header:
        return "text/xml", None
    media_type, *params = [part.strip() for part in header.split(";")]
    charset = None
    for param in params:
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset":
            charset = value.strip().strip("\"'").lower() or None
    return media_type.lower(), charset


def _plain(respond, status: str, text: str) -> list[bytes]:
    body = text.encode("utf-8")
    respond(status, [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))])
    return [body]


def answer_non_post(environ, respond, wsdl, fault_response, protocol: str, path: str, correlation_id: str):
    """What a SOAP endpoint answers to anything but a POST: its WSDL to ``GET|HEAD ?wsdl``,
    a 405 fault to any other method; ``None`` for a POST, which the endpoint handles."""
    method = environ.get("REQUEST_METHOD", "GET").upper()
    if method in ("GET", "HEAD") and environ.get("QUERY_STRING", "").split("=")[0].lower() == "wsdl":
        body = wsdl()
        respond("200 OK", [("Content-Type", "text/xml; charset=utf-8"), ("Content-Length", str(len(body)))])
        return [b""] if method == "HEAD" else [body]
    if method != "POST":
        fault = GatewayFault(
            "Validation", f"{method} is not allowed here: POST a {protocol} envelope, or GET {path}?wsdl",
            correlation_id,
        )
        return fault_response(respond, fault, "405 Method Not Allowed", [("Allow", "GET, POST")])
    return None
