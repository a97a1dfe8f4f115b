"""``archive-oa db upgrade``: migrate the configured database to the newest schema."""

from __future__ import annotations

import argparse

from .common import add_common, settings_from


def register(subparsers) -> None:
    parser = subparsers.add_parser("db", help="database schema", description="Database schema commands.")
    commands = parser.add_subparsers(dest="db_command", metavar="SUBCOMMAND", required=True)
    upgrade = commands.add_parser(
        "upgrade",
        help="migrate the database to the newest schema",
        description=(
            "Run the Alembic migrations against the configured database "
            "([database] url or ARCHIVE_OA_DATABASE_URL; default the SQLite file in the data folder)."
        ),
    )
    upgrade.add_argument("--revision", default="head", help="target revision (default: head)")
    add_common(upgrade)
    upgrade.set_defaults(func=run_upgrade)


def run_upgrade(args: argparse.Namespace) -> int:
    from ..masking import mask_url
    from ..store import migrations
    from ..store.engine import open_store

    settings = settings_from(args)
    store = open_store(settings, upgrade=False)
    try:
        before = migrations.current_revision(store.engine)
        reached = migrations.upgrade(store.engine, args.revision)
    finally:
        store.dispose()
    url = mask_url(settings.database_url)
    if before == reached:
        print(f"{url}: already at revision {reached}")
    else:
        print(f"{url}: upgraded from {before or '(empty)'} to revision {reached}")
    return 0
