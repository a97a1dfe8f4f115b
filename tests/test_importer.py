"""Importing voucher XML: idempotency, versions, attachments, refusal of bad files, queueing, CLI."""

from __future__ import annotations

import datetime as dt
import hashlib
import time
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from archive_oa import voucher_xml
from archive_oa.cli.main import main
from archive_oa.domain.delivery import idempotency_key
from archive_oa.domain.model import AttachmentKind, AttachmentMeta, Entry, Voucher, WorkflowInfo, WorkflowState
from archive_oa.services.importer import import_paths
from archive_oa.store import vouchers as repo
from archive_oa.store.tables import attachments, vouchers
from archive_oa.transforms.pipeline import Transforms

import factories

PDF = b"%PDF-1.4\n% fake invoice for tests\n"
PNG = b"\x89PNG\r\n\x1a\n fake bank receipt"


# ``store`` (tests/conftest.py): a fresh database, each test once on SQLite and once on PostgreSQL.


@pytest.fixture(scope="module")
def transforms():
    return Transforms.from_settings()


def make_voucher(voucher_id="V-1", **fields) -> Voucher:
    return factories.voucher(voucher_id, **{"org": "ORG-A", **factories.TRAVEL_BY_CASH, **fields})


def meta_for(attachment_id, file_name, data, kind=AttachmentKind.INVOICE) -> AttachmentMeta:
    return AttachmentMeta(attachment_id, file_name, "application/octet-stream", len(data),
                          hashlib.sha256(data).hexdigest(), kind)


