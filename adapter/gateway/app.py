"""The gateway's WSGI application: a router over a small table of paths.

``/soap/archive`` and ``/soap12/archive`` are the two SOAP endpoints (``endpoint.py``,
one class parameterised by the SOAP version), ``/healthz`` the health check
(``health.py``).  The router gives each request its correlation id, arrival time and
client address, dispatches on the path, and answers anything that escapes a handler
as a SOAP fault — never a traceback.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import uuid
from typing import Callable, Iterable

from .. import safexml
from ..settings import Settings
from ..wsgi_keys import CLIENT_ADDRESS_KEY, CORRELATION_KEY, ORIGIN_KEY, STARTED_KEY
from . import encoding
from .auth import PasswordAuthenticator
from .context import GatewayServices
from .endpoint import SoapEndpoint
from .faults import fault_from_error
from .health import Health
from .soap import SOAP11, SOAP12

log = logging.getLogger(__name__)

SOAP_PATH = SOAP11.path
SOAP12_PATH = SOAP12.path
_CORRELATION_HEADER = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


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
        self.max_body_bytes = settings.gateway.max_body_bytes  # the server sizes its own limit above it
        self._public_url = settings.public_url
        self._public_url_configured = bool(settings.gateway.public_url)
        self._url_lock = threading.Lock()
        endpoints = {
            version: SoapEndpoint(
                version, services, charset=encoding.response_charset(settings.gateway.response_encoding),
                max_body_bytes=self.max_body_bytes,
                xml_policy=safexml.XmlPolicy.soap_message(settings.security), public_url=lambda: self.public_url,
            )
            for version in (SOAP11, SOAP12)
        }
        #: what answers anything that escapes a handler: a SOAP 1.1 fault, as it always was
        self._last_resort = endpoints[SOAP11]
        self._routes: dict[str, Callable] = {"/healthz": Health(services)}
        self._routes.update((version.path, endpoint) for version, endpoint in endpoints.items())

    @property
    def public_url(self) -> str:
        return self._public_url

    def adopt_listening_url(self, url: str) -> None:
        """Called by the server once bound: without a configured public URL, the WSDL
        names the address actually listened on (port 0 picks a free port)."""
        if not self._public_url_configured:
            with self._url_lock:
                self._public_url = url.rstrip("/")

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        header = environ.get("HTTP_X_CORRELATION_ID", "")
        correlation_id = header if _CORRELATION_HEADER.match(header) else uuid.uuid4().hex
        environ[CORRELATION_KEY] = correlation_id
        environ[STARTED_KEY] = time.monotonic()
        environ[CLIENT_ADDRESS_KEY] = self._client_address(environ)

        def respond(status, headers, exc_info=None):
            return start_response(status, list(headers) + [("X-Correlation-Id", correlation_id)], exc_info)

        path = environ.get("PATH_INFO") or "/"
        handler = self._routes.get(path) or self._routes.get(path.rstrip("/"))
        try:
            if handler is None:
                return _plain(respond, "404 Not Found", f"nothing at {path}; the SOAP endpoint is {SOAP_PATH}\n")
            return handler(environ, respond)
        except Exception as exc:  # the last line of defence: still a SOAP fault, no traceback
            return self._last_resort.fault(respond, fault_from_error(exc, correlation_id))

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


def make_gateway_app(settings, services: GatewayServices | None = None) -> GatewayApp:
    """The gateway as a WSGI callable (``/soap/archive``, ``/soap12/archive``, ``?wsdl``, ``/healthz``).

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


def _plain(respond, status: str, text: str) -> list[bytes]:
    body = text.encode("utf-8")
    respond(status, [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))])
    return [body]
