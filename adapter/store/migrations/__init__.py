"""Alembic migrations of the store, run programmatically.

The scripts live in this package (``versions/``); the script location is found with
``importlib.resources`` so an installed copy works from any current directory, and
no ``alembic.ini`` is read.  The connection is handed to ``env.py`` through
``Config.attributes["connection"]``.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(Path(str(files(__name__)))))
    return config


def upgrade(engine: Engine, revision: str = "head") -> str | None:
    """Migrate the database to ``revision`` (default: the newest); return the revision reached.

    On SQLite the whole upgrade runs in one ``BEGIN IMMEDIATE`` transaction, so two
    processes starting at once migrate one after the other instead of racing.
    """
    config = alembic_config()
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            conn.execution_options(archive_oa_begin="IMMEDIATE")
        with conn.begin():
            config.attributes["connection"] = conn
            command.upgrade(config, revision)
            return MigrationContext.configure(conn).get_current_revision()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()