def write(path, voucher_or_list, contents=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(voucher_or_list, list):
        path.write_bytes(voucher_xml.vouchers_to_xml(voucher_or_list, contents))
    else:
        path.write_bytes(voucher_xml.voucher_to_xml(voucher_or_list, contents))
    return path


def count(store, table):
    with store.transaction() as conn:
        return conn.execute(select(func.count()).select_from(table)).scalar_one()


def test_same_files_twice_store_once_and_changed_content_becomes_a_version(store, transforms, tmp_path):
    folder = tmp_path / "in"
    write(folder / "batch.xml", [make_voucher("V-1", no=1), make_voucher("V-2", no=2)])
    write(folder / "sub" / "single.xml", make_voucher("V-3", no=3))

    first = import_paths(store, transforms, [folder], enqueue=False)
    assert (first.files, first.vouchers_seen, first.created, first.new_versions, first.unchanged) == (2, 3, 3, 0, 0)
    assert first.failed_files == 0 and first.issues == []

    again = import_paths(store, transforms, [folder], enqueue=False)
    assert (again.vouchers_seen, again.created, again.new_versions, again.unchanged) == (3, 0, 0, 3)
    assert count(store, vouchers) == 3

    write(folder / "sub" / "single.xml", make_voucher("V-3", no=3, amount="990.00"))
    changed = import_paths(store, transforms, [folder], enqueue=False)
    assert (changed.created, changed.new_versions, changed.unchanged) == (0, 1, 2)
    with store.transaction() as conn:
        assert repo.latest_version(conn, "V-3")[0] == 2
        assert repo.load_voucher(conn, "V-3").total_amount == Decimal("990.00")
        assert repo.load_voucher(conn, "V-3", version=1).total_amount == Decimal("880.00")
        assert repo.latest_version(conn, "V-3")[1] == voucher_xml.canonical_hash(make_voucher("V-3", no=3, amount="990.00"))


def test_attachments_beside_in_subfolder_and_embedded_go_to_blobs(store, transforms, tmp_path):
    folder = tmp_path / "in"
    beside = meta_for("ATT-1", "发票-001.pdf", PDF)
    sub = meta_for("ATT-2", "receipt.png", PNG, AttachmentKind.BANK_RECEIPT)
    embedded = meta_for("ATT-3", "contract.bin", b"embedded bytes")
    (folder / "attachments").mkdir(parents=True)
    (folder / "发票-001.pdf").write_bytes(PDF)
    (folder / "attachments" / "receipt.png").write_bytes(PNG)
    # an XML file inside attachments/ is an attachment (e.g. an e-invoice), never a voucher file
    (folder / "attachments" / "e-invoice.xml").write_bytes(b"<not-a-voucher/>")
    write(folder / "v.xml", make_voucher(attachments=[beside, sub, embedded]), {"ATT-3": b"embedded bytes"})

    report = import_paths(store, transforms, [folder], enqueue=False)
    assert report.failed_files == 0, report.issues
    assert (report.files, report.created) == (1, 1)
    for meta, data in ((beside, PDF), (sub, PNG), (embedded, b"embedded bytes")):
        assert store.blobs.read(meta.sha256) == data
    with store.transaction() as conn:
        assert repo.load_voucher(conn, "V-1").attachments == (beside, sub, embedded)


def test_invalid_file_stores_nothing_and_other_files_continue(store, transforms, tmp_path):
    good = write(tmp_path / "good.xml", make_voucher("GOOD"))
    unbalanced = make_voucher("BAD-1", entries=(
        Entry(1, "借", "6602", "管理费用", debit=Decimal("100.00")),
        Entry(2, "贷", "1001", "库存现金", credit=Decimal("90.00")),
    ))
    bad_batch = write(tmp_path / "bad-batch.xml", [make_voucher("BAD-0", no=7), unbalanced])
    broken = tmp_path / "broken.xml"
    broken.write_bytes("<Voucher xmlns='urn:archive-oa:voucher:1'><voucherId>X</voucherId>\n".encode())

    progress = []
    report = import_paths(store, transforms, [bad_batch, good, broken, tmp_path / "missing.xml"],
                          enqueue=False, on_progress=progress.append)
    assert report.files == 4 and report.failed_files == 3
    assert report.failed_paths == [str(bad_batch), str(broken), str(tmp_path / "missing.xml")]
    assert report.created == 1 and report.vouchers_seen == 1
    assert [(p.voucher_id, p.outcome) for p in progress] == [("GOOD", "created")]
    with store.transaction() as conn:
        assert repo.load_voucher(conn, "GOOD") is not None
        assert repo.load_voucher(conn, "BAD-0") is None  # the valid voucher of a failing file too
        assert repo.load_voucher(conn, "BAD-1") is None
    assert count(store, vouchers) == 1
    sources = {issue.source for issue in report.issues}
    assert {str(bad_batch), str(broken), str(tmp_path / "missing.xml")} <= sources
    batch_issues = [issue for issue in report.issues if issue.source == str(bad_batch)]
    assert all(issue.line and issue.place.startswith("/Vouchers") and issue.rule for issue in batch_issues)


@pytest.mark.parametrize(
    ("file_bytes", "file_name", "rule"),
    [
        (PDF + b"tampered", "inv.pdf", "attachment-integrity"),
        (None, "inv.pdf", "attachment-file-missing"),
        (PDF, "..", {"plain-file-name", "attachment-file-name"}),  # the rules or the importer refuse it
    ],
)
def test_attachment_problems_refuse_the_file(store, transforms, tmp_path, file_bytes, file_name, rule):
    if file_bytes is not None:
        (tmp_path / "inv.pdf").write_bytes(file_bytes)
    meta = meta_for("ATT-7", file_name, PDF)
    path = write(tmp_path / "v.xml", make_voucher(attachments=[meta]))
    report = import_paths(store, transforms, [path], enqueue=False)
    assert report.failed_files == 1 and report.created == 0
    [issue] = report.issues
    assert (issue.rule in rule if isinstance(rule, set) else issue.rule == rule)
    assert "ATT-7" in issue.message or ".." in issue.message
    assert issue.place.startswith("/Voucher/attachments/attachment") and issue.line and issue.source == str(path)
    assert count(store, vouchers) == 0 and count(store, attachments) == 0
    assert not store.blobs.exists(meta.sha256)


def test_new_versions_are_queued_in_the_same_transaction(store, transforms, tmp_path):
    from archive_oa.store.sync_tables import deliveries

    path = write(tmp_path / "v.xml", make_voucher())
    report = import_paths(store, transforms, [path])
    assert (report.created, report.queued) == (1, 1)
    assert import_paths(store, transforms, [path]).queued == 0  # unchanged: nothing new to send
    write(tmp_path / "v.xml", make_voucher(amount="1.00"))
    assert import_paths(store, transforms, [path]).queued == 1
    with store.transaction() as conn:
        rows = conn.execute(select(deliveries.c.voucher_id, deliveries.c.version, deliveries.c.idempotency_key)
                            .order_by(deliveries.c.version)).all()
        assert repo.load_voucher(conn, "V-1").state is WorkflowState.QUEUED
    expected_hash = voucher_xml.canonical_hash(make_voucher(amount="1.00"))
    assert [tuple(r) for r in rows][1] == ("V-1", 2, idempotency_key("V-1", expected_hash))
    assert len(rows) == 2


def test_voucher_already_decided_in_its_xml_is_archived_not_queued(store, transforms, tmp_path):
    decided = WorkflowInfo(WorkflowState.APPROVED, "OA-1", dt.datetime(2024, 3, 9, tzinfo=dt.timezone.utc))
    path = write(tmp_path / "v.xml", make_voucher(workflow=decided))
    report = import_paths(store, transforms, [path])
    assert (report.created, report.queued) == (1, 0)
    with store.transaction() as conn:
        assert repo.load_voucher(conn, "V-1").state is WorkflowState.APPROVED


def test_cli_import_summary_issues_and_exit_code(tmp_path, capsys):
    data = tmp_path / "data"
    good = write(tmp_path / "in" / "good.xml", make_voucher())
    bad = write(tmp_path / "in" / "bad.xml", make_voucher("V-9", attachments=[meta_for("A9", "gone.pdf", PDF)]))

    assert main(["import", "--data-dir", str(data), "--no-queue", str(good)]) == 0
    out = capsys.readouterr().out
    assert "created" in out and "1" in out

    assert main(["import", "--data-dir", str(data), "--no-queue", str(tmp_path / "in")]) == 1
    captured = capsys.readouterr()
    assert f"{bad}:" in captured.err and "[attachment-file-missing]" in captured.err
    lines = dict(line.rsplit(None, 1) for line in captured.out.splitlines())
    assert lines["failed files"] == "1" and lines["unchanged"] == "1"


def test_cli_import_of_an_empty_folder_says_nothing_was_imported(tmp_path, capsys):
    (tmp_path / "in").mkdir()
    assert main(["import", "--data-dir", str(tmp_path / "data"), str(tmp_path / "in")]) == 1
    err = capsys.readouterr().err
    assert f"nothing imported: {tmp_path / 'in'} holds no files" in err and "*.xml" in err


def test_cli_import_of_a_folder_without_voucher_files_names_what_it_left(tmp_path, capsys):
    folder = tmp_path / "in"
    (folder / "attachments").mkdir(parents=True)
    (folder / "invoice.pdf").write_bytes(PDF)
    (folder / "VOUCHERS.TXT").write_text("not xml")
    (folder / "attachments" / "e-invoice.xml").write_text("<Invoice/>")  # an attachment, never a voucher
    assert main(["import", "--data-dir", str(tmp_path / "data"), str(folder)]) == 1
    err = capsys.readouterr().err
    assert f"nothing imported: no voucher files in {folder}" in err
    assert "the 3 files there are not voucher files" in err and str(folder / "invoice.pdf") in err


@pytest.mark.slow
def test_cli_import_json_counts_and_errors_with_file_and_message(tmp_path, capsys):
    import json

    data = tmp_path / "data"
    write(tmp_path / "in" / "good.xml", make_voucher())
    assert main(["import", "--data-dir", str(data), "--no-queue", str(tmp_path / "in")]) == 0
    capsys.readouterr()
    write(tmp_path / "in" / "new.xml", make_voucher("V-2", no=2))
    write(tmp_path / "in" / "changed.xml", make_voucher("V-1", amount="990.00"))
    (tmp_path / "in" / "good.xml").unlink()
    bad = write(tmp_path / "in" / "bad.xml", make_voucher("V-9", attachments=[meta_for("A9", "gone.pdf", PDF)]))
    write(tmp_path / "in" / "same.xml", make_voucher("V-1", amount="990.00"))

    assert main(["import", "--json", "--data-dir", str(data), "--no-queue", str(tmp_path / "in")]) == 1
    captured = capsys.readouterr()
    answer = json.loads(captured.out)
    assert {k: v for k, v in answer.items() if k != "errors"} == {
        "files": 4, "failedFiles": 1, "vouchersSeen": 3, "created": 1, "newVersions": 1, "unchanged": 1, "queued": 0,
    }
    (error,) = answer["errors"]
    assert error["file"] == str(bad) and error["rule"] == "attachment-file-missing" and "gone.pdf" in error["message"]
    assert set(error) == {"file", "line", "place", "rule", "message"}
    assert "[attachment-file-missing]" not in captured.err, "the JSON carries the errors"


def test_cli_db_upgrade_reports_the_revision(tmp_path, capsys, monkeypatch):
    from archive_oa.store.migrations import head_revision

    monkeypatch.setenv("ARCHIVE_OA_DATABASE_URL", f"sqlite:///{tmp_path / 'other.db'}")
    assert main(["db", "upgrade", "--data-dir", str(tmp_path / "data")]) == 0
    assert f"to revision {head_revision()}" in capsys.readouterr().out
    assert (tmp_path / "other.db").is_file()
    assert main(["db", "upgrade", "--data-dir", str(tmp_path / "data")]) == 0
    assert "already at revision" in capsys.readouterr().out


@pytest.mark.parametrize("name", ["..", ".", "a/b.pdf", "a\\b.pdf", "nul\0.pdf", ""])
def test_attachment_file_names_never_leave_the_folder(tmp_path, name):
    from archive_oa.services.importer import _attachment_file

    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "b.pdf").write_bytes(PDF)
    meta = meta_for("ATT-8", name, PDF)
    content, issue = _attachment_file(tmp_path / "v.xml", meta, "/Voucher/attachments/attachment", 3, 10**6)
    assert content is None and issue.rule == "attachment-file-name" and issue.place.endswith("/fileName")


