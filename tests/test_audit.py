"""The audit log: a gapless hash chain written in the transaction of the change it records,
``audit verify`` catching a modified, inserted or deleted record and a cut tail, and the
gateway recording every call — allowed, denied or failed — over real HTTP with zeep.

Every test runs on SQLite and on PostgreSQL (the ``store`` fixture of conftest.py).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import threading
import time

import pytest
import requests
import sqlalchemy as sa
import zeep
from lxml import etree
from zeep.exceptions import Fault
from zeep.transports import Transport
from zeep.wsse.username import UsernameToken

from archive_oa.cli.main import main as cli_main
from archive_oa.domain.model import WorkflowState
from archive_oa.errors import InternalError
from archive_oa.gateway.app import build_gateway_services, make_gateway_app
from archive_oa.gateway.server import start_gateway
from archive_oa.services import audit, audit_verify
from archive_oa.services.call_audit import AuditNotWritten, CallAudit, commit_record
from archive_oa.store.group_commit import GroupCommit
from archive_oa.services.users import UserService
from archive_oa.store import outbox
from archive_oa.store import vouchers as voucher_repo
from archive_oa.store.audit_tables import audit_log
from archive_oa.store.document_tables import archived_documents
from archive_oa.voucher_xml import canonical_hash

import factories

UTC = dt.timezone.utc
T0 = dt.datetime(2024, 3, 5, 8, 0, tzinfo=UTC)
GW = "urn:archive-oa:gateway:1"


# --- helpers ----------------------------------------------------------------------------


def append(store, n: int, *, start: int = 0) -> None:
    for i in range(start, start + n):
        with store.transaction(immediate=True) as conn:
            audit.record(conn, actor=f"user{i % 3}", source="10.0.0.7", operation="GetVoucher",
                         targets=[f"voucherId=V-{i}"], outcome="OK" if i % 4 else "NotFound",
                         duration_ms=i, correlation_id=f"c-{i}", details={"n": i},
                         now=T0 + dt.timedelta(seconds=i))


def rows(store) -> list[dict]:
    with store.transaction() as conn:
        return [dict(r) for r in conn.execute(audit_log.select().order_by(audit_log.c.seq)).mappings()]


def tamper(store, *statements: str, params: dict | None = None) -> None:
    """Change the table behind the application's back, as someone with database access could
    (on PostgreSQL that includes switching off the append-only trigger)."""
    with store.transaction(immediate=True) as conn:
        if store.dialect == "postgresql":
            conn.exec_driver_sql("ALTER TABLE audit_log DISABLE TRIGGER USER")
        for sql in statements:
            conn.execute(sa.text(sql), params or {})
        if store.dialect == "postgresql":
            conn.exec_driver_sql("ALTER TABLE audit_log ENABLE TRIGGER USER")


def forged(seq: int, prev_hash: str, **changes) -> dict:
    row = {"seq": seq, "at": T0, "actor": "intruder", "source": "10.6.6.6", "operation": "ArchiveDocument",
           "targets": '["orgCode=ORG1"]', "outcome": "OK", "duration_ms": 1, "correlation_id": "forged",
           "details": None, "prev_hash": prev_hash, **changes}
    row["hash"] = audit.record_hash(row)
    return row


def insert_row(store, row: dict) -> None:
    with store.transaction(immediate=True) as conn:
        conn.execute(audit_log.insert().values(**row))


def rehash_from(store, seq: int) -> None:
    """What a careful intruder does after a change: recompute every later hash."""
    chain = rows(store)
    prev = chain[seq - 2]["hash"] if seq > 1 else audit.GENESIS_HASH
    for row in chain[seq - 1:]:
        row["prev_hash"] = prev
        row["hash"] = audit.record_hash(row)
        tamper(store, "UPDATE audit_log SET prev_hash = :p, hash = :h WHERE seq = :s",
               params={"p": row["prev_hash"], "h": row["hash"], "s": row["seq"]})
        prev = row["hash"]


@pytest.fixture
def cli(db_settings, database_url, monkeypatch, capsys):
    """``archive-oa …`` in-process on the test's database; returns (exit code, stdout, stderr)."""
    for name in ("ARCHIVE_OA_HOME", "ARCHIVE_OA_SECURITY_AUDIT_CHECKPOINT"):
        monkeypatch.delenv(name, raising=False)
    if database_url:
        monkeypatch.setenv("ARCHIVE_OA_DATABASE_URL", database_url)
    else:
        monkeypatch.delenv("ARCHIVE_OA_DATABASE_URL", raising=False)

    def run(*args: str):
        capsys.readouterr()
        try:
            code = cli_main([*args, "--data-dir", str(db_settings.data_dir)])
        except SystemExit as exc:  # argparse refusing the command line
            code = exc.code
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


