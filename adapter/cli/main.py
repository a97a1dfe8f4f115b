"""Entry point of the ``archive-oa`` console script.

Each command module exposes ``register(subparsers)``; a registered command sets
``func(args) -> int`` as its handler.  ``AdapterError``s become one clear message and
exit code 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from .. import __version__
from ..errors import AdapterError

#: Command modules, in the order ``--help`` lists them.
COMMAND_MODULES = (
    "demo",
    "serve",
    "oa_sim",
    "importing",
    "sync",
    "transform",
    "db",
    "backup",
    "audit",
    "users",
    "config",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="archive-oa",
        description="Connects an accounting electronic archive (会计电子档案) with a legacy OA over SOAP.",
    )
    parser.add_argument("--version", action="version", version=f"archive-oa {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"{__package__}.{name}")
        except ModuleNotFoundError as exc:  # a command group not built yet
            if exc.name != f"{__package__}.{name}":
                raise
            continue
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=os.environ.get("ARCHIVE_OA_LOG_LEVEL", getattr(args, "log_level", "WARNING")).upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # zeep logs every envelope it sends at DEBUG: the OA account's UsernameToken password
    # and base64 attachments would land in the log.  Never below INFO, whatever the level.
    quietest = max(logging.getLogger().getEffectiveLevel(), logging.INFO)
    logging.getLogger("zeep.transports").setLevel(quietest)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except AdapterError as exc:
        print(f"archive-oa {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
