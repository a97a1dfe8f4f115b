"""The archive store on SQLite: round trips, versions, queries, workflow, blobs, migrations, users."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import sqlite3
import stat
import threading
from contextlib import nullcontext
from decimal import Decimal

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, event, func, inspect, select

from archive_oa.domain.model import (
    Approval,
    ArchiveInfo,
    AttachmentKind,
    AttachmentMeta,
    AuxiliaryItem,
    Entry,
    Retention,
    Voucher,
    VoucherQuery,
    WorkflowInfo,
    WorkflowState,
)
from archive_oa.errors import IntegrityError, NotFound, ValidationFailed
from archive_oa.store import migrations
from archive_oa.store import users as user_repo
from archive_oa.store import vouchers as repo
from archive_oa.store.blobs import BlobStore
from archive_oa.store.metadata import metadata
from archive_oa.store.tables import vouchers as vouchers_table

import factories

UTC = dt.timezone.utc
BEIJING = dt.timezone(dt.timedelta(hours=8))
NOW = dt.datetime(2024, 3, 1, 9, 30, tzinfo=UTC)


# ``store`` (tests/conftest.py): a fresh database, each test once on SQLite and once on PostgreSQL.


def sqlite_only(store):
    if store.dialect != "sqlite":
        pytest.skip("SQLite behaviour")


def make_voucher(voucher_id="V-0001", **fields) -> Voucher:
    return factories.voucher(voucher_id, **{**STORED, **fields})


#: office supplies paid by bank, with auxiliary items on the expense line
STORED = {
    "org": "ORG-A", "org_name": "华东实业有限公司", "fonds": "Z001", "period": "2024-02", "day": 15,
    "preparer": "王芳", "summary": "支付办公用品费", "amount": "1500.00", "lines": ("购买办公用品", "银行存款支付"),
    "auxiliary": (AuxiliaryItem("dept", "D01", "行政部"), AuxiliaryItem("project", "P9", "年度计划")),
    "attachment_count": 0,  # a test that attaches files says how many it counts
}


def save(store, voucher, content_hash=None):
    with store.transaction(immediate=True) as conn:
        return repo.save_voucher(conn, voucher, content_hash or f"hash-{voucher.voucher_id}", NOW)


# --- round trip and versions ----------------------------------------------------------------


def test_full_voucher_round_trips_exactly(store):
    voucher = make_voucher(
        amount="9999999999999999.99",  # beyond float precision: must stay exact
        reviewer="李强",
        bookkeeper="赵敏",
        cashier="陈静",
        attachment_count=3,
        entries=(
            Entry(1, "进口设备 USD", "1601", "固定资产", debit=Decimal("9999999999999999.99"), currency="USD",
                  exchange_rate=Decimal("7.123456"), original_amount=Decimal("1403785000000000.123")),
            Entry(2, "应付账款", "2202", "应付账款", credit=Decimal("9999999999999999.99"),
                  auxiliary=(AuxiliaryItem("supplier", "S-88", "上海精密仪器厂"),)),
        ),
        attachments=(
            AttachmentMeta("ATT-1", "增值税专用发票.pdf", "application/pdf", 2048, "a" * 64,
                           AttachmentKind.INVOICE, "04400123"),
            AttachmentMeta("ATT-2", "回单.png", "image/png", 10, "b" * 64, AttachmentKind.BANK_RECEIPT),
        ),
        archive=ArchiveInfo("Z001-2024-KJPZ-Y30-0001", "会计凭证", Retention.Y30,
                            dt.datetime(2024, 3, 2, 10, 0, tzinfo=BEIJING)),
        workflow=WorkflowInfo(
            WorkflowState.APPROVED, "OA-77", dt.datetime(2024, 3, 1, 18, 0, tzinfo=BEIJING),
            (Approval(1, "部门经理", "APPROVE", "同意", dt.datetime(2024, 3, 1, 17, 0, tzinfo=BEIJING)),
             Approval(2, "财务总监", "APPROVE", None, dt.datetime(2024, 3, 1, 18, 0, tzinfo=BEIJING))),
        ),
    )
    save(store, voucher)
    with store.transaction() as conn:
        loaded = repo.load_voucher(conn, "V-0001")
    assert loaded == voucher
    assert loaded.total_amount == Decimal("9999999999999999.99")
    assert loaded.entries[0].original_amount == Decimal("1403785000000000.123")
    assert loaded.workflow.decided_at.tzinfo == UTC  # stored and returned as UTC
    assert loaded.workflow.decided_at.hour == 10


def test_loading_a_voucher_takes_a_few_statements_whatever_it_holds(store):
    """Its row, its entries, then its attachments and trail only when it has them: at most
    four statements for 2 entries or 40, each served from SQLAlchemy's compiled cache
    after the first call."""
    small = make_voucher("V-SMALL")
    lines = tuple(Entry(n, f"第{n}行", "6602", "管理费用", debit=Decimal("1.00"),
                        auxiliary=(AuxiliaryItem("dept", f"D{n % 3}", "部门"),)) for n in range(1, 41))
    trail = WorkflowInfo(WorkflowState.APPROVED, "OA-1", NOW, (Approval(1, "甲", "APPROVE", None, NOW),))
    files = tuple(AttachmentMeta(f"ATT-L{n}", f"{n}.pdf", "application/pdf", n, "e" * 64) for n in range(5))
    large = make_voucher("V-LARGE", entries=lines, attachments=files, workflow=trail)
    decided = make_voucher("V-DECIDED", workflow=trail)
    without_trail = make_voucher("V-SUBMITTED", workflow=WorkflowInfo(WorkflowState.SUBMITTED, "OA-2"))
    for voucher in (small, large, decided, without_trail):
        save(store, voucher)
    cache_hits = []  # per statement executed: served from the compiled cache?

    def count(conn, cursor, statement, parameters, context, executemany):
        cache_hits.append(context.cache_hit is context.dialect.CACHE_HIT)

    def load(voucher_id):
        before = len(cache_hits)
        voucher = repo.load_voucher(conn, voucher_id)
        return voucher, len(cache_hits) - before

    with store.transaction() as conn:
        repo.load_voucher(conn, "V-LARGE")  # compiles (or finds) the statements once
        event.listen(store.engine, "before_cursor_execute", count)
        try:
            assert load("V-SMALL") == (small, 2)
            assert load("V-LARGE") == (large, 4)
            assert load("V-DECIDED") == (decided, 3)
            assert load("V-SUBMITTED") == (without_trail, 2)
            assert load("NOPE") == (None, 1)
            assert all(cache_hits), "a load statement was compiled again: its cache key changes from call to call"
        finally:
            event.remove(store.engine, "before_cursor_execute", count)
        # the flags follow the data: a trail set later is read
        repo.set_workflow(conn, "V-SUBMITTED", state=WorkflowState.APPROVED, approvals=trail.approvals)
        assert repo.load_voucher(conn, "V-SUBMITTED").workflow.approvals == trail.approvals


def test_same_content_is_stored_once_and_changed_content_becomes_a_version(store):
    first = make_voucher()
    assert save(store, first, "h1") == repo.SaveResult("V-0001", 1, True)
    assert save(store, first, "h1") == repo.SaveResult("V-0001", 1, False)
    changed = make_voucher(amount="1600.00")
    assert save(store, changed, "h2") == repo.SaveResult("V-0001", 2, True)
    with store.transaction() as conn:
        assert repo.latest_version(conn, "V-0001") == (2, "h2")
        assert repo.load_voucher(conn, "V-0001") == changed
        assert repo.load_voucher(conn, "V-0001", version=1) == first
        assert repo.load_voucher(conn, "V-0001", version=3) is None
        assert repo.load_voucher(conn, "NOPE") is None
        assert repo.latest_version(conn, "NOPE") is None
        assert repo.voucher_org(conn, "V-0001") == "ORG-A"
        rows = conn.execute(select(func.count()).select_from(vouchers_table)).scalar_one()
        assert rows == 2
        page = repo.query_vouchers(conn, VoucherQuery())
    assert page.total == 1 and page.items[0].total_amount == Decimal("1600.00")


def test_a_batch_saves_as_one_voucher_after_another(store):
    first, changed = make_voucher(), make_voucher(amount="1600.00")
    decided = make_voucher("V-0002", no=2, workflow=WorkflowInfo(
        WorkflowState.APPROVED, "OA-1", NOW, (Approval(1, "甲", "APPROVE", "同意", NOW),)))
    save(store, first, "h1")
    items = [(first, "h1"), (changed, "h2"), (changed, "h2"), (first, "h1"), (decided, "hd")]
    with store.transaction(immediate=True) as conn:
        results = repo.save_vouchers(conn, items, NOW)
        assert [(r.voucher_id, r.version, r.created) for r in results] == [
            ("V-0001", 1, False), ("V-0001", 2, True), ("V-0001", 2, False), ("V-0001", 3, True),
            ("V-0002", 1, True),
        ]
        rows = dict(conn.execute(select(vouchers_table.c.id, vouchers_table.c.version)
                                 .where(vouchers_table.c.voucher_id == "V-0001")).all())
        assert [rows[r.row_id] for r in results[:4]] == [1, 2, 2, 3]  # each result names its version's row
        latest = conn.execute(select(vouchers_table.c.version).where(
            vouchers_table.c.voucher_id == "V-0001", vouchers_table.c.is_latest)).scalars().all()
        assert latest == [3]
        assert repo.latest_version(conn, "V-0001") == (3, "h1")
        assert repo.load_voucher(conn, "V-0001", version=2) == changed
        assert repo.load_voucher(conn, "V-0001") == first
        assert repo.load_voucher(conn, "V-0002") == decided  # with its approval trail
        repo.mark_queued(conn, [results[1].row_id])
        assert repo.load_voucher(conn, "V-0001", version=2).state is WorkflowState.QUEUED
        assert repo.load_voucher(conn, "V-0001").state is WorkflowState.NONE


def test_enqueue_many_writes_what_enqueue_writes(store):
    from archive_oa.store import outbox
    from archive_oa.store.outbox import NewDelivery, enqueue_many
    from archive_oa.store.sync_tables import deliveries

    with store.transaction(immediate=True) as conn:
        assert outbox.enqueue(conn, voucher_id="V-1", version=1, idempotency_key="V-1:a", now=NOW)
        answers = enqueue_many(conn, [NewDelivery("V-2", 1, "V-2:b"), NewDelivery("V-1", 3, "V-1:a"),
                                      NewDelivery("V-2", 2, "V-2:c"), NewDelivery("V-2", 3, "V-2:b")], NOW)
        assert answers == [True, False, True, False]
        assert enqueue_many(conn, [], NOW) == []
        rows = [dict(r._mapping) for r in conn.execute(select(deliveries).order_by(deliveries.c.id))]
    assert [(r["voucher_id"], r["version"], r["idempotency_key"]) for r in rows] == [
        ("V-1", 1, "V-1:a"), ("V-2", 1, "V-2:b"), ("V-2", 2, "V-2:c")]
    different = {"id", "voucher_id", "version", "idempotency_key"}
    by_enqueue = {k: v for k, v in rows[0].items() if k not in different}
    assert all({k: v for k, v in row.items() if k not in different} == by_enqueue for row in rows[1:])


@pytest.mark.parametrize("first_commits", [True, False], ids=["commit", "rollback"])
def test_concurrent_enqueues_of_one_key_make_one_delivery(store, first_commits):
    """A second enqueuer of a key waits for the first one's transaction: nothing when it
    committed, the delivery when it rolled back — never a second delivery, never an error."""
    from archive_oa.store import outbox
    from archive_oa.store.sync_tables import deliveries

    answers: dict[str, bool] = {}
    second_started = threading.Event()

    def second() -> None:
        second_started.set()
        with store.transaction(immediate=True) as conn:
            answers["second"] = outbox.enqueue(conn, voucher_id="V-1", version=2, idempotency_key="V-1:a", now=NOW)

    class Rollback(Exception):
        pass

    thread = threading.Thread(target=second)
    with pytest.raises(Rollback) if not first_commits else nullcontext():
        with store.transaction(immediate=True) as conn:
            answers["first"] = outbox.enqueue(conn, voucher_id="V-1", version=1, idempotency_key="V-1:a", now=NOW)
            thread.start()
            second_started.wait(5)
            thread.join(0.3)  # the second enqueuer is now waiting for this transaction
            assert thread.is_alive()
            if not first_commits:
                raise Rollback
    thread.join(10)
    assert answers == {"first": True, "second": not first_commits}
    with store.transaction() as conn:
        rows = conn.execute(select(deliveries.c.version).where(deliveries.c.idempotency_key == "V-1:a")).all()
    assert [r.version for r in rows] == [1 if first_commits else 2]


def test_naive_datetimes_are_refused(store):
    with pytest.raises(Exception, match="no time zone"):
        with store.transaction(immediate=True) as conn:
            repo.save_voucher(conn, make_voucher(), "h", dt.datetime(2024, 1, 1))
    with store.transaction() as conn:
        assert repo.latest_version(conn, "V-0001") is None  # rolled back


# --- queries ----------------------------------------------------------------------------------


@pytest.fixture
def archive(store):
    """12 vouchers over 2 organisations and 2 periods."""
    for org in ("ORG-A", "ORG-B"):
        for period in ("2024-01", "2024-02"):
            for no in (1, 2, 3):
                amount = f"{no * 1000}.00"
                word = "记" if no < 3 else "付"
                save(store, make_voucher(f"{org}-{period}-{no}", org=org, period=period, no=no,
                                         amount=amount, word=word, summary=f"{org} 第{no}号"))
    return store


def query(store, **filters):
    with store.transaction() as conn:
        return repo.query_vouchers(conn, VoucherQuery(**filters))


def ids(page):
    return [item.voucher_id for item in page.items]


def test_query_filters_order_and_paging(archive):
    everything = query(archive)
    assert everything.total == 12
    assert ids(everything)[:3] == ["ORG-A-2024-01-3", "ORG-A-2024-01-1", "ORG-A-2024-01-2"]  # 付 < 记
    assert query(archive, org_code="ORG-B").total == 6
    assert query(archive, period_from="2024-02").total == 6
    assert query(archive, period_to="2024-01", org_code="ORG-A").total == 3
    assert query(archive, voucher_word="付").total == 4
    assert query(archive, voucher_no_from=2, voucher_no_to=2).total == 4
    assert query(archive, amount_min=Decimal("2000"), amount_max=Decimal("2999.99")).total == 4
    assert query(archive, amount_min=Decimal("3000.01")).total == 0
    assert query(archive, amount_min=Decimal("2999.995"), amount_max=Decimal("3000.004")).total == 4
    assert query(archive, amount_min=Decimal("1000.001"), amount_max=Decimal("1999.999")).total == 0

    page2 = query(archive, page=2, page_size=5)
    assert (page2.total, page2.page, page2.page_size, len(page2.items)) == (12, 2, 5, 5)
    assert ids(page2) == ids(everything)[5:10]
    assert len(query(archive, page=3, page_size=5).items) == 2
    with pytest.raises(ValidationFailed):
        query(archive, page=0)
    with pytest.raises(ValidationFailed):
        query(archive, page_size=501)


def test_query_scope_restricts_items_and_total(archive):
    scoped = query(archive, org_codes=frozenset({"ORG-B"}))
    assert scoped.total == 6 and {item.org_code for item in scoped.items} == {"ORG-B"}
    assert query(archive, org_codes=frozenset({"ORG-B"}), org_code="ORG-A").total == 0
    assert query(archive, org_codes=frozenset()).total == 0
    assert query(archive, org_codes=None).total == 12


def test_query_state_filter_follows_workflow(archive):
    with archive.transaction(immediate=True) as conn:
        repo.set_workflow(conn, "ORG-A-2024-01-1", state=WorkflowState.REJECTED, oa_request_id="9",
                          decided_at=NOW, approvals=[Approval(1, "张总", "REJECT", "金额不符", NOW)])
    rejected = query(archive, state=WorkflowState.REJECTED)
    assert ids(rejected) == ["ORG-A-2024-01-1"] and rejected.items[0].state is WorkflowState.REJECTED
    assert query(archive, state=WorkflowState.NONE).total == 11
    with archive.transaction() as conn:
        assert repo.count_by_state(conn) == {WorkflowState.NONE: 11, WorkflowState.REJECTED: 1}
        assert repo.count_by_state(conn, org_codes=frozenset({"ORG-B"})) == {WorkflowState.NONE: 6}
        latest = repo.workflow_of_latest(conn)
    assert len(latest) == 12 and latest["ORG-A-2024-01-1"] == (WorkflowState.REJECTED, "9")
    assert latest["ORG-B-2024-01-1"] == (WorkflowState.NONE, None)


def test_keyword_matches_summaries_and_wildcards_are_literal(store):
    save(store, make_voucher("P", summary="返利 100% 到账", no=1))
    save(store, make_voucher("U", summary="项目_A 结算", no=2))
    save(store, make_voucher("X", summary="返利 1000 到账 项目AA", no=3))
    save(store, make_voucher("E", summary=None, no=4, entries=(
        Entry(1, "计提 50% 奖金", "6602", "管理费用", debit=Decimal("1")),
        Entry(2, "应付职工薪酬", "2211", "应付职工薪酬", credit=Decimal("1")),
    )))
    assert ids(query(store, keyword="100%")) == ["P"]
    assert ids(query(store, keyword="项目_A")) == ["U"]
    assert ids(query(store, keyword="%")) == ["P", "E"]
    assert ids(query(store, keyword="_")) == ["U"]
    assert ids(query(store, keyword="奖金")) == ["E"]  # entry summary (分录摘要)
    assert query(store, keyword="返利").total == 2


def test_latest_query_uses_the_partial_index(archive):
    sqlite_only(archive)
    with archive.transaction() as conn:
        plan = conn.exec_driver_sql(
            "EXPLAIN QUERY PLAN SELECT count(*) FROM vouchers WHERE is_latest = 1 AND org_code = 'ORG-A'"
        ).all()
    assert "ix_vouchers_latest_order" in str(plan)


# --- workflow, attachments, request map, sync selection ---------------------------------------


def test_set_workflow_replaces_trail_and_unknown_voucher_is_not_found(store):
    save(store, make_voucher())
    with store.transaction(immediate=True) as conn:
        repo.set_workflow(conn, "V-0001", state=WorkflowState.SUBMITTED, oa_request_id="1001")
        repo.set_workflow(conn, "V-0001", state=WorkflowState.APPROVED, decided_at=NOW,
                          approvals=[Approval(1, "甲", "APPROVE", "同意", NOW)])
        repo.set_workflow(conn, "V-0001", state=WorkflowState.APPROVED,
                          approvals=[Approval(1, "乙", "APPROVE", None, NOW)])
        workflow = repo.load_voucher(conn, "V-0001").workflow
        with pytest.raises(NotFound):
            repo.set_workflow(conn, "NOPE", state=WorkflowState.QUEUED)
    assert workflow == WorkflowInfo(WorkflowState.APPROVED, "1001", NOW, (Approval(1, "乙", "APPROVE", None, NOW),))


def test_find_attachment_prefers_latest_version(store):
    meta = AttachmentMeta("ATT-9", "发票.pdf", "application/pdf", 5, "c" * 64, AttachmentKind.INVOICE)
    save(store, make_voucher(attachments=(meta,), attachment_count=1), "h1")
    newer = dataclasses.replace(meta, size=6, sha256="d" * 64)
    save(store, make_voucher(attachments=(newer,), attachment_count=1, amount="2.00"), "h2")
    with store.transaction() as conn:
        assert repo.find_attachment(conn, "ATT-9") == (newer, "V-0001", "ORG-A")
        assert repo.find_attachment(conn, "ATT-0") is None


def test_request_map_both_ways(store):
    save(store, make_voucher())
    with store.transaction(immediate=True) as conn:
        repo.map_request(conn, external_key="V-0001:abc", voucher_id="V-0001", version=1, oa_request_id="5001")
        repo.map_request(conn, external_key="V-0001:abc", voucher_id="V-0001", version=1, oa_request_id="5001")
    with store.transaction() as conn:
        expected = repo.RequestMapping("V-0001:abc", "V-0001", 1, "5001")
        assert repo.lookup_request(conn, oa_request_id="5001") == expected
        assert repo.lookup_request(conn, external_key="V-0001:abc") == expected
        assert repo.lookup_request(conn, oa_request_id="404") is None


def test_select_for_sync(archive):
    with archive.transaction(immediate=True) as conn:
        repo.set_workflow(conn, "ORG-B-2024-02-1", state=WorkflowState.QUEUED)
        pending = repo.select_for_sync(conn, org_code="ORG-B", period_from="2024-02")
        assert [row[0] for row in pending] == ["ORG-B-2024-02-3", "ORG-B-2024-02-2"]
        assert pending[0][1:] == (1, "hash-ORG-B-2024-02-3")
        chosen = repo.select_for_sync(conn, voucher_ids=["ORG-A-2024-01-2", "ORG-B-2024-02-1", "NOPE"],
                                      states=(WorkflowState.NONE, WorkflowState.QUEUED))
        assert [row[0] for row in chosen] == ["ORG-A-2024-01-2", "ORG-B-2024-02-1"]
        assert len(repo.select_for_sync(conn)) == 11


# --- engine ------------------------------------------------------------------------------------


def test_concurrent_writers_wait_instead_of_failing(store):
    errors = []

    def worker(n):
        try:
            for i in range(10):
                save(store, make_voucher(f"T{n}-{i}", no=n * 100 + i))
        except Exception as exc:  # noqa: BLE001  (collected and asserted below)
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert query(store).total == 80


def test_immediate_transaction_takes_the_write_lock_up_front(store):
    sqlite_only(store)
    other = sqlite3.connect(store.engine.url.database, timeout=0, isolation_level=None)
    try:
        with store.transaction(immediate=True) as conn:
            assert conn.connection.driver_connection.in_transaction
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                other.execute("BEGIN IMMEDIATE")  # the lock is held before anything is written
        with store.transaction() as conn:  # a read: a transaction (one snapshot), no write lock
            assert conn.connection.driver_connection.in_transaction
            other.execute("BEGIN IMMEDIATE")
            other.execute("ROLLBACK")
    finally:
        other.close()
    with store.transaction() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    assert store.ping()


def test_a_begin_that_finds_the_database_locked_raises_sqlalchemys_error(store, db_settings):
    sqlite_only(store)
    from sqlalchemy.exc import OperationalError

    from archive_oa.store.engine import open_store

    impatient = open_store(db_settings.replace(database={"sqlite_busy_timeout_ms": 50}), upgrade=False)
    holder = sqlite3.connect(store.engine.url.database, timeout=0, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        with pytest.raises(OperationalError, match="locked"):
            with impatient.transaction(immediate=True):
                pass
        holder.execute("ROLLBACK")
        with impatient.transaction(immediate=True) as conn:  # the pool is not left broken
            assert conn.connection.driver_connection.in_transaction
    finally:
        holder.close()
        impatient.dispose()


def test_sqlite_commits_reach_the_disk_unless_told_otherwise(store, db_settings):
    sqlite_only(store)
    from archive_oa.errors import ConfigurationError
    from archive_oa.store.engine import open_store

    with store.transaction() as conn:
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
    faster = open_store(db_settings.replace(database={"sqlite_synchronous": "normal"}), upgrade=False)
    try:
        with faster.transaction() as conn:
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
    finally:
        faster.dispose()
    with pytest.raises(ConfigurationError, match="sqlite_synchronous = 'OFF'.*FULL, NORMAL, EXTRA"):
        open_store(db_settings.replace(database={"sqlite_synchronous": "OFF"}), upgrade=False)


def test_transaction_rolls_back_on_error(store):
    with pytest.raises(RuntimeError):
        with store.transaction(immediate=True) as conn:
            repo.save_voucher(conn, make_voucher(), "h", NOW)
            raise RuntimeError("boom")
    with store.transaction() as conn:
        assert repo.load_voucher(conn, "V-0001") is None


# --- blobs -------------------------------------------------------------------------------------


def test_blobs_are_content_addressed_and_checked_on_read(tmp_path):
    blobs = BlobStore(tmp_path / "blobs")
    data = "电子发票 PDF".encode()
    digest = blobs.put(data)
    assert blobs.put(data) == digest and blobs.exists(digest)
    assert blobs.read(digest) == data
    with blobs.open(digest) as stream:
        assert stream.read() == data
    path = tmp_path / "blobs" / digest[:2] / digest[2:4] / digest
    path.write_bytes(data.replace("PDF".encode(), "pdf".encode()))  # tampered on disk, same size
    with pytest.raises(IntegrityError, match=digest):
        blobs.read(digest)
    with pytest.raises(IntegrityError):
        with blobs.open(digest) as stream:
            stream.read()
    with pytest.raises(NotFound):
        blobs.read("0" * 64)
    with pytest.raises(NotFound):
        blobs.read("../../etc/passwd")
    assert not blobs.exists("../x")
    assert list((tmp_path / "blobs").rglob(".tmp-*")) == []


def test_the_database_its_wal_and_the_blobs_are_owner_only_whatever_the_umask(tmp_path):
    from archive_oa.settings import load_settings
    from archive_oa.store.engine import open_store

    old_umask = os.umask(0o022)  # the common default: new files 0644, folders 0755
    try:
        settings = load_settings(data_dir=tmp_path / "new" / "data", env={})
        store = open_store(settings)
        try:
            store.blobs.put("电子发票 PDF".encode())
            with store.transaction(immediate=True) as conn:
                repo.save_voucher(conn, make_voucher(), "hash-1", NOW)
            created = [tmp_path / "new", *(tmp_path / "new").rglob("*")]
            names = {path.name for path in created}
            assert {"archive-oa.db", "archive-oa.db-wal", "archive-oa.db-shm", "blobs"} <= names
            loose = {str(p): oct(stat.S_IMODE(p.stat().st_mode)) for p in created
                     if stat.S_IMODE(p.stat().st_mode) != (0o700 if p.is_dir() else 0o600)}
            assert not loose
        finally:
            store.dispose()
    finally:
        os.umask(old_umask)


# --- migrations --------------------------------------------------------------------------------


def test_migrations_upgrade_an_empty_database_to_the_tables_in_code(tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path / 'empty.db'}")
    try:
        head = migrations.head_revision()
        assert migrations.current_revision(engine) is None
        assert migrations.upgrade(engine) == head
        assert migrations.upgrade(engine) == head  # again: nothing to do
        names = set(inspect(engine).get_table_names())
        assert {"vouchers", "entries", "attachments", "approvals", "request_map", "users"} <= names
        mine = {"vouchers", "entries", "attachments", "approvals", "request_map", "users"}
        with engine.connect() as conn:
            diffs = compare_metadata(MigrationContext.configure(conn), metadata)
        drift = [d for d in _flatten(diffs) if _table_of(d) in mine]
        assert drift == []
    finally:
        engine.dispose()


def _flatten(diffs):
    for diff in diffs:
        if isinstance(diff, list):
            yield from diff
        else:
            yield diff


def _table_of(diff):
    for part in diff[1:]:
        table = getattr(part, "table", None)
        if table is not None:
            return table.name
        if isinstance(part, str):
            return part
        if hasattr(part, "name") and hasattr(part, "columns"):
            return part.name
    return None


# --- users -------------------------------------------------------------------------------------


def test_users_insert_update_and_list(store):
    alice = user_repo.UserRecord("alice", "scrypt$1$2$3$s$h", frozenset({"viewer"}), None, False, NOW)
    bob = user_repo.UserRecord("bob", "x", frozenset({"operator", "viewer"}), frozenset({"ORG-A", "ORG-B"}), True, NOW)
    with store.transaction(immediate=True) as conn:
        user_repo.put_user(conn, alice)
        user_repo.put_user(conn, bob)
        user_repo.put_user(conn, dataclasses.replace(alice, roles=frozenset({"admin"}), org_scope=frozenset(),
                                                     created_at=NOW + dt.timedelta(days=1)))
    with store.transaction() as conn:
        assert user_repo.get_user(conn, "bob") == bob
        assert user_repo.get_user(conn, "carol") is None
        listed = user_repo.list_users(conn)
    assert [u.username for u in listed] == ["alice", "bob"]
    assert listed[0].roles == frozenset({"admin"}) and listed[0].org_scope == frozenset()
    assert listed[0].created_at == NOW  # kept from the first insert
