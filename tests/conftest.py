"""Fixtures shared by the test modules.

Databases: a test that asks for ``store`` (or ``db_settings``) runs once per backend,
``[sqlite]`` and ``[postgresql]``, on a fresh database each time.  PostgreSQL is a
server the session starts itself (``postgres_server.py``) or the one
``ARCHIVE_OA_TEST_POSTGRES_URL`` names.  Without PostgreSQL the ``[postgresql]`` runs
are skipped with the reason — except in CI (``CI=true``), where they fail: CI must
prove both backends.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from archive_oa.settings import Settings, load_settings
from archive_oa.store.engine import Store, open_store

from postgres_server import PostgresCluster, PostgresUnavailable, TemporaryPostgres

BACKENDS = ("sqlite", "postgresql")


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


@pytest.fixture(scope="session")
def postgres():
    """The session's PostgreSQL server (started on first use, stopped at the end)."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        reason = "psycopg is not installed: pip install -e '.[test,postgres]'"
        (pytest.fail if in_ci() else pytest.skip)(reason)
    existing = os.environ.get("ARCHIVE_OA_TEST_POSTGRES_URL")
    if existing:
        cluster = PostgresCluster(existing)
        yield cluster
        cluster.close()
        return
    try:
        server = TemporaryPostgres.start()
    except PostgresUnavailable as exc:
        (pytest.fail if in_ci() else pytest.skip)(f"PostgreSQL: {exc}")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    """``sqlite`` or ``postgresql``: a test that uses it runs on both."""
    return request.param


@pytest.fixture
def database_url(backend, request) -> str:
    """A fresh, migrated database of ``backend``; empty string for the SQLite default file."""
    if backend == "sqlite":
        yield ""
        return
    cluster: PostgresCluster = request.getfixturevalue("postgres")
    url = cluster.create_database()
    yield url
    cluster.drop_database(url)


@pytest.fixture
def db_settings(database_url, tmp_path: Path) -> Settings:
    """Settings of a data folder in ``tmp_path`` on the test's database."""
    env = {"ARCHIVE_OA_DATABASE_URL": database_url} if database_url else {}
    return load_settings(data_dir=tmp_path / "data", env=env)


@pytest.fixture
def store(db_settings) -> Store:
    """An open store on the test's fresh database (migrated), disposed after the test."""
    opened = open_store(db_settings, upgrade=True)
    yield opened
    opened.dispose()
