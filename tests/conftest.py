"""Fixtures shared by the test modules.

Databases: a test that asks for ``store`` (or ``db_settings``) runs once per backend,
``[sqlite]`` and ``[postgresql]``, on a fresh database each time.  PostgreSQL is a
server the session starts itself (``postgres_server.py``) or the one
``ARCHIVE_OA_TEST_POSTGRES_URL`` names.  Without PostgreSQL the ``[postgresql]`` runs
are skipped with the reason — except in CI (``CI=true``), where they fail: CI must
prove both backends.

Markers (setup.cfg): every test gets the layer of its module (``LAYERS`` below) and the
``[postgresql]`` runs get ``postgresql``; the slow modules and tests mark themselves
``slow``.  ``pytest -m "not slow"`` is the edit-and-run loop (docs/development.md).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from archive_oa.settings import Settings, load_settings
from archive_oa.store.engine import Store, open_store

from postgres_server import PostgresCluster, PostgresUnavailable, TemporaryPostgres

BACKENDS = ("sqlite", "postgresql")

#: The layer of each test module: the outermost thing one of its tests needs.  A module
#: not named here is a unit module.
LAYERS = {
    "test_audit.py": "integration",
    "test_auth.py": "integration",
    "test_backup.py": "integration",
    "test_crash_runs.py": "e2e",
    "test_dead_letters.py": "integration",
    "test_demo.py": "e2e",
    "test_encodings.py": "integration",
    "test_examples.py": "integration",
    "test_external_clients.py": "e2e",
    "test_fault_runs.py": "e2e",
    "test_gateway.py": "integration",
    "test_gateway_units.py": "integration",
    "test_multi_instance.py": "e2e",
    "test_oa_client.py": "integration",
    "test_oa_simulator.py": "integration",
    "test_postgres_store.py": "integration",
    "test_reconcile.py": "integration",
    "test_security_attacks.py": "integration",
    "test_security_matrix.py": "integration",
    "test_soap12.py": "integration",
    "test_sync_cli.py": "e2e",
    "test_sync_simulator.py": "integration",
    "test_users_cli.py": "e2e",
}


def pytest_collection_modifyitems(items) -> None:
    for item in items:
        item.add_marker(LAYERS.get(item.path.name, "unit"))
        callspec = getattr(item, "callspec", None)
        if callspec is not None and callspec.params.get("backend") == "postgresql":
            item.add_marker("postgresql")


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
