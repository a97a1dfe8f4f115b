"""``archive-oa serve``: the gateway SOAP service (waitress) and the sync scheduler."""

from __future__ import annotations

import argparse
import logging
import signal
import sys

from ..settings import Settings, setting_names
from .common import add_common, positive_int, settings_from


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="run the gateway SOAP service that OA platforms call (and the sync scheduler)",
        description=(
            "Serves the gateway at /soap/archive (WSDL at /soap/archive?wsdl, health at /healthz) "
            "with waitress, and runs scheduled delivery and polling unless --no-scheduler. "
            "The WSDL's soap:address is [gateway] public_url / ARCHIVE_OA_PUBLIC_URL when set."
        ),
    )
    add_common(parser)
    parser.add_argument("--host", metavar="H", help="listen address (default [gateway] host, 127.0.0.1)")
    parser.add_argument("--port", type=int, metavar="N", help="listen port (default [gateway] port, 8080; 0 = free port)")
    parser.add_argument("--threads", type=positive_int, metavar="N", help="worker threads (default [gateway] threads)")
    parser.add_argument(
        "--processes", type=positive_int, metavar="N",
        help="processes sharing the socket, each with its threads (default [gateway] processes, 1; needs fork)",
    )
    parser.add_argument(
        "--no-scheduler", action="store_true",
        help="serve the gateway only; run delivery and polling elsewhere (archive-oa worker)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..environment import listen_settings
    from ..gateway.prefork import require_fork, serve_preforked
    from ..gateway.server import listening_socket

    settings = serve_settings(args)
    gateway = settings.gateway
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    with listen_settings(host=setting_names("gateway", "host", "--host"),
                         port=setting_names("gateway", "port", "--port")):
        if gateway.processes == 1:
            _serve(settings, scheduler=not args.no_scheduler)
            return 0
        require_fork(gateway.processes)
        sock = listening_socket(gateway.host, gateway.port)
    # Slot 0 alone runs the scheduler and the checkpoint keeper (one of each per data folder:
    # two would move one checkpoint file and tick twice) and prints where it listens.
    with sock:
        return serve_preforked(gateway.processes, lambda slot, ready: _serve(
            settings, scheduler=not args.no_scheduler, first=slot == 0, sock=sock, on_ready=ready))


def _serve(settings: Settings, *, scheduler: bool, first: bool = True, sock=None, on_ready=None) -> None:
    """Build the adapter in this process and serve until SIGTERM (or Ctrl-C); on ``sock`` when
    pre-forked, where only the ``first`` process schedules, keeps the checkpoint and speaks."""
    from ..bootstrap import bootstrap
    from ..gateway.app import make_gateway_app
    from ..gateway.server import serve_forever
    from ..services.audit_verify import CheckpointKeeper, checkpoint_path

    gateway = settings.gateway
    with bootstrap(settings) as adapter:
        key_problem = adapter.users.key_problem()
        if key_problem and first:  # once, clearly, rather than an authentication failure per PasswordDigest call
            logging.getLogger(__name__).error("%s", key_problem)
        app = make_gateway_app(adapter)
        if scheduler and first:
            adapter.start_sync()
        # The audit chain's head, kept outside the database, so a cut tail shows in `audit verify`.
        keeper = None
        if first:
            keeper = CheckpointKeeper(adapter.store, checkpoint_path(settings), settings.security.audit_checkpoint_seconds)
            keeper.start()

        def ready(url: str) -> None:
            if first:
                print(f"gateway  {url}\nWSDL     {url}?wsdl\nhealth   {url.rsplit('/soap/', 1)[0]}/healthz", flush=True)
                print(f"WSDL soap:address = {app.public_url}/soap/archive", file=sys.stderr, flush=True)
            if on_ready is not None:
                on_ready()

        try:
            serve_forever(app, gateway.host, gateway.port, threads=gateway.threads, on_ready=ready, sock=sock)
        finally:  # leaving the with block stops delivery and polling (Adapter.close)
            if keeper is not None:
                keeper.stop()


def serve_settings(args: argparse.Namespace) -> Settings:
    """The settings with --host, --port, --threads and --processes applied, each recorded as its
    key's source."""
    given = {"host": args.host or None, "port": args.port, "threads": args.threads, "processes": args.processes}
    given = {key: value for key, value in given.items() if value is not None}
    return settings_from(args).replace(gateway=given, options={f"gateway.{key}": f"--{key}" for key in given})


def _stop_on_sigterm(signum, frame) -> None:
    """SIGTERM (service managers, containers) stops like Ctrl-C: waitress ends its loop."""
    raise SystemExit(0)
