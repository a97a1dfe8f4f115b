"""``archive-oa backup`` / ``restore``: round trip, consistency while writing, refusals, tampering."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import os
import shutil
import sqlite3
import stat
import threading
from decimal import Decimal
from pathlib import Path

import pytest
import zeep
from sqlalchemy import select
from zeep.wsse.username import UsernameToken

from archive_oa.cli.main import main
from archive_oa.domain.model import AttachmentKind, AttachmentMeta, Voucher
from archive_oa.errors import Conflict, ConfigurationError, IntegrityError
from archive_oa.gateway.app import build_gateway_services, make_gateway_app
from archive_oa.gateway.server import start_gateway
from archive_oa.security.secrets import KEY_FILE_NAME, generate_key, key_id
from archive_oa.samples import samples_dir
from archive_oa.services import audit, audit_verify
from archive_oa.services.archive import ArchiveDocumentCommand, ArchiveService, NewFile
from archive_oa.services.backup import backup, read_manifest, restore, verify_backup
from archive_oa.services.backup_manifest import table_states
from archive_oa.services.importer import import_paths
from archive_oa.services.users import UserService
from archive_oa.settings import load_settings
from archive_oa.store import vouchers as repo
from archive_oa.store.audit_tables import audit_log
from archive_oa.store.blobs import BlobStore
from archive_oa.store.engine import open_store
from archive_oa.store.tables import vouchers as vouchers_table
from archive_oa.transforms.pipeline import Transforms

import factories

NOW = dt.datetime(2026, 10, 5, 8, 0, tzinfo=dt.timezone.utc)


def settings_in(folder: Path):
    return load_settings(data_dir=folder, env={})


def audit_rows(settings) -> list[dict]:
    store = open_store(settings, upgrade=False)
    try:
        with store.transaction() as conn:
            return [dict(row) for row in conn.execute(select(audit_log).order_by(audit_log.c.seq)).mappings()]
    finally:
        store.dispose()


def content_hashes(settings) -> set[tuple[str, int, str]]:
    store = open_store(settings, upgrade=False)
    try:
        with store.transaction() as conn:
            return {tuple(row) for row in conn.execute(
                select(vouchers_table.c.voucher_id, vouchers_table.c.version, vouchers_table.c.content_hash))}
    finally:
        store.dispose()


@pytest.fixture(scope="module")
def source_template(tmp_path_factory):
    """A data folder with sample vouchers (attachments), archived documents, audit records and a checkpoint."""
    settings = settings_in(tmp_path_factory.mktemp("backup-source") / "live")
    store = open_store(settings)
    try:
        samples = samples_dir()
        report = import_paths(store, Transforms.from_settings(),
                              [Path(str(samples / "HD01-2026-09.xml")), Path(str(samples / "HN02-2026-10.xml"))],
                              now=NOW)
        assert report.ok and report.created > 0
        service = ArchiveService(store, clock=lambda: NOW)
        for n in range(3):
            service.archive_document(ArchiveDocumentCommand(
                source_system="ekp", source_id=f"FK-{n}", doc_type="PAYMENT", org_code="HD01", period="2026-09",
                title=f"付款单 {n}", amount=Decimal("1200.50"),
                attachments=(NewFile(f"付款申请-{n}.pdf", "application/pdf", f"%PDF-1.4 payment {n}".encode()),)), None)
        with store.transaction(immediate=True) as conn:
            for n in range(5):
                audit.record(conn, actor="demo-operator", source="127.0.0.1", operation="TriggerSync",
                             targets=[f"orgCode=HD01", f"n={n}"], outcome="OK", now=NOW)
        assert audit_verify.verify(store, audit_verify.checkpoint_path(settings)).ok  # writes the checkpoint
    finally:
        store.dispose()
    return settings


@pytest.fixture
def source(source_template, tmp_path):
    """A copy of the template data folder (closed, so a plain copy is exact) for one test to change."""
    shutil.copytree(source_template.data_dir, tmp_path / "live")
    return settings_in(tmp_path / "live")


# --- round trip ------------------------------------------------------------------------------


def test_round_trip_keeps_counts_content_hashes_blobs_and_the_audit_chain(source, tmp_path, capsys):
    before_tables = table_states(source.data_dir / "archive-oa.db")
    before_audit = audit_rows(source)
    assert main(["backup", str(tmp_path / "bk"), "--data-dir", str(source.data_dir)]) == 0
    out = capsys.readouterr().out
    assert "backup written to" in out and "audit chain" in out

    manifest = read_manifest(tmp_path / "bk")
    assert manifest.tables["vouchers"] == before_tables["vouchers"]
    assert manifest.tables["audit_log"] == before_tables["audit_log"]  # the Backup record came after the snapshot
    assert manifest.audit["head_seq"] == len(before_audit) and manifest.audit["chain_ok"]
    assert manifest.audit["checkpoint"] == "audit-checkpoint.json"
    live_blobs = {p.name for p in (source.blob_dir).glob("??/??/*")}
    assert set(manifest.blobs) == live_blobs and len(live_blobs) >= 3 + 1
    after_backup = audit_rows(source)  # the live log records who took the backup
    assert after_backup[-1]["operation"] == "Backup" and after_backup[:-1] == before_audit

    target = settings_in(tmp_path / "restored")
    assert main(["restore", str(tmp_path / "bk"), "--data-dir", str(target.data_dir)]) == 0
    assert "audit record #" in capsys.readouterr().out

    restored_tables = table_states(target.data_dir / "archive-oa.db")
    for name, state in before_tables.items():
        if name != "audit_log":
            assert restored_tables[name] == state, name  # every row of every table
    assert content_hashes(target) == content_hashes(source)
    restored_audit = audit_rows(target)
    assert restored_audit[:len(before_audit)] == before_audit
    assert [r["operation"] for r in restored_audit[len(before_audit):]] == ["Restore"]
    assert restored_audit[-1]["prev_hash"] == before_audit[-1]["hash"]  # the chain goes on from the backup's head

    blobs = BlobStore(target.blob_dir)
    for digest, size in manifest.blobs.items():
        assert len(blobs.read(digest)) == size  # read() checks the sha256 again
    store = open_store(target)
    try:
        result = audit_verify.verify(store, audit_verify.checkpoint_path(target))
        assert result.ok and result.head_seq == len(before_audit) + 1
        with store.transaction() as conn:
            voucher_id = conn.execute(select(vouchers_table.c.voucher_id).limit(1)).scalar_one()
            assert repo.load_voucher(conn, voucher_id) is not None
    finally:
        store.dispose()
    assert main(["audit", "verify", "--data-dir", str(target.data_dir)]) == 0


# --- consistent while the store is written ---------------------------------------------------


def _voucher(n: int, attachment: AttachmentMeta) -> Voucher:
    return factories.voucher(
        f"XB03-2026-11-J-{n:05d}", org="XB03", org_name="西部科技", fonds="Z003", period="2026-11", day=3, no=n,
        preparer="赵敏", amount=100 + n, credit=("1001", "库存现金"), lines=("报销差旅费", "现金支付"),
        attachments=(attachment,),
    )


@pytest.mark.slow
def test_backups_taken_while_writing_are_consistent_and_restore(tmp_path):
    settings = settings_in(tmp_path / "live")
    store = open_store(settings)
    stop, written, errors = threading.Event(), [0], []

    def writer():  # as the importer does: the blob first, then the row naming it, audited
        try:
            n = 0
            while not stop.is_set():
                n += 1
                data = f"invoice {n} ".encode() * 50
                meta = AttachmentMeta(f"ATT-{n}", f"invoice-{n}.txt", "text/plain", len(data),
                                      hashlib.sha256(data).hexdigest(), AttachmentKind.INVOICE)
                store.blobs.put(data)
                voucher = _voucher(n, meta)
                with store.transaction(immediate=True) as conn:
                    repo.save_voucher(conn, voucher, f"hash-{n}", NOW)
                    audit.record(conn, actor="importer", source="test", operation="Import",
                                 targets=[f"voucherId={voucher.voucher_id}"], outcome="OK", now=NOW)
                written[0] = n
        except Exception as exc:  # reported by the test thread
            errors.append(exc)

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    try:
        counts = []
        for i in range(4):
            while written[0] < 20 * (i + 1) and thread.is_alive():
                stop.wait(0.01)
            result = backup(settings, tmp_path / f"bk{i}")
            assert result.complete, result.manifest.missing_blobs
            counts.append(result.manifest.tables["vouchers"].rows)
    finally:
        stop.set()
        thread.join(30)
        store.dispose()
    assert not errors, errors
    assert counts == sorted(counts) and counts[0] < counts[-1], f"the writer ran during the backups: {counts}"
    for i, rows in enumerate(counts):
        manifest = verify_backup(tmp_path / f"bk{i}")
        assert manifest.tables["attachments"].rows == rows  # each snapshot: every voucher with its attachment
        assert manifest.audit["chain_ok"]
    target = settings_in(tmp_path / "restored")
    restored = restore(target, tmp_path / "bk3")
    assert restored.audit_problem is None
    store = open_store(target)
    try:
        with store.transaction() as conn:
            for voucher_id in [f"XB03-2026-11-J-{n:05d}" for n in (1, counts[-1])]:
                voucher = repo.load_voucher(conn, voucher_id)
                assert store.blobs.read(voucher.attachments[0].sha256)
    finally:
        store.dispose()


# --- refusals --------------------------------------------------------------------------------


def test_restore_refuses_a_non_empty_store_unless_forced(source, tmp_path, capsys):
    backup(source, tmp_path / "bk")
    before = table_states(source.data_dir / "archive-oa.db")
    assert main(["restore", str(tmp_path / "bk"), "--data-dir", str(source.data_dir)]) == 2
    err = capsys.readouterr().err
    assert "is not empty" in err and "vouchers:" in err and "--force" in err
    assert table_states(source.data_dir / "archive-oa.db") == before  # untouched

    # something changes after the backup; --force brings the backup's state back
    store = open_store(source)
    with store.transaction(immediate=True) as conn:
        conn.execute(vouchers_table.delete().where(vouchers_table.c.voucher_no == 1))
    store.dispose()
    result = restore(source, tmp_path / "bk", force=True)
    assert result.replaced
    assert table_states(source.data_dir / "archive-oa.db")["vouchers"] == before["vouchers"]
    assert main(["audit", "verify", "--data-dir", str(source.data_dir)]) == 0  # checkpoint moved with the restore


def test_backup_refuses_an_existing_folder_and_restore_a_folder_without_manifest(source, tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("keep me")
    with pytest.raises(Conflict, match="not empty"):
        backup(source, tmp_path / "full")
    assert (tmp_path / "full" / "x").read_text() == "keep me"
    assert main(["restore", str(tmp_path / "full"), "--data-dir", str(tmp_path / "t")]) == 2
    assert not list(tmp_path.glob(".full.partial-*")) and not list(tmp_path.glob(".*partial*"))


def test_on_postgresql_both_commands_print_the_pg_dump_way(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("ARCHIVE_OA_DATABASE_URL", "postgresql+psycopg://archive:s3cret@db.example:5432/archive")
    for command in ("backup", "restore"):
        assert main([command, str(tmp_path / "bk"), "--data-dir", str(tmp_path / "d")]) == 2
        err = capsys.readouterr().err
        assert "pg_dump --format=custom" in err and "pg_restore" in err and "blobs" in err
        assert "secret.key" in err and "umask 077" in err
        assert "postgresql://archive@db.example:5432/archive" in err and "s3cret" not in err
    assert not (tmp_path / "bk").exists()
    monkeypatch.setenv("ARCHIVE_OA_DATABASE_URL", "postgresql+psycopg://archive@db.example/archive?password=q-s3cret")
    assert main(["backup", str(tmp_path / "bk"), "--data-dir", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err
    assert "q-s3cret" not in err and "password=********" in err and "'postgresql://archive@db.example/archive'" in err
    monkeypatch.setenv("ARCHIVE_OA_DATABASE_URL", "mysql://archive:my-s3cret@db.example/archive")
    assert main(["backup", str(tmp_path / "bk"), "--data-dir", str(tmp_path / "d")]) == 2
    assert "my-s3cret" not in capsys.readouterr().err
    settings = load_settings(data_dir=tmp_path / "d", env={"ARCHIVE_OA_DATABASE_URL": "postgresql+psycopg://x@h/db"})
    with pytest.raises(ConfigurationError, match="PostgreSQL"):
        backup(settings, tmp_path / "bk")


# --- damaged backups are refused before anything changes -------------------------------------


def _restore_refused(folder: Path, tmp_path: Path, match: str) -> None:
    target = settings_in(tmp_path / "target")
    with pytest.raises(IntegrityError, match=match):
        restore(target, folder)
    assert not (target.data_dir / "archive-oa.db").exists() and not list(target.blob_dir.glob("??/??/*"))


def test_a_changed_blob_is_refused(source, tmp_path):
    backup(source, tmp_path / "bk")
    victim = sorted((tmp_path / "bk" / "blobs").glob("??/??/*"))[0]
    victim.write_bytes(victim.read_bytes() + b"!")
    _restore_refused(tmp_path / "bk", tmp_path, victim.name)


def test_a_missing_blob_is_refused(source, tmp_path):
    backup(source, tmp_path / "bk")
    sorted((tmp_path / "bk" / "blobs").glob("??/??/*"))[-1].unlink()
    _restore_refused(tmp_path / "bk", tmp_path, "blobs differ from the manifest")


def test_a_changed_database_is_refused_even_with_a_matching_file_hash(source, tmp_path):
    backup(source, tmp_path / "bk")
    database = tmp_path / "bk" / "archive-oa.db"
    with sqlite3.connect(database) as conn:
        conn.execute("UPDATE vouchers SET summary = 'changed' WHERE rowid = 1")
    conn.close()
    _restore_refused(tmp_path / "bk", tmp_path, "hashes to")
    manifest_path = tmp_path / "bk" / "manifest.json"  # a forger who also fixes the file hash
    body = json.loads(manifest_path.read_text())
    body["database"]["sha256"] = hashlib.sha256(database.read_bytes()).hexdigest()
    manifest_path.write_text(json.dumps(body))
    _restore_refused(tmp_path / "bk", tmp_path, "differs from the manifest in 1 tables: vouchers")


def test_a_broken_audit_chain_is_reported_and_restored_only_with_force(source, tmp_path, capsys):
    database = source.data_dir / "archive-oa.db"
    with sqlite3.connect(database) as conn:  # someone edits a record behind the log's back
        conn.execute("UPDATE audit_log SET outcome = 'Denied' WHERE seq = 2")
    conn.close()
    assert main(["backup", str(tmp_path / "bk"), "--data-dir", str(source.data_dir)]) == 1
    assert "audit chain is broken" in capsys.readouterr().err
    manifest = read_manifest(tmp_path / "bk")
    assert not manifest.audit["chain_ok"] and "record 2" in manifest.audit["problem"]
    target = settings_in(tmp_path / "target")
    with pytest.raises(IntegrityError, match="--force"):
        restore(target, tmp_path / "bk")
    result = restore(target, tmp_path / "bk", force=True)
    assert result.audit_problem and "record 2" in result.audit_problem


def test_a_backup_of_an_empty_store_restores(tmp_path):
    settings = settings_in(tmp_path / "empty")
    open_store(settings).dispose()
    result = backup(settings, tmp_path / "bk")
    assert result.manifest.blobs == {} and result.manifest.tables["vouchers"].rows == 0
    restored = restore(settings_in(tmp_path / "again"), tmp_path / "bk")
    assert restored.audit_seq == 1 and restored.revision == result.manifest.revision


def test_manifest_round_trips_through_json(source, tmp_path):
    result = backup(source, tmp_path / "bk")
    again = read_manifest(tmp_path / "bk")
    assert dataclasses.asdict(again) == dataclasses.asdict(result.manifest)
    shutil.copytree(tmp_path / "bk", tmp_path / "copy")  # a copied backup is still a backup
    assert verify_backup(tmp_path / "copy").database_sha256 == result.manifest.database_sha256


# --- the key of the stored PasswordDigest secrets --------------------------------------------

DIGEST_USER, DIGEST_PASSWORD = "oa-digest", "pw-摘要-digest-1"


def with_digest_user(settings):
    """Give the data folder a user with a stored (encrypted) secret: creates its secret.key."""
    store = open_store(settings)
    try:
        UserService(store, settings=settings).add_user(DIGEST_USER, DIGEST_PASSWORD, {"viewer"})
    finally:
        store.dispose()
    return key_id((settings.data_dir / KEY_FILE_NAME).read_text().split()[0])


def digest_call(settings):
    """One PasswordDigest (UsernameToken) call to a gateway serving ``settings``' store."""
    store = open_store(settings)
    handle = start_gateway(make_gateway_app(settings, build_gateway_services(settings, store)))
    try:
        token = UsernameToken(DIGEST_USER, DIGEST_PASSWORD, use_digest=True)
        return zeep.Client(handle.wsdl_url, wsse=token).service.QueryVouchers(page=1, pageSize=1)
    finally:
        handle.stop()
        store.dispose()


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_key_is_in_the_backup_and_password_digest_works_after_restore(source, tmp_path, capsys):
    source_key = with_digest_user(source)
    assert main(["backup", str(tmp_path / "bk"), "--data-dir", str(source.data_dir)]) == 0
    backed_up_out = capsys.readouterr().out
    target = settings_in(tmp_path / "restored")
    assert main(["restore", str(tmp_path / "bk"), "--data-dir", str(target.data_dir)]) == 0
    manifest = read_manifest(tmp_path / "bk")
    assert digest_call(target).total == manifest.tables["vouchers"].rows  # the restored secret decrypts

    assert "encryption key restored to" in capsys.readouterr().out and "encryption key" in backed_up_out
    assert mode(target.data_dir / "secret.key") == 0o600
    assert manifest.key.included and manifest.key.key_ids == (source_key,)
    assert manifest.key.needed == {source_key: 1}
    assert json.loads((tmp_path / "bk" / "manifest.json").read_text())["key"]["file"] == "secret.key"
    backed_up = tmp_path / "bk" / "secret.key"
    assert backed_up.read_bytes() == (source.data_dir / "secret.key").read_bytes() and mode(backed_up) == 0o600