@pytest.fixture
def chain(store, db_settings, cli):
    """Eight records and a checkpoint at #8 (written by a clean ``audit verify``)."""
    append(store, 8)
    code, out, err = cli("audit", "verify")
    assert code == 0, err
    assert "8 records checked" in out
    return audit_verify.checkpoint_path(db_settings)


def assert_broken_at(cli, seq: int, *words: str) -> str:
    code, out, err = cli("audit", "verify")
    assert code == 1, out
    first = err.splitlines()[0]
    assert first.startswith(f"audit log BROKEN at record {seq}:"), err
    for word in words:
        assert word in first, err
    return err


# --- the chain ----------------------------------------------------------------------------


def test_records_form_a_gapless_hash_chain(store):
    append(store, 5)
    chain = rows(store)
    assert [r["seq"] for r in chain] == [1, 2, 3, 4, 5]
    assert chain[0]["prev_hash"] == audit.GENESIS_HASH
    for before, after in zip(chain, chain[1:]):
        assert after["prev_hash"] == before["hash"]
    for row in chain:
        assert audit.record_hash(row) == row["hash"]
    with store.transaction() as conn:
        result = audit_verify.verify_chain(conn)
        assert audit.head(conn) == (5, chain[-1]["hash"])
    assert result.ok and result.checked == 5 and result.head_seq == 5


def test_every_field_is_covered_by_the_hash(store):
    append(store, 1)
    row = rows(store)[0]
    changes = {"at": T0 + dt.timedelta(microseconds=1), "actor": "x", "source": "x", "operation": "x",
               "targets": "[]", "outcome": "x", "duration_ms": 2, "correlation_id": "x", "details": "{}",
               "prev_hash": "1" * 64, "seq": 2}
    for field, value in changes.items():
        assert audit.record_hash({**row, field: value}) != row["hash"], field


def test_concurrent_appenders_never_share_or_skip_a_number(store):
    errors = []

    def writer(k):
        try:
            for i in range(8):
                with store.transaction(immediate=True) as conn:
                    audit.record(conn, actor=f"w{k}", source=None, operation="Test", outcome="OK",
                                 details={"i": i})
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors
    assert [r["seq"] for r in rows(store)] == list(range(1, 33))
    with store.transaction() as conn:
        assert audit_verify.verify_chain(conn).ok


def test_sqlite_appends_need_the_write_lock(store, backend):
    if backend != "sqlite":
        pytest.skip("SQLite: a deferred transaction cannot hold the chain head")
    with pytest.raises(InternalError, match="immediate=True"):
        with store.transaction() as conn:
            audit.record(conn, actor="a", source=None, operation="Test", outcome="OK")


def test_postgres_refuses_update_delete_and_truncate(store, backend):
    if backend != "postgresql":
        pytest.skip("the append-only trigger is PostgreSQL's")
    append(store, 2)
    for sql in ("UPDATE audit_log SET outcome = 'OK'", "DELETE FROM audit_log WHERE seq = 2",
                "TRUNCATE audit_log"):
        with pytest.raises(sa.exc.DBAPIError, match="append-only"):
            with store.transaction(immediate=True) as conn:
                conn.exec_driver_sql(sql)
    assert len(rows(store)) == 2


def test_no_secret_reaches_a_record(store):
    with store.transaction(immediate=True) as conn:
        audit.record(conn, actor="u" * 500, source="s", operation="UserPasswd", targets=["user=alice"],
                     outcome="OK", details={"password": "hunter2", "nonceValue": "abc", "Authorization": "Basic x",
                                            "content": "aGVsbG8=", "roles": ["viewer"]})
    (row,) = rows(store)
    assert "hunter2" not in json.dumps(row, default=str) and "aGVsbG8=" not in row["details"]
    assert json.loads(row["details"]) == {"Authorization": "[redacted]", "content": "[redacted]",
                                          "nonceValue": "[redacted]", "password": "[redacted]", "roles": ["viewer"]}
    assert len(row["actor"]) == 128  # clipped to the column, still hashed as stored
    assert audit.record_hash(row) == row["hash"]


