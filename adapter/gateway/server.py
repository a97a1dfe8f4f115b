"""Serving the gateway with waitress.

waitress is a production WSGI server in pure Python: no C extension to build on the
customer's Windows or Linux box, runs on 3.11–3.13, a thread pool for the blocking
SQLAlchemy work, and it buffers each request fully (to a temp file above a threshold)
before the application sees it, so slow clients do not tie up worker threads.

A body larger than waitress will buffer is refused by waitress before the application
runs; that refusal is still answered by the application (``_BodyRefusedTask``), so the
caller meets the gateway's SOAP fault, never waitress's plain text.
"""

from __future__ import annotations

import io
import logging
import socket
import threading
import time
from dataclasses import dataclass

from waitress import wasyncore
from waitress.channel import HTTPChannel
from waitress.server import create_server
from waitress.task import ErrorTask, WSGITask
from waitress.utilities import RequestEntityTooLarge

from ..environment import listening
from .request_body import BODY_REFUSED_KEY
from .soap import SOAP11_PATH as SOAP_PATH

log = logging.getLogger(__name__)

#: waitress's own limit sits above the gateway's: a body between the two is read (to a
#: temporary file above 512 KiB) and refused by the application; one above waitress's
#: is refused after its headers (or, chunked, once past the limit) without reading on.
_WAITRESS_BODY_SLACK = 1024 * 1024
_WILDCARDS = ("", "0.0.0.0", "::", "[::]")
#: How long SIGTERM waits for requests in progress to be answered before closing anyway.
DRAIN_SECONDS = 10.0
_BACKLOG = 1024  # waitress's default (it calls listen() again with its own)


@dataclass
class GatewayHandle:
    """A gateway running in a background thread (tests, the demo)."""

    host: str
    port: int
    _server: object
    _thread: threading.Thread

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return self.base_url + SOAP_PATH

    @property
    def wsdl_url(self) -> str:
        return self.url + "?wsdl"

    def stop(self, timeout: float = 10.0) -> None:
        server = self._server
        trigger = server.trigger
        server.task_dispatcher.shutdown()
        # Close every socket from inside the event loop's own thread; the loop ends
        # when its socket map is empty.  The trigger's pipe stays open until the loop
        # has ended: a worker thread may have pulled the trigger a moment earlier, so
        # the loop can run this thunk before our own pull reaches the pipe, and a
        # pipe closed by the thunk would turn that pull into EBADF (or, were the fd
        # number reused meanwhile, a byte written into somebody else's file).
        trigger.pull_trigger(lambda: _close_all_but_trigger(server))
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("gateway on port %s did not stop within %.0f s", self.port, timeout)
            return
        trigger.close()


def _close_all_but_trigger(server) -> None:
    """Close every channel of ``server``'s map; the trigger only leaves the map."""
    socket_map, trigger = server._map, server.trigger
    for dispatcher in list(socket_map.values()):
        if dispatcher is trigger:
            continue
        try:
            if dispatcher is server:
                # The server's own close() would close the trigger too.
                wasyncore.dispatcher.close(server)
            else:
                dispatcher.close()
        except OSError:
            log.debug("closing %r", dispatcher, exc_info=True)
    trigger.del_channel()
    socket_map.clear()


class _BodyRefusedTask(WSGITask):
    """A request whose body waitress refused as too large, handed to the application
    anyway: with no body and ``BODY_REFUSED_KEY`` set, the gateway answers its own
    ``RequestTooLarge`` fault on whichever endpoint was asked (and audits it).  The
    rest of the body is never read, so the connection closes after the answer."""

    def get_environment(self):
        environ = super().get_environment()
        environ["wsgi.input"] = io.BytesIO()
        environ[BODY_REFUSED_KEY] = True
        return environ

    def execute(self):
        self.set_close_on_finish()
        super().execute()


def _error_task(channel, request):
    if isinstance(request.error, RequestEntityTooLarge):
        return _BodyRefusedTask(channel, request)
    return ErrorTask(channel, request)