def test_backup_without_key_says_so_and_restore_refuses_until_the_key_is_there(source, tmp_path, capsys):
    source_key = with_digest_user(source)
    assert main(["backup", str(tmp_path / "bk"), "--without-key", "--data-dir", str(source.data_dir)]) == 0
    warning = capsys.readouterr().err
    assert "NOT in the backup" in warning and str(source.data_dir / "secret.key") in warning and source_key in warning
    manifest = read_manifest(tmp_path / "bk")
    assert not manifest.key.included and manifest.key.reason == "--without-key"
    assert json.loads((tmp_path / "bk" / "manifest.json").read_text())["key"]["note"].startswith("NOT included")
    assert not (tmp_path / "bk" / "secret.key").exists()

    target = settings_in(tmp_path / "restored")
    assert main(["restore", str(tmp_path / "bk"), "--data-dir", str(target.data_dir)]) == 2
    refusal = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress lines: one line
    assert refusal.startswith("archive-oa restore: backup ") and f"need key id {source_key}" in refusal
    assert "--force-without-key" in refusal and str(target.data_dir / "secret.key") in refusal
    assert not (target.data_dir / "archive-oa.db").exists()  # refused before anything changed

    target.data_dir.mkdir()  # the operator copies the key kept elsewhere, as the warning said
    shutil.copy(source.data_dir / "secret.key", target.data_dir / "secret.key")
    assert main(["restore", str(tmp_path / "bk"), "--data-dir", str(target.data_dir)]) == 0
    assert digest_call(target).total == manifest.tables["vouchers"].rows