# --- audit verify: modified, inserted, deleted, cut tail ------------------------------------


def test_verify_writes_the_checkpoint_outside_the_database(chain, store):
    saved = json.loads(chain.read_text())
    assert saved["sequence"] == 8 and saved["hash"] == rows(store)[-1]["hash"]
    assert saved["first_hash"] == rows(store)[0]["hash"]


def test_verify_detects_a_modified_record(chain, store, cli):
    assert rows(store)[4]["outcome"] == "NotFound"
    tamper(store, "UPDATE audit_log SET outcome = 'OK' WHERE seq = 5")  # hide a failed attempt
    assert_broken_at(cli, 5, "modified")
    assert json.loads(chain.read_text())["sequence"] == 8  # a broken chain never moves the checkpoint


def test_verify_detects_a_modified_record_whose_hash_was_recomputed(chain, store, cli):
    row = rows(store)[2]
    row["actor"] = "someone-else"
    tamper(store, "UPDATE audit_log SET actor = :a, hash = :h WHERE seq = 3",
           params={"a": row["actor"], "h": audit.record_hash(row)})
    assert_broken_at(cli, 4, "does not follow record 3")


def test_verify_detects_an_inserted_record(chain, store, cli):
    # Make room at #4 (in two steps: the primary key is checked row by row), then forge a
    # record that links correctly to #3.
    tamper(store, "UPDATE audit_log SET seq = seq + 1000 WHERE seq >= 4",
           "UPDATE audit_log SET seq = seq - 999 WHERE seq >= 1000")
    insert_row(store, forged(4, rows(store)[2]["hash"]))
    assert_broken_at(cli, 5, "inserted")


def test_verify_detects_an_insertion_even_when_every_later_hash_was_recomputed(chain, store, cli):
    tamper(store, "UPDATE audit_log SET seq = seq + 1000 WHERE seq >= 4",
           "UPDATE audit_log SET seq = seq - 999 WHERE seq >= 1000")
    insert_row(store, forged(4, rows(store)[2]["hash"]))
    rehash_from(store, 5)
    with store.transaction() as conn:
        assert audit_verify.verify_chain(conn).ok  # the chain alone is fooled …
    assert_broken_at(cli, 8, "checkpoint")  # … the checkpoint outside the database is not


def test_verify_detects_a_deleted_record(chain, store, cli):
    tamper(store, "DELETE FROM audit_log WHERE seq = 3")
    assert_broken_at(cli, 3, "missing (deleted)")


def test_verify_detects_a_deleted_record_when_the_rest_was_renumbered(chain, store, cli):
    tamper(store, "DELETE FROM audit_log WHERE seq = 3", "UPDATE audit_log SET seq = seq + 1000 WHERE seq > 3",
           "UPDATE audit_log SET seq = seq - 1001 WHERE seq > 1000")
    assert_broken_at(cli, 3)


def test_verify_detects_a_cut_tail_with_the_checkpoint(chain, store, cli):
    tamper(store, "DELETE FROM audit_log WHERE seq >= 6")
    with store.transaction() as conn:
        assert audit_verify.verify_chain(conn).ok  # what is left still links up …
    err = assert_broken_at(cli, 6, "cut tail", "recorded 8")  # … but the checkpoint says 8
    assert "records 6 to 8 are gone" in err
    code, _, err = cli("audit", "checkpoint")  # the incremental check sees it too
    assert code == 1 and "BROKEN at record 6" in err
    assert json.loads(chain.read_text())["sequence"] == 8


def test_a_checkpoint_of_another_log_is_reported(chain, store, cli):
    saved = json.loads(chain.read_text())
    chain.write_text(json.dumps({**saved, "first_hash": "f" * 64}))
    assert_broken_at(cli, 1, "another database")


def test_checkpoint_moves_forward_over_a_sound_chain(chain, store, cli):
    append(store, 3, start=8)
    code, out, err = cli("audit", "checkpoint")
    assert code == 0, err
    assert "3 records checked (records since the checkpoint)" in out
    assert json.loads(chain.read_text())["sequence"] == 11


