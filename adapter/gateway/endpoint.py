"""One SOAP endpoint of the gateway, parameterised by its SOAP version (``soap.py``):
``/soap/archive`` is ``SoapEndpoint(SOAP11, …)``, ``/soap12/archive`` ``SoapEndpoint(SOAP12, …)``.

Whatever arrives is answered in SOAP — too large, not XML, a DTD, the wrong encoding,
not an envelope, no Body, an unknown operation: a fault with a stable code, never an
HTML error page.  ``GET ?wsdl`` is the version's WSDL, its address the configured
public URL rather than whatever host name the first caller used.  A checked request is
answered by ``answers.py``, the one way every operation declares (``@written``,
``service.py``) — never by the request's shape.
"""

from __future__ import annotations

from typing import Callable, Iterable

from .. import compat  # noqa: F401  (before any spyne import)

from .. import safexml  # noqa: E402
from ..wsgi_keys import CORRELATION_KEY  # noqa: E402
from .answers import WrittenAnswers  # noqa: E402
from .faults import GatewayFault, fault_envelope, fault_from_error  # noqa: E402
from .intake import ForeignEnvelope, read_request  # noqa: E402
from .protocol import build_application, record_refusal  # noqa: E402
from .service import GatewayService, is_written  # noqa: E402
from .soap import SoapVersion  # noqa: E402
from .wsdl import generate_wsdl  # noqa: E402


class SoapEndpoint:
    """The WSGI handler of one SOAP version's path, mounted by the gateway's router."""

    def __init__(self, version: SoapVersion, services, *, charset: str, max_body_bytes: int,
                 xml_policy: safexml.XmlPolicy, public_url: Callable[[], str]) -> None:
        self.version = version
        self._services = services
        self._charset = charset
        self._max_body_bytes = max_body_bytes
        self._xml_policy = xml_policy
        self._public_url = public_url
        unwritten = sorted(name for name, d in GatewayService.public_methods.items() if not is_written(d))
        if unwritten:  # nothing else would answer them
            raise TypeError(f"declare {', '.join(unwritten)} @written: the gateway answers every operation itself")
        self._written = WrittenAnswers(services, version, protocol=build_application(version.protocol).in_protocol,
                                       charset=charset, content_type=version.content_type(charset))
        self._wsdl: tuple[str, bytes] | None = None

    def wsdl(self) -> bytes:
        url = self._public_url()
        cached = self._wsdl  # (url, document), replaced whole: no lock needed
        if cached is None or cached[0] != url:
            cached = self._wsdl = (url, generate_wsdl(url, self.version))
        return cached[1]

    def __call__(self, environ: dict, respond: Callable) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET").upper()
        if method != "POST":
            return self._not_a_call(environ, respond, method)
        try:
            request = read_request(environ, self.version, limit=self._max_body_bytes, policy=self._xml_policy)
        except Exception as exc:  # noqa: BLE001 - every refusal is a fault, logged and audited once
            foreign = exc.version if isinstance(exc, ForeignEnvelope) else None
            fault = fault_from_error(exc.error if foreign else exc, environ[CORRELATION_KEY])
            record_refusal(self._services, environ, fault, "intake")
            return self.fault(respond, fault, version=foreign)
        return self._written(environ, respond, request.envelope, GatewayService.public_methods[request.operation])

    def _not_a_call(self, environ, respond, method: str) -> list[bytes]:
        """``GET|HEAD ?wsdl`` is the WSDL; any other method a 405 fault."""
        if method in ("GET", "HEAD") and environ.get("QUERY_STRING", "").split("=")[0].lower() == "wsdl":
            body = self.wsdl()
            respond("200 OK", [("Content-Type", "text/xml; charset=utf-8"), ("Content-Length", str(len(body)))])
            return [b""] if method == "HEAD" else [body]
        path = self.version.path
        fault = GatewayFault(
            "Validation", f"{method} is not allowed here: POST a {self.version.name} envelope, or GET {path}?wsdl",
            environ[CORRELATION_KEY],
        )
        return self.fault(respond, fault, "405 Method Not Allowed", [("Allow", "GET, POST")])

    def fault(self, respond, fault: GatewayFault, status: str | None = None, headers=(),
              version: SoapVersion | None = None) -> list[bytes]:
        """A fault raised before the request was read, in this endpoint's SOAP version —
        or in ``version``, the sender's, when it sent the other one's envelope."""
        version = version or self.version
        body = fault_envelope(fault, self._charset, envelope_ns=version.envelope_ns, nsmap=version.intake_nsmap)
        respond(status or version.http_status(fault), [
            ("Content-Type", self.version.content_type(self._charset, version.media_type)),
            ("Content-Length", str(len(body))),
            *headers,
        ])
        return [body]