@pytest.mark.slow
def test_restore_refuses_a_key_mismatch_unless_told_to_go_on_without_it(source, tmp_path, capsys):
    source_key = with_digest_user(source)
    backup(source, tmp_path / "bk")
    (tmp_path / "bk" / "secret.key").unlink()  # the backup says it holds the key: a missing file is damage
    with pytest.raises(IntegrityError, match="secret.key .*missing"):
        verify_backup(tmp_path / "bk")
    shutil.rmtree(tmp_path / "bk")
    backup(source, tmp_path / "bk")

    # Keys configured in the setting are the only ones the adapter reads: the backup's key is not enough.
    other = load_settings(data_dir=tmp_path / "configured", env={"ARCHIVE_OA_SECURITY_SECRET_KEY": generate_key()})
    with pytest.raises(ConfigurationError, match=f"need key id {source_key}, which is not among the keys of "
                       r"\[security\] secret_key / ARCHIVE_OA_SECURITY_SECRET_KEY"):
        restore(other, tmp_path / "bk")

    # A backup without the key, into a data folder that already made a key of its own.
    backup(source, tmp_path / "bk-nokey", without_key=True)
    target = settings_in(tmp_path / "own-key")
    with_digest_user(target)
    assert main(["restore", str(tmp_path / "bk-nokey"), "--force", "--data-dir", str(target.data_dir)]) == 2
    assert f"need key id {source_key}, which is neither in the backup" in capsys.readouterr().err

    assert main(["restore", str(tmp_path / "bk-nokey"), "--force", "--force-without-key",
                 "--data-dir", str(target.data_dir)]) == 1
    assert f"restored without key id {source_key}" in capsys.readouterr().err
    store = open_store(target)
    try:  # the server says what is wrong, and never makes a key that could not decrypt it anyway
        problem = UserService(store, settings=target).key_problem()
    finally:
        store.dispose()
    assert f"key id {source_key}" in problem and "secret.key of the backup" in problem