def test_checkpoint_keeper_follows_the_head(store, tmp_path):
    append(store, 2)
    path = tmp_path / "elsewhere" / "audit-checkpoint.json"
    keeper = audit_verify.CheckpointKeeper(store, path, interval=0.05).start()
    try:
        append(store, 3, start=2)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if path.exists() and json.loads(path.read_text())["sequence"] == 5:
                break
            time.sleep(0.05)
    finally:
        keeper.stop()
    assert json.loads(path.read_text())["sequence"] == 5


# --- list and export ----------------------------------------------------------------------


def test_list_filters_and_limits(chain, cli):
    code, out, _ = cli("audit", "list", "--user", "user1", "--limit", "2")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["seq", "time", "(UTC)"]
    assert [line.split()[0] for line in lines[2:]] == ["5", "8"]  # user1 wrote 2, 5, 8: the newest two
    code, out, _ = cli("audit", "list", "--since", "2024-03-05T16:00:06+08:00")
    assert [line.split()[0] for line in out.splitlines()[2:]] == ["7", "8"]
    code, _, err = cli("audit", "list", "--since", "yesterday")
    assert code == 2 and "--since 'yesterday'" in err


def test_export_csv_and_jsonl_carry_the_chain(chain, store, cli, tmp_path):
    target = tmp_path / "audit.jsonl"
    code, _, err = cli("audit", "export", "--format", "jsonl", "-o", str(target))
    assert code == 0 and "8 audit records" in err
    lines = [json.loads(line) for line in target.read_text(encoding="utf-8").splitlines()]
    assert [r["seq"] for r in lines] == list(range(1, 9))
    assert lines[3]["targets"] == ["voucherId=V-3"] and lines[3]["details"] == {"n": 3}
    assert lines[7]["hash"] == rows(store)[-1]["hash"]
    code, out, _ = cli("audit", "export", "--format", "csv", "--operation", "GetVoucher", "--user", "user0")
    header, *records = out.strip().splitlines()
    assert header.startswith("seq,at,actor,source,operation,targets,outcome")
    assert [r.split(",")[0] for r in records] == ["1", "4", "7"]


# --- the gateway: every call, and the change with its record -------------------------------

PASSWORD = "Pw-审计-9f3c!-2026"  # [security] min_password_length: 12 characters


@pytest.fixture
def gateway(store, db_settings):
    users = UserService(store, settings=db_settings)
    users.add_user("viewer1", PASSWORD, {"viewer"}, {"ORG1"})
    users.add_user("archivist1", PASSWORD, {"archivist"}, {"ORG1"})
    voucher = factories.voucher("V-ORG2-1", org="ORG2", org_name="ORG2", fonds="F", summary="差旅费",
                                amount=1)  # delivered as OA request 7002: outside ORG1
    with store.transaction(immediate=True) as conn:
        voucher_repo.save_voucher(conn, voucher, canonical_hash(voucher), T0)
        key = f"V-ORG2-1:{canonical_hash(voucher)[:16]}"
        outbox.enqueue(conn, voucher_id="V-ORG2-1", version=1, idempotency_key=key, now=T0)
        voucher_repo.map_request(conn, external_key=key, voucher_id="V-ORG2-1", version=1, oa_request_id="7002")
        voucher_repo.set_workflow(conn, "V-ORG2-1", state=WorkflowState.SUBMITTED, oa_request_id="7002")
    app = make_gateway_app(db_settings, build_gateway_services(db_settings, store))
    handle = start_gateway(app, "127.0.0.1", 0)
    yield handle
    handle.stop()


def client(handle, user=None, secret=PASSWORD, correlation_id=None):
    session = requests.Session()
    if correlation_id:
        session.headers["X-Correlation-Id"] = correlation_id
    wsse = UsernameToken(user, secret) if user else None
    return zeep.Client(handle.wsdl_url, wsse=wsse, transport=Transport(session=session)).service


def records_of(store, correlation_id) -> list[audit.AuditRecord]:
    with store.transaction() as conn:
        return [r for r in audit.find_records(conn) if r.correlation_id == correlation_id]


