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
        "--no-scheduler", action="store_true",
        help="serve the gateway only; run delivery and polling elsewhere (archive-oa worker)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..bootstrap import bootstrap
    from ..environment import listen_settings
    from ..gateway.app import make_gateway_app
    from ..gateway.server import serve_forever
    from ..services.audit_verify import CheckpointKeeper, checkpoint_path

    settings = serve_settings(args)
    gateway = settings.gateway
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    with bootstrap(settings) as adapter:
        key_problem = adapter.users.key_problem()
        if key_problem:  # once, clearly, rather than an authentication failure per PasswordDigest call
            logging.getLogger(__name__).error("%s", key_problem)
        app = make_gateway_app(adapter)
        if not args.no_scheduler:
            adapter.start_sync()
        # The audit chain's head, kept outside the database, so a cut tail shows in `audit verify`.
        keeper = CheckpointKeeper(adapter.store, checkpoint_path(settings), settings.security.audit_checkpoint_seconds)
        keeper.start()

        def ready(url: str) -> None:
            print(f"gateway  {url}\nWSDL     {url}?wsdl\nhealth   {url.rsplit('/soap/', 1)[0]}/healthz", flush=True)
            print(f"WSDL soap:address = {app.public_url}/soap/archive", file=sys.stderr, flush=True)

        try:
            with listen_settings(host=setting_names("gateway", "host", "--host"),
                                 port=setting_names("gateway", "port", "--port")):
                serve_forever(app, gateway.host, gateway.port, threads=gateway.threads, on_ready=ready)
        finally:  # leaving the with block stops delivery and polling (Adapter.close)
            keeper.stop()
    return 0


def serve_settings(args: argparse.Namespace) -> Settings:
    """The settings with --host, --port and --threads applied, each recorded as its key's source."""
    given = {"host": args.host or None, "port": args.port, "threads": args.threads}
    given = {key: value for key, value in given.items() if value is not None}
    return settings_from(args).replace(gateway=given, options={f"gateway.{key}": f"--{key}" for key in given})


def _stop_on_sigterm(signum, frame) -> None:
    """SIGTERM (service managers, containers) stops like Ctrl-C: waitress ends its loop."""
    raise SystemExit(0)