def test_a_key_copied_into_a_backup_taken_without_it_is_used_as_the_warning_says(source, tmp_path, capsys):
    source_key = with_digest_user(source)
    assert main(["backup", str(tmp_path / "bk"), "--without-key", "--data-dir", str(source.data_dir)]) == 0
    assert "secret.key in the backup folder is fine" in capsys.readouterr().err
    shutil.copy(source.data_dir / "secret.key", tmp_path / "bk" / "secret.key")  # "keep it with this backup"
    assert verify_backup(tmp_path / "bk").key.reason == "--without-key"  # not taken for tampering

    target = settings_in(tmp_path / "restored")
    assert main(["restore", str(tmp_path / "bk"), "--data-dir", str(target.data_dir)]) == 0
    captured = capsys.readouterr()
    assert f"not in its manifest (copied in by hand); it holds key id {source_key}" in captured.err
    assert "used" in captured.err and "encryption key restored to" in captured.out
    assert digest_call(target).total == read_manifest(tmp_path / "bk").tables["vouchers"].rows


def test_a_backup_from_before_keys_were_in_backups_restores_with_its_copied_in_key(source, tmp_path):
    source_key = with_digest_user(source)
    backup(source, tmp_path / "bk", without_key=True)
    manifest = json.loads((tmp_path / "bk" / "manifest.json").read_text())
    del manifest["key"]  # what an older version wrote
    (tmp_path / "bk" / "manifest.json").write_text(json.dumps(manifest))
    shutil.copy(source.data_dir / "secret.key", tmp_path / "bk" / "secret.key")
    result = restore(settings_in(tmp_path / "restored"), tmp_path / "bk")
    assert result.unlisted_key_ids == (source_key,) and result.key_file is not None


