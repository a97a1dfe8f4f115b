"""Fixtures shared by the test modules.

Databases: a test that asks for ``store`` (or ``db_settings``) runs once per backend,
``[sqlite]`` and ``[postgresql]``, on a fresh database each time.  PostgreSQL is a
server the session starts itself (``postgres_server.py``) or the one
``ARCHIVE_OA_TEST_POSTGRES_URL`` names.  Without PostgreSQL the ``[postgresql]`` runs
are skipped with the reason — except in CI (``CI=true``), where they fail: CI must
prove both backends.

Markers (setup.cfg): every test gets the layer of its module (``LAYERS`` below); the
``[postgresql]`` runs and the tests of the server itself get ``postgresql`` and ``slow``; the slow modules and tests mark
themselves ``slow``.  ``pytest -m "not slow"`` is the edit-and-run loop (docs/development.md).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from archive_oa.private_files import make_private_dir
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
    "test_environment_errors.py": "e2e",
    "test_examples.py": "integration",
    "test_external_clients.py": "e2e",
    "test_fault_runs.py": "e2e",
    "test_gateway.py": "integration",
    "test_gateway_units.py": "integration",
    "test_multi_instance.py": "e2e",
    "test_oa_driver_contract.py": "integration",
    "test_oa_client.py": "integration",
    "test_oa_simulator.py": "integration",
    "test_postgres_store.py": "integration",
    "test_prefork.py": "e2e",
    "test_realtime.py": "integration",
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
        on_postgresql = callspec is not None and callspec.params.get("backend") == "postgresql"
        if on_postgresql or "postgres" in getattr(item, "fixturenames", ()):
            item.add_marker("postgresql")
            # a fixture cost, not the test's: the session's server start (initdb) and a database
            # created from the migrated template per test; the [sqlite] run stays in the fast loop
            item.add_marker("slow")


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


@pytest.fixture(scope="session")
def migrated_sqlite(tmp_path_factory) -> Path:
    """A SQLite file migrated once per session: the ``[sqlite]`` stores start from a copy of it,
    as the ``[postgresql]`` ones start from a template database (migrating a new file per test
    costs about 0.1 s, a copy next to nothing)."""
    settings = load_settings(data_dir=tmp_path_factory.mktemp("migrated-sqlite"), env={})
    open_store(settings, upgrade=True).dispose()  # the last connection out checkpoints the WAL
    return Path(make_url(settings.database_url).database)


@pytest.fixture
def store(db_settings, database_url, request) -> Store:
    """An open store on the test's fresh database (migrated), disposed after the test."""
    if database_url:
        opened = open_store(db_settings, upgrade=True)
    else:
        template: Path = request.getfixturevalue("migrated_sqlite")
        make_private_dir(db_settings.data_dir)
        shutil.copy(template, make_url(db_settings.database_url).database)  # keeps its 0600
        opened = open_store(db_settings, upgrade=False)
    yield opened
    opened.dispose()