def fault_code(call) -> str:
    with pytest.raises(Fault) as info:
        call()
    return info.value.detail.find(f"{{{GW}}}GatewayFault/{{{GW}}}code").text


def archive_call(source_id, org="ORG1", **changes):
    return dict(sourceSystem="ecology", sourceId=source_id, docType="EXPENSE_CLAIM", orgCode=org,
                period="2024-03", title="差旅费报销单", **changes)


def test_every_call_is_recorded_with_who_where_what_and_outcome(gateway, store):
    client(gateway, correlation_id="c-ping").Ping()
    client(gateway, "viewer1", correlation_id="c-query").QueryVouchers(orgCode="ORG1", page=1, pageSize=5)
    assert fault_code(lambda: client(gateway, "viewer1", correlation_id="c-missing").GetVoucher(
        voucherId="V-NONE")) == "NotFound"
    assert fault_code(lambda: client(gateway, "viewer1", "wrong", correlation_id="c-badpw").GetVoucher(
        voucherId="V-ORG2-1")) == "Authentication"
    assert fault_code(lambda: client(gateway, "viewer1", correlation_id="c-role").ArchiveDocument(
        **archive_call("BX-role"))) == "AccessDenied"
    assert fault_code(lambda: client(gateway, "archivist1", correlation_id="c-scope").ArchiveDocument(
        **archive_call("BX-scope", org="ORG2"))) == "AccessDenied"
    assert fault_code(lambda: client(gateway, "archivist1", correlation_id="c-invalid").ArchiveDocument(
        **archive_call("BX-invalid", amount=-5))) == "Validation"

    expected = {
        "c-ping": ("anonymous", "Ping", [], "OK"),
        "c-query": ("viewer1", "QueryVouchers", ["orgCode=ORG1"], "OK"),
        "c-missing": ("viewer1", "GetVoucher", ["voucherId=V-NONE"], "NotFound"),
        "c-badpw": ("viewer1", "GetVoucher", ["voucherId=V-ORG2-1"], "Authentication"),
        "c-role": ("viewer1", "ArchiveDocument", ["orgCode=ORG1", "sourceSystem=ecology", "sourceId=BX-role"],
                   "AccessDenied"),
        "c-scope": ("archivist1", "ArchiveDocument", ["orgCode=ORG2", "sourceSystem=ecology", "sourceId=BX-scope"],
                    "AccessDenied"),
        "c-invalid": ("archivist1", "ArchiveDocument",
                      ["orgCode=ORG1", "sourceSystem=ecology", "sourceId=BX-invalid"], "Validation"),
    }
    for correlation_id, (actor, operation, targets, outcome) in expected.items():
        (record,) = records_of(store, correlation_id)
        assert (record.actor, record.operation, list(record.targets), record.outcome) == (
            actor, operation, targets, outcome), correlation_id
        assert record.source == "127.0.0.1"
        assert record.duration_ms is not None and record.duration_ms >= 0
        assert record.at.tzinfo is not None
    # A failed login is recorded under the name it claimed, marked as not authenticated.
    assert records_of(store, "c-badpw")[0].details == {"authenticated": False}
    assert records_of(store, "c-missing")[0].details is None


def test_a_change_commits_with_its_audit_record(gateway, store):
    result = client(gateway, "archivist1", correlation_id="c-archive").ArchiveDocument(**archive_call("BX-1"))
    (record,) = records_of(store, "c-archive")
    assert (record.operation, record.outcome, record.actor) == ("ArchiveDocument", "OK", "archivist1")
    with store.transaction() as conn:
        stored = conn.execute(archived_documents.select().where(
            archived_documents.c.archive_id == result.archiveId)).first()
    assert stored is not None
    # the repeat changes nothing: recorded on its own, as a read
    again = client(gateway, "archivist1", correlation_id="c-again").ArchiveDocument(**archive_call("BX-1"))
    assert again.duplicate is True
    assert [r.outcome for r in records_of(store, "c-again")] == ["OK"]