def test_a_copied_in_key_that_is_not_the_secrets_key_is_named_not_called_tampering(source, tmp_path):
    source_key = with_digest_user(source)
    backup(source, tmp_path / "bk", without_key=True)
    stranger = generate_key()
    (tmp_path / "bk" / "secret.key").write_text(stranger + "\n")
    with pytest.raises(ConfigurationError, match=f"need key id {source_key}, which is neither in the backup "
                       f"\\(its secret.key holds key ids {key_id(stranger)}, and its manifest does not list"):
        restore(settings_in(tmp_path / "restored"), tmp_path / "bk")
    assert not (tmp_path / "restored" / "secret.key").exists()


def test_a_changed_key_file_is_refused(source, tmp_path):
    with_digest_user(source)
    backup(source, tmp_path / "bk")
    (tmp_path / "bk" / "secret.key").write_text(generate_key() + "\n")
    _restore_refused(tmp_path / "bk", tmp_path, "secret.key does not match the sha256")


# --- owner-only files --------------------------------------------------------------------------


@pytest.fixture
def permissive_umask():
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def created_modes(*roots: Path) -> dict[str, int]:
    """Mode of every file and folder under ``roots`` (the roots included)."""
    found = {}
    for root in roots:
        for path in [root, *root.rglob("*")]:
            found[str(path)] = mode(path)
    return found