class _GatewayChannel(HTTPChannel):
    error_task_class = staticmethod(_error_task)


def listening_socket(host: str, port: int) -> socket.socket:
    """Bind and listen on ``host:port`` before any process serves (``serve --processes N``):
    the parent holds the socket and every child accepts on it.  Bound as waitress binds."""
    with listening(host, port):  # a port taken or an address not ours: CannotListen
        family, kind, proto, _, address = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(_BACKLOG)
        except BaseException:
            sock.close()
            raise
    return sock


def _create(app, host: str, port: int, threads: int, sock: socket.socket | None = None):
    body_limit = getattr(app, "max_body_bytes", 20 * 1024 * 1024) + _WAITRESS_BODY_SLACK
    # waitress binds the socket itself unless handed one already listening (a pre-forked child's).
    where = {"host": host, "port": port} if sock is None else {"sockets": [sock]}
    with listening(host, port):  # a port taken or an address not ours: CannotListen
        server = create_server(
            app,
            **where,
            threads=threads,
            max_request_body_size=body_limit,
            ident="archive-oa",
            # X-Forwarded-* reach the application untouched: the gateway's one proxy policy
            # ([security] trusted_proxies, archive_oa.security.transport) decides whether they are
            # believed; waitress's own trusted_proxy stays unset, so it rewrites nothing itself.
            clear_untrusted_proxy_headers=False,
        )
    server.channel_class = _GatewayChannel
    # Port 0 picks a free port: without a configured public URL the WSDL names the one
    # actually bound.  A wildcard address names no host a client could use.
    if hasattr(app, "adopt_listening_url") and host not in _WILDCARDS:
        app.adopt_listening_url(f"http://{host}:{server.effective_port}")
    return server


def start_gateway(app, host: str = "127.0.0.1", port: int = 0, *, threads: int = 8) -> GatewayHandle:
    """Serve ``app`` on ``host:port`` (0 = a free port) in a daemon thread."""
    server = _create(app, host, port, threads)
    thread = threading.Thread(target=server.run, name=f"gateway-{server.effective_port}", daemon=True)
    thread.start()
    return GatewayHandle(host, int(server.effective_port), server, thread)


def serve_forever(app, host: str, port: int, *, threads: int = 8, on_ready=None,
                  sock: socket.socket | None = None) -> None:
    """Serve in the calling thread until interrupted (``archive-oa serve``); on ``sock``,
    already listening, when given (a pre-forked child, ``gateway.prefork``)."""
    server = _create(app, host, port, threads, sock)
    handle_url = f"http://{host}:{server.effective_port}{SOAP_PATH}"
    log.info("gateway listening on %s (WSDL %s?wsdl)", handle_url, handle_url)
    if on_ready is not None:
        on_ready(handle_url)
    try:
        # waitress's own run() would swallow the SystemExit of SIGTERM and stop at once,
        # dropping answers its threads are still writing; here the loop drains first.
        wasyncore.loop(timeout=server.adj.asyncore_loop_timeout, map=server._map,
                       use_poll=server.adj.asyncore_use_poll)
    except (SystemExit, KeyboardInterrupt):
        _drain(server, DRAIN_SECONDS)
    finally:
        server.task_dispatcher.shutdown()
        wasyncore.close_all(server._map)


def _drain(server, timeout: float) -> None:
    """Accept no more connections; run the loop until no channel holds a request or unsent
    bytes (idle keep-alive connections hold neither), ``timeout`` seconds at most."""
    wasyncore.dispatcher.close(server)  # the server's own close() would close the trigger too
    deadline = time.monotonic() + timeout
    while _busy(server._map) and time.monotonic() < deadline:
        wasyncore.loop(timeout=0.1, map=server._map, use_poll=server.adj.asyncore_use_poll, count=1)


def _busy(socket_map) -> bool:
    return any(getattr(channel, "requests", None) or getattr(channel, "total_outbufs_len", 0)
               for channel in list(socket_map.values()))
