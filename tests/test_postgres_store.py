"""PostgreSQL itself: the server the tests start, migrations on an empty database, the pg_dump backup way."""

from __future__ import annotations

import datetime as dt
import importlib
import os
import pkgutil
import shutil
import subprocess
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import make_url

from archive_oa.cli.main import main
from archive_oa.samples import samples_dir
from archive_oa.services import audit, audit_verify
from archive_oa.services.archive import ArchiveDocumentCommand, ArchiveService, NewFile
from archive_oa.services.importer import import_paths
from archive_oa.settings import load_settings
from archive_oa import store as store_package
from archive_oa.store import migrations
from archive_oa.store.engine import open_store
from archive_oa.store.metadata import metadata
from archive_oa.transforms.pipeline import Transforms

from postgres_server import PostgresUnavailable, TemporaryPostgres, find_bindir

NOW = dt.datetime(2026, 10, 5, 8, 0, tzinfo=dt.timezone.utc)


def test_the_session_server_is_local_unprivileged_and_recent(postgres):
    if not isinstance(postgres, TemporaryPostgres):
        pytest.skip("ARCHIVE_OA_TEST_POSTGRES_URL names an existing server")
    engine = sa.create_engine(postgres.url("postgres"), poolclass=sa.NullPool)
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SHOW listen_addresses").scalar_one() == "127.0.0.1"
            assert int(conn.exec_driver_sql("SHOW server_version_num").scalar_one()) >= 150000
    finally:
        engine.dispose()
    assert postgres.data_dir.stat().st_uid != 0  # never root's files: the server runs unprivileged
    assert str(postgres.root).startswith("/") and postgres.port > 0


def test_missing_binaries_say_what_to_install(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.setattr("glob.glob", lambda pattern: [])
    with pytest.raises(PostgresUnavailable, match="apt-get install postgresql"):
        find_bindir()


def _all_tables_in_code():
    """Import every table module (``tables``, ``*_tables``) so ``metadata`` holds the whole schema."""
    for module in pkgutil.iter_modules(store_package.__path__):
        if module.name == "tables" or module.name.endswith("_tables"):
            importlib.import_module(f"{store_package.__name__}.{module.name}")


@pytest.mark.slow
def test_migrations_build_an_empty_postgresql_database_to_the_tables_in_code(postgres):
    _all_tables_in_code()
    url = postgres.create_database(migrated=False)
    engine = sa.create_engine(url, poolclass=sa.NullPool)
    try:
        assert migrations.current_revision(engine) is None
        head = migrations.head_revision()
        assert migrations.upgrade(engine) == head
        assert migrations.upgrade(engine) == head  # again: nothing to do
        with engine.connect() as conn:
            diffs = compare_metadata(MigrationContext.configure(conn), metadata)
        assert diffs == []
    finally:
        engine.dispose()
        postgres.drop_database(url)


# --- the documented backup way on PostgreSQL ---------------------------------------------------


def _libpq(url: str) -> tuple[str, dict]:
    """A libpq URL without the password, and the environment carrying it (as README advises)."""
    parsed = make_url(url)
    plain = parsed.set(drivername="postgresql").render_as_string(hide_password=False)
    plain = plain.replace(f":{parsed.password}@", "@") if parsed.password else plain
    return plain, {**os.environ, "PGPASSWORD": parsed.password or ""}


def _tables(url: str) -> dict[str, list[tuple]]:
    """Every row of every table of the store, in primary-key order."""
    engine = sa.create_engine(url, poolclass=sa.NullPool)
    try:
        with engine.connect() as conn:
            return {table.name: [tuple(row) for row in conn.execute(
                sa.select(table).order_by(*table.primary_key.columns))] for table in metadata.sorted_tables}
    finally:
        engine.dispose()


@pytest.mark.slow
def test_pg_dump_backup_and_pg_restore_round_trip(postgres, tmp_path, capsys, monkeypatch):
    _all_tables_in_code()
    try:
        bindir = find_bindir()
    except PostgresUnavailable as exc:
        pytest.skip(str(exc))
    source_url = postgres.create_database()
    settings = load_settings(data_dir=tmp_path / "live", env={"ARCHIVE_OA_DATABASE_URL": source_url})
    store = open_store(settings)
    try:
        import_paths(store, Transforms.from_settings(), [Path(str(samples_dir() / "HD01-2026-09.xml"))], now=NOW)
        ArchiveService(store, clock=lambda: NOW).archive_document(ArchiveDocumentCommand(
            source_system="ekp", source_id="FK-1", doc_type="PAYMENT", org_code="HD01", period="2026-09",
            title="付款单", amount=Decimal("88.00"),
            attachments=(NewFile("付款申请.pdf", "application/pdf", b"%PDF-1.4 payment"),)), None)
        with store.transaction(immediate=True) as conn:
            for n in range(3):
                audit.record(conn, actor="demo-admin", source="127.0.0.1", operation="AddUser",
                             targets=[f"username=u{n}"], outcome="OK", now=NOW)
        assert audit_verify.verify(store, audit_verify.checkpoint_path(settings)).ok
    finally:
        store.dispose()

    # archive-oa backup itself refuses and names the way
    monkeypatch.setenv("ARCHIVE_OA_DATABASE_URL", source_url)
    assert main(["backup", str(tmp_path / "no"), "--data-dir", str(settings.data_dir)]) == 2
    assert "pg_dump --format=custom" in capsys.readouterr().err

    # the README steps: checkpoint, dump, blobs
    folder = tmp_path / "bk"
    folder.mkdir()
    shutil.copy2(settings.data_dir / "audit-checkpoint.json", folder)
    libpq, env = _libpq(source_url)
    subprocess.run([str(bindir / "pg_dump"), "--format=custom", f"--file={folder / 'archive-oa.dump'}", libpq],
                   env=env, check=True, capture_output=True, timeout=120)
    shutil.copytree(settings.blob_dir, folder / "blobs")

    # restore into an empty database and data folder, blobs first
    target_url = postgres.create_database(migrated=False)
    target = load_settings(data_dir=tmp_path / "restored", env={"ARCHIVE_OA_DATABASE_URL": target_url})
    shutil.copytree(folder / "blobs", target.blob_dir)
    target_libpq, env = _libpq(target_url)
    subprocess.run([str(bindir / "pg_restore"), "--no-owner", "--exit-on-error", f"--dbname={target_libpq}",
                    str(folder / "archive-oa.dump")], env=env, check=True, capture_output=True, timeout=120)
    shutil.copy2(folder / "audit-checkpoint.json", target.data_dir / "audit-checkpoint.json")
    monkeypatch.setenv("ARCHIVE_OA_DATABASE_URL", target_url)

    before, after = _tables(source_url), _tables(target_url)
    assert after == before and len(before["vouchers"]) > 0 and len(before["audit_log"]) == 3
    assert main(["audit", "verify", "--data-dir", str(target.data_dir)]) == 0
    restored = open_store(target)
    try:
        with restored.transaction() as conn:
            shas = [row[0] for row in conn.exec_driver_sql("SELECT sha256 FROM attachments")]
        assert shas and all(restored.blobs.read(sha) for sha in shas)
    finally:
        restored.dispose()
    postgres.drop_database(source_url)
    postgres.drop_database(target_url)