# --- batches: the same promises as one voucher at a time -------------------------------------


@pytest.mark.parametrize("batch_size", [1, 2, 500])
def test_repeats_and_changes_count_in_file_order_within_and_across_batches(store, transforms, tmp_path, batch_size):
    from archive_oa.store.sync_tables import deliveries

    first, changed = make_voucher("V-1"), make_voucher("V-1", amount="990.00")
    for name, voucher in (("a", first), ("b", first), ("c", changed), ("d", first), ("e", make_voucher("V-2", no=2))):
        write(tmp_path / "in" / f"{name}.xml", voucher)
    progress = []
    report = import_paths(store, transforms, [tmp_path / "in"], batch_size=batch_size, on_progress=progress.append)
    assert (report.vouchers_seen, report.created, report.new_versions, report.unchanged) == (5, 2, 2, 1)
    assert report.queued == 3  # content A again (version 3) was queued as version 1: not queued again
    assert [(p.voucher_id, p.outcome, p.file.rsplit("/", 1)[-1]) for p in progress] == [
        ("V-1", "created", "a.xml"), ("V-1", "unchanged", "b.xml"), ("V-1", "new_version", "c.xml"),
        ("V-1", "new_version", "d.xml"), ("V-2", "created", "e.xml"),
    ]
    assert [p.vouchers_done for p in progress] == [1, 2, 3, 4, 5]
    with store.transaction() as conn:
        assert repo.latest_version(conn, "V-1") == (3, voucher_xml.canonical_hash(first))
        assert repo.load_voucher(conn, "V-1", version=2).total_amount == Decimal("990.00")
        states = dict(conn.execute(select(vouchers.c.version, vouchers.c.state).where(vouchers.c.voucher_id == "V-1")).all())
        assert states == {1: "QUEUED", 2: "QUEUED", 3: "NONE"}
        queued = conn.execute(select(deliveries.c.voucher_id, deliveries.c.version).order_by(deliveries.c.id)).all()
        assert [tuple(r) for r in queued] == [("V-1", 1), ("V-1", 2), ("V-2", 1)]
    again = import_paths(store, transforms, [tmp_path / "in"], batch_size=batch_size)
    # against what is stored now (A is latest): a, b unchanged, c → 4, d → 5, e unchanged
    assert (again.created, again.new_versions, again.unchanged, again.queued) == (0, 2, 3, 0)