def test_a_change_rolls_back_with_its_audit_record(gateway, store, monkeypatch):
    """The record is appended inside the write transaction; when that transaction fails
    after the append, neither the document nor its OK record remain — only the failure."""
    appended = []
    original = CallAudit.before_commit

    def append_then_fail(self, conn):
        original(self, conn)
        appended.append(self._pending)
        raise RuntimeError("the disk is full")  # anything that fails the commit

    monkeypatch.setattr(CallAudit, "before_commit", append_then_fail)
    code = fault_code(lambda: client(gateway, "archivist1", correlation_id="c-rollback").ArchiveDocument(
        **archive_call("BX-rollback")))
    assert code == "Internal" and appended  # the OK record was written … and rolled back
    with store.transaction() as conn:
        kept = conn.execute(archived_documents.select().where(archived_documents.c.source_id == "BX-rollback")).first()
    assert kept is None
    assert [r.outcome for r in records_of(store, "c-rollback")] == ["Internal"]
    with store.transaction() as conn:
        assert audit_verify.verify_chain(conn).ok  # no gap where the rolled-back record was


def test_a_change_refused_inside_its_transaction_leaves_only_the_failure(gateway, store):
    # archivist1 (ORG1) reports an outcome for request 7002 of ORG2: the outcome is applied,
    # then found out of scope, and the transaction with the pending record rolls back.
    assert fault_code(lambda: client(gateway, "archivist1", correlation_id="c-foreign").SubmitWorkflowResult(
        oaRequestId="7002", state="APPROVED", finishedAt=T0)) == "NotFound"
    assert [(r.outcome, r.targets) for r in records_of(store, "c-foreign")] == [("NotFound", ("oaRequestId=7002",))]
    with store.transaction() as conn:
        assert voucher_repo.load_voucher(conn, "V-ORG2-1").state is WorkflowState.SUBMITTED


def test_no_password_token_or_attachment_bytes_in_the_audit_or_the_logs(gateway, store, cli, tmp_path, caplog):
    content = "发票 invoice bytes that must stay out of any log ".encode("utf-8") * 8
    encoded = base64.b64encode(content).decode("ascii")
    caplog.set_level(logging.DEBUG)
    result = client(gateway, "archivist1", correlation_id="c-secret").ArchiveDocument(**archive_call(
        "BX-secret", attachments={"attachment": [{"fileName": "发票.pdf", "mimeType": "application/pdf",
                                                  "content": content}]}))
    assert result.archivalCode
    assert fault_code(lambda: client(gateway, "archivist1", PASSWORD + "-typo").GetVoucher(voucherId="V-1")) \
        == "Authentication"
    assert records_of(store, "c-secret")[0].outcome == "OK"

    exports = []
    for fmt in ("jsonl", "csv"):
        code, out, _ = cli("audit", "export", "--format", fmt)
        assert code == 0 and "BX-secret" in out
        exports.append(out)
    # The test's own zeep client logs its envelopes at DEBUG; the server side must not.
    server_log = "\n".join(
        f"{r.name} {r.getMessage()} {r.exc_text or ''}" for r in caplog.records if not r.name.startswith("zeep")
    )
    assert "c-secret" in "".join(exports)
    for secret in (PASSWORD, encoded, encoded[:40], content.decode("utf-8")[:30]):
        for text in (*exports, server_log):
            assert secret not in text
    # the token itself (a wsse:Security header) is not recorded either
    assert "UsernameToken" not in "".join(exports) and "wsse" not in "".join(exports)


def test_the_audit_record_of_a_read_is_required(gateway, store, monkeypatch):
    """A read whose record cannot be written is refused rather than answered unaudited."""
    def broken(self):
        raise InternalError("audit store unavailable")

    monkeypatch.setattr(CallAudit, "succeeded", broken)
    assert fault_code(lambda: client(gateway, "viewer1").QueryVouchers(page=1, pageSize=5)) == "Internal"


def test_fault_detail_and_record_share_the_correlation_id(gateway, store):
    with pytest.raises(Fault) as info:
        client(gateway, "viewer1").GetVoucher(voucherId="V-NONE")
    correlation_id = info.value.detail.find(f"{{{GW}}}GatewayFault/{{{GW}}}correlationId").text
    (record,) = records_of(store, correlation_id)
    assert record.outcome == "NotFound"
    assert etree.QName(info.value.detail.find(f"{{{GW}}}GatewayFault")).localname == "GatewayFault"


# --- group commit of the records of calls that changed nothing ------------------------------------