def test_store_key_checkpoint_blobs_backup_and_restore_are_owner_only(tmp_path, permissive_umask):
    settings = settings_in(tmp_path / "deep" / "live")  # a parent created on the way is owner-only too
    store = open_store(settings)
    try:
        samples = samples_dir()
        assert import_paths(store, Transforms.from_settings(), [Path(str(samples / "HD01-2026-09.xml"))], now=NOW).ok
        UserService(store, settings=settings).add_user(DIGEST_USER, DIGEST_PASSWORD, {"viewer"})
        assert audit_verify.verify(store, audit_verify.checkpoint_path(settings)).ok
        live = created_modes(tmp_path / "deep")
        for name in ("archive-oa.db", "archive-oa.db-wal", "archive-oa.db-shm", "secret.key", "audit-checkpoint.json"):
            assert live[str(settings.data_dir / name)] == 0o600, name  # -wal / -shm exist while the store is open
    finally:
        store.dispose()
    assert list(settings.blob_dir.glob("??/??/*"))
    backup(settings, tmp_path / "backups" / "bk")
    restore(settings_in(tmp_path / "restored"), tmp_path / "backups" / "bk")
    modes = created_modes(tmp_path / "deep", tmp_path / "backups", tmp_path / "restored")
    assert {path for path in modes if path.endswith(("/blobs", "/bk", "/secret.key", ".db"))}  # the walk saw them
    loose = {path: oct(m) for path, m in modes.items() if m != (0o700 if Path(path).is_dir() else 0o600)}
    assert not loose