def _refuse_voucher_id(store, voucher_id):
    """Make the database itself refuse one voucher id (as it might a value it cannot hold)."""
    with store.transaction(immediate=True) as conn:
        if store.dialect == "sqlite":
            conn.exec_driver_sql(
                f"CREATE TRIGGER refuse_one BEFORE INSERT ON vouchers WHEN NEW.voucher_id = '{voucher_id}' "
                "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
            )
        else:
            conn.exec_driver_sql(f"ALTER TABLE vouchers ADD CONSTRAINT refuse_one CHECK (voucher_id <> '{voucher_id}')")


def test_a_voucher_the_database_refuses_is_reported_and_its_batch_mates_are_stored(store, transforms, tmp_path):
    from archive_oa.store.sync_tables import deliveries

    _refuse_voucher_id(store, "V-BAD")
    write(tmp_path / "in" / "1.xml", [make_voucher("V-1", no=1), make_voucher("V-2", no=2)])
    two = write(tmp_path / "in" / "2.xml", [make_voucher("V-3", no=3), make_voucher("V-BAD", no=4), make_voucher("V-4", no=5)])
    write(tmp_path / "in" / "3.xml", make_voucher("V-5", no=6))
    progress = []
    report = import_paths(store, transforms, [tmp_path / "in"], on_progress=progress.append)  # one batch
    assert (report.files, report.vouchers_seen, report.created, report.queued) == (3, 6, 5, 5)
    assert report.failed_files == 1 and report.failed_paths == [str(two)]
    [issue] = report.issues
    assert (issue.source, issue.place, issue.rule) == (str(two), "/Vouchers/Voucher[2]", "store-refused")
    assert issue.line and "V-BAD" in issue.message and "refuse" in issue.message
    assert sorted(p.voucher_id for p in progress) == ["V-1", "V-2", "V-3", "V-4", "V-5"]
    assert count(store, vouchers) == 5 and count(store, deliveries) == 5


