"""The simulator's HTTP server and its embeddable handle.

A threaded ``wsgiref`` server with a handler that can close a connection without
answering: the fault layer needs the raw socket, which production servers rightly
hide.  That is acceptable here because the simulator is a test tool; the adapter's
gateway runs on a production server.
"""

from __future__ import annotations

import logging
import random
import sys
import threading
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Callable
from wsgiref.simple_server import ServerHandler, WSGIRequestHandler, WSGIServer

from ... import compat  # noqa: F401  (before any spyne import)
from ...environment import listening

from spyne.server.wsgi import WsgiApplication

from .config import ENDPOINT_PATH, SimulatorConfig
from .db import CompletedEntry, SimulatorDb
from .faults import MAX_BODY_BYTES, DropConnection, FaultInjector
from .rules import Decider
from .service import ServiceContext, build_application

log = logging.getLogger(__name__)


class _DroppingServerHandler(ServerHandler):
    def handle_error(self):
        if isinstance(sys.exc_info()[1], DropConnection):
            # send nothing; the request handler closes the socket when it returns
            self.request_handler.close_connection = True
            return
        super().handle_error()


class _RequestHandler(WSGIRequestHandler):
    def handle(self):
        # wsgiref's own handle(), with a ServerHandler that knows DropConnection
        self.raw_requestline = self.rfile.readline(65537)
        if len(self.raw_requestline) > 65536:
            self.send_error(414)
            return
        if not self.parse_request():
            return
        handler = _DroppingServerHandler(
            self.rfile, self.wfile, self.get_stderr(), self.get_environ(), multithread=True
        )
        handler.request_handler = self
        handler.run(self.server.get_app())

    def log_message(self, format, *args):  # noqa: A002 - wsgiref's signature
        log.debug("%s - %s", self.address_string(), format % args)


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    block_on_close = False  # a call held by the ambiguous fault must not block stop()
    allow_reuse_address = True
    request_queue_size = 128  # socketserver's 5 drops connects when many workers call at once


class _ConfigHolder:
    def __init__(self, config: SimulatorConfig) -> None:
        self._config = config
        self._lock = threading.Lock()

    def __call__(self) -> SimulatorConfig:
        return self._config

    def replace(self, **changes) -> SimulatorConfig:
        with self._lock:
            self._config = self._config.with_faults(**changes)
            return self._config


class SimulatorHandle:
    """A running simulator: its URLs, its database, its switches; ``stop()`` ends it."""

    def __init__(self, server, thread, db, holder, decider, injector, stopping) -> None:
        self._server = server
        self._thread = thread
        self.db: SimulatorDb = db
        self._holder = holder
        self.decider: Decider = decider
        self.injector: FaultInjector = injector
        self._stopping = stopping
        host, port = server.server_address[:2]
        self.host, self.port = host, port
        self.url = f"http://{host}:{port}{ENDPOINT_PATH}"
        self.wsdl_url = f"{self.url}?wsdl"

    @property
    def config(self) -> SimulatorConfig:
        return self._holder()

    def set_faults(self, **changes) -> SimulatorConfig:
        """Change switches while running, e.g. ``set_faults(error_rate=0, drop_rate=0)``."""
        return self._holder.replace(**changes)

    def stop(self) -> None:
        self._stopping.set()
        self.decider.stop()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
        self.db.close()

    def __enter__(self) -> "SimulatorHandle":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def build_wsgi_app(
    config: Callable[[], SimulatorConfig], db: SimulatorDb, rng: random.Random, stopping: threading.Event
) -> tuple[Callable, FaultInjector]:
    # spyne's own default would refuse bodies above 2 MiB: a workflow request with embedded
    # attachments is bigger; the fault injector already bounds what it reads.
    spyne_app = WsgiApplication(
        build_application(ServiceContext(db=db, config=config)), max_content_length=MAX_BODY_BYTES
    )
    injector = FaultInjector(spyne_app, config, rng, stopping)

    def dispatch(environ, start_response):
        if environ.get("PATH_INFO", "").rstrip("/") == ENDPOINT_PATH:
            return injector(environ, start_response)
        body = f"no service here; the OA workflow service is at {ENDPOINT_PATH} (WSDL: {ENDPOINT_PATH}?wsdl)\n"
        data = body.encode("utf-8")
        start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(data)))])
        return [data]

    return dispatch, injector


def start_simulator(
    config: SimulatorConfig,
    data_dir: str | Path,
    host: str = "127.0.0.1",
    port: int = 0,
    on_decided: Callable[[CompletedEntry], None] | None = None,
) -> SimulatorHandle:
    """Start the simulator on its own threads; port 0 picks a free port."""
    # spyne logs every client fault (wrong password, unknown id) with a traceback;
    # for the OA those are answers, not failures of the simulator
    logging.getLogger("spyne.application.client").setLevel(logging.CRITICAL)
    holder = _ConfigHolder(config)
    with listening(host, port):  # a port taken or an address not ours: CannotListen
        server = _ThreadingServer((host, port), _RequestHandler)
    try:
        db = SimulatorDb(data_dir)
    except BaseException:
        server.server_close()
        raise
    stopping = threading.Event()
    # separate streams, so the number of decisions does not shift the fault sequence
    fault_rng = random.Random(config.seed)
    decider_rng = random.Random(None if config.seed is None else config.seed + 1)
    app, injector = build_wsgi_app(holder, db, fault_rng, stopping)
    server.set_app(app)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, name="oa-sim-http", daemon=True)
    thread.start()
    decider = Decider(db, holder, on_decided, decider_rng)
    decider.start()
    handle = SimulatorHandle(server, thread, db, holder, decider, injector, stopping)
    log.info("OA simulator listening on %s", handle.url)
    return handle