def _call_fields(n: int, **changes) -> dict:
    return {"actor": f"user{n % 3}", "source": "10.0.0.7", "operation": "GetVoucher",
            "targets": [f"voucherId=V-{n}"], "outcome": "OK", "duration_ms": n, "correlation_id": f"g-{n}",
            "details": None, "now": T0 + dt.timedelta(seconds=n), **changes}


def _wait_until(condition, what: str) -> None:
    deadline = time.monotonic() + 60
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.005)


class HeldWriter(GroupCommit):
    """The store's group commit, replaced for the test: its first transaction waits until
    the test lets it go, its transactions numbered in ``failing`` (0: the first) fail, and
    those holding a record of ``refused`` (correlation ids) fail as a refused row would."""

    def __init__(self, store, *, failing=(), refused=()) -> None:
        super().__init__(store)
        store.group_commit = self
        self.seen: list[list[str]] = []  # each transaction's correlation ids
        self.release = threading.Event()
        self.failing = set(failing)
        self.refused = set(refused)

    def write(self, fields) -> int:
        return commit_record(self.store, fields)

    @property
    def _queue(self):
        return self._queued

    def _transaction(self, batch):
        self.seen.append([queued.write.keywords["correlation_id"] for queued in batch])
        if len(self.seen) == 1:
            assert self.release.wait(60)
        if len(self.seen) - 1 in self.failing:
            raise sa.exc.OperationalError("COMMIT", {}, Exception("disk I/O error"))
        if self.refused & set(self.seen[-1]):
            raise sa.exc.DataError("INSERT", {}, Exception("text fields cannot contain NUL"))
        return super()._transaction(batch)


def _writers(writer, numbers, results: dict) -> list[threading.Thread]:
    def write(n):
        try:
            results[n] = writer.write(_call_fields(n))
        except Exception as exc:  # noqa: BLE001 - checked by the test
            results[n] = exc

    threads = [threading.Thread(target=write, args=(n,)) for n in numbers]
    for thread in threads:
        thread.start()
    return threads


def test_records_of_calls_ending_together_commit_in_one_transaction(store):
    writer, results = HeldWriter(store), {}
    (first,) = _writers(writer, [0], results)
    _wait_until(lambda: writer.seen, "the first record's transaction")
    rest = _writers(writer, [1, 2, 3], results)
    _wait_until(lambda: len(writer._queue) == 3, "three more records waiting")
    assert results == {}  # nobody has been answered: every record is still uncommitted
    writer.release.set()
    for thread in [first, *rest]:
        thread.join(60)
    assert writer.seen[0] == ["g-0"] and sorted(writer.seen[1]) == ["g-1", "g-2", "g-3"]
    assert len(writer.seen) == 2  # the three waiting records: one transaction
    stored = {r["correlation_id"]: r for r in rows(store)}
    assert {results[n]: f"g-{n}" for n in range(4)} == {r["seq"]: cid for cid, r in stored.items()}
    assert stored["g-2"]["targets"] == '["voucherId=V-2"]' and stored["g-2"]["duration_ms"] == 2
    with store.transaction() as conn:
        assert audit_verify.verify_chain(conn).ok


def test_a_failed_batch_is_written_again_record_by_record_and_the_next_one_is_written(store):
    append(store, 2)
    # the batch of 11 and 12 fails, and so do both records alone (a failure of the moment)
    writer, results = HeldWriter(store, failing={1, 2, 3}), {}
    (first,) = _writers(writer, [10], results)
    _wait_until(lambda: writer.seen, "the first record's transaction")
    rest = _writers(writer, [11, 12], results)
    _wait_until(lambda: len(writer._queue) == 2, "two more records waiting")
    writer.release.set()
    for thread in [first, *rest]:
        thread.join(60)
    assert results[10] == 3
    assert sorted(writer.seen[1]) == ["g-11", "g-12"]
    assert sorted(map(tuple, writer.seen[2:4])) == [("g-11",), ("g-12",)]
    for n in (11, 12):  # every caller whose record could not be committed hears of it
        assert isinstance(results[n], AuditNotWritten), results[n]
        assert "g-%d" % n in str(results[n]) and "disk I/O error" in str(results[n].__cause__)
    assert writer.write(_call_fields(13)) == 4  # the writer is not stuck
    assert [r["correlation_id"] for r in rows(store)] == ["c-0", "c-1", "g-10", "g-13"]
    with store.transaction() as conn:
        assert audit_verify.verify_chain(conn).ok