def test_two_importers_at_once_store_each_voucher_once(store, db_settings, transforms, tmp_path):
    import threading

    from archive_oa.store.engine import open_store
    from archive_oa.store.sync_tables import deliveries

    files = [write(tmp_path / "in" / f"{f}.xml", [make_voucher(f"V-{f}-{n}", no=f * 100 + n + 1) for n in range(10)])
             for f in range(3)]
    other = open_store(db_settings)
    reports, errors = {}, []

    def run(name, instance, paths):
        try:
            reports[name] = import_paths(instance, transforms, paths, batch_size=7)
        except Exception as exc:  # noqa: BLE001  (collected and asserted below)
            errors.append(exc)

    try:  # the second runs the files backwards: its batches overlap the first's in another order
        threads = [threading.Thread(target=run, args=("a", store, files)),
                   threading.Thread(target=run, args=("b", other, files[::-1]))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        other.dispose()
    assert errors == []
    a, b = reports["a"], reports["b"]
    assert a.created + b.created == 30 and a.unchanged + b.unchanged == 30 and a.queued + b.queued == 30
    assert a.new_versions == b.new_versions == 0 and a.failed_files == b.failed_files == 0
    assert count(store, vouchers) == 30 and count(store, deliveries) == 30


def test_cli_import_batch_size(tmp_path, capsys):
    folder = tmp_path / "in"
    for n in range(3):
        write(folder / f"{n}.xml", make_voucher(f"V-{n}", no=n + 1))
    assert main(["import", "--data-dir", str(tmp_path / "data"), "--batch-size", "2", str(folder)]) == 0
    lines = dict(line.rsplit(None, 1) for line in capsys.readouterr().out.splitlines())
    assert lines["created"] == "3" and lines["queued for OA"] == "3"
    with pytest.raises(SystemExit):
        main(["import", "--data-dir", str(tmp_path / "data"), "--batch-size", "0", str(folder)])
    assert "--batch-size" in capsys.readouterr().err


def test_files_over_the_size_limit_are_refused_unread_and_the_rest_import(store, transforms, tmp_path):
    (tmp_path / "c").mkdir()
    scan = PDF * 400
    (tmp_path / "c" / "scan.pdf").write_bytes(scan)
    with_big_file = write(tmp_path / "c" / "v.xml", make_voucher("WITH-FILE", attachments=[
        meta_for("ATT-BIG", "scan.pdf", scan)]))
    small = write(tmp_path / "a" / "small.xml", make_voucher("SMALL"))
    limit = with_big_file.stat().st_size + 100
    assert len(scan) > limit
    big = write(tmp_path / "b" / "big.xml", [make_voucher(f"BIG-{n}", no=n) for n in range(1, 6)])
    assert big.stat().st_size > limit

    report = import_paths(store, transforms, [big, small, with_big_file], enqueue=False, max_file_bytes=limit)
    assert (report.created, report.failed_files) == (1, 2)
    by_source = {issue.source: issue for issue in report.issues}
    assert by_source[str(big)].rule == "file-size"
    assert f"{big.stat().st_size:,} bytes" in by_source[str(big)].message
    assert "max_import_file_bytes" in by_source[str(big)].message
    attachment_issue = by_source[str(with_big_file)]
    assert attachment_issue.rule == "file-size" and "ATT-BIG" in attachment_issue.message
    assert attachment_issue.place.startswith("/Voucher/attachments/attachment")
    assert count(store, vouchers) == 1


def test_cli_import_reads_the_size_limit_from_settings(tmp_path, capsys, monkeypatch):
    path = write(tmp_path / "in" / "v.xml", make_voucher())
    monkeypatch.setenv("ARCHIVE_OA_SECURITY_MAX_IMPORT_FILE_BYTES", "100")
    assert main(["import", "--data-dir", str(tmp_path / "data"), "--no-queue", str(path)]) == 1
    assert "[file-size]" in capsys.readouterr().err
    monkeypatch.setenv("ARCHIVE_OA_SECURITY_MAX_IMPORT_FILE_BYTES", "0")
    assert main(["import", "--data-dir", str(tmp_path / "data"), "--no-queue", str(path)]) == 2
    assert "max_import_file_bytes = 0" in capsys.readouterr().err


def test_attachments_are_on_disk_before_the_write_lock_is_taken(store, transforms, tmp_path, monkeypatch):
    metas = []
    for n in range(3):
        data = PDF + bytes([n]) * 1000
        (tmp_path / f"scan-{n}.pdf").write_bytes(data)
        metas.append(meta_for(f"ATT-{n}", f"scan-{n}.pdf", data))
        write(tmp_path / f"v{n}.xml", make_voucher(f"V-{n}", no=n + 1, attachments=[metas[-1]]))
    seen_at_write = []
    open_transaction = store.transaction
    put = store.blobs.put
    monkeypatch.setattr(store.blobs, "put", lambda data: (time.sleep(0.2), put(data))[1])  # a slow disk

    def transaction(*args, **kwargs):
        if kwargs.get("immediate"):
            seen_at_write.append([store.blobs.exists(meta.sha256) for meta in metas])
        return open_transaction(*args, **kwargs)

    monkeypatch.setattr(store, "transaction", transaction)
    report = import_paths(store, transforms, [tmp_path], enqueue=False)
    assert report.created == 3 and seen_at_write and all(all(flags) for flags in seen_at_write)


def test_a_batch_ends_early_once_its_attachments_fill_the_memory_budget(store, transforms, tmp_path, monkeypatch):
    from archive_oa.services import importer

    for n in range(4):
        data = PDF + bytes([n]) * 2000
        (tmp_path / f"scan-{n}.pdf").write_bytes(data)
        write(tmp_path / f"v{n}.xml", make_voucher(f"V-{n}", no=n + 1,
                                                   attachments=[meta_for(f"ATT-{n}", f"scan-{n}.pdf", data)]))
    monkeypatch.setattr(importer, "BATCH_CONTENT_BYTES", 3000)  # about two attachments
    sizes = []
    save = importer._BatchWriter.save
    monkeypatch.setattr(importer._BatchWriter, "save", lambda self, batch: (sizes.append(len(batch)), save(self, batch)))
    report = import_paths(store, transforms, [tmp_path], enqueue=False)
    assert report.created == 4 and sizes == [2, 2]