def test_a_record_the_database_refuses_fails_alone_and_its_batch_mates_are_written(store):
    writer, results = HeldWriter(store, refused={"g-12"}), {}
    (first,) = _writers(writer, [10], results)
    _wait_until(lambda: writer.seen, "the first record's transaction")
    rest = _writers(writer, [11, 12, 14], results)
    _wait_until(lambda: len(writer._queue) == 3, "three more records waiting")
    writer.release.set()
    for thread in [first, *rest]:
        thread.join(60)
    assert isinstance(results[12], AuditNotWritten) and "NUL" in str(results[12].__cause__)
    assert sorted(results[n] for n in (10, 11, 14)) == [1, 2, 3]
    assert sorted(r["correlation_id"] for r in rows(store)) == ["g-10", "g-11", "g-14"]
    with store.transaction() as conn:
        assert audit_verify.verify_chain(conn).ok


class StoreWriter:
    """Appends call records through a store's own group commit."""

    def __init__(self, store) -> None:
        self.store = store

    def write(self, fields) -> int:
        return commit_record(self.store, fields)


def test_group_writers_of_several_instances_keep_one_chain(store, db_settings):
    from archive_oa.store.engine import open_store

    other = open_store(db_settings, upgrade=False)  # a second process on the same database
    try:
        writers = [StoreWriter(store), StoreWriter(other)]
        assert store.group_commit is not other.group_commit  # one group commit per store
        results: dict = {}
        threads = [t for k, w in enumerate(writers) for t in _writers(w, range(k * 100, k * 100 + 12), results)]
        for thread in threads:
            thread.join(120)
        assert not [r for r in results.values() if isinstance(r, Exception)]
        assert sorted(results.values()) == list(range(1, 25))
        with store.transaction() as conn:
            assert audit_verify.verify_chain(conn).ok
        assert {r["seq"]: r["correlation_id"] for r in rows(store)} == {s: f"g-{n}" for n, s in results.items()}
    finally:
        other.dispose()


def test_records_appended_in_one_transaction_give_the_chain_of_single_records(store, db_settings, tmp_path):
    with store.transaction(immediate=True) as conn:
        assert [audit.record(conn, **_call_fields(n)) for n in range(3)] == [1, 2, 3]
    batched = rows(store)
    for row in batched:
        del row["seq"]
    from archive_oa.store.engine import open_store

    alone = open_store(db_settings.replace(data_dir=tmp_path / "alone", database={"url": ""}), upgrade=True)
    try:
        for n in range(3):
            with alone.transaction(immediate=True) as conn:
                audit.record(conn, **_call_fields(n))
        singles = rows(alone)
    finally:
        alone.dispose()
    assert [r["hash"] for r in batched] == [r["hash"] for r in singles]


def test_a_read_whose_record_fails_to_commit_is_answered_with_a_fault(gateway, store, monkeypatch):
    def broken(conn, **fields):
        raise sa.exc.OperationalError("INSERT", {}, Exception("disk I/O error"))

    monkeypatch.setattr(audit, "record", broken)
    assert fault_code(lambda: client(gateway, "viewer1").QueryVouchers(page=1, pageSize=5)) == "Internal"
    monkeypatch.undo()
    assert client(gateway, "viewer1", correlation_id="c-after").QueryVouchers(page=1, pageSize=5).total == 0
    assert [r.outcome for r in records_of(store, "c-after")] == ["OK"]


def test_gateway_calls_are_counted_by_operation_and_outcome_in_the_registry_given(store):
    from archive_oa.metrics import Metrics

    metrics = Metrics()
    CallAudit(store, operation="GetVoucher", source=None, correlation_id="c1", metrics=metrics).succeeded()
    CallAudit(store, operation="GetVoucher", source=None, correlation_id="c2", metrics=metrics).failed("NotFound")
    CallAudit(store, operation="GetVoucher", source=None, correlation_id="c3", metrics=metrics).succeeded()
    assert metrics.value("archive_oa_gateway_calls_total", operation="GetVoucher", outcome="OK") == 2
    assert metrics.value("archive_oa_gateway_calls_total", operation="GetVoucher", outcome="NotFound") == 1
