"""The zeep OA client against the OA simulator, over real HTTP on loopback."""

from __future__ import annotations

import base64
import datetime as dt
import random
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from archive_oa import voucher_xml
from archive_oa.domain.delivery import DeliveryState, idempotency_key
from archive_oa.domain.model import AttachmentKind, AttachmentMeta, WorkflowState
from archive_oa.errors import (
    OaAmbiguous,
    OaAuthenticationFailed,
    OaRejected,
    OaServerFault,
    OaUnreachable,
    ValidationFailed,
)
from archive_oa.oa.client import OaClient, load_wsdl
from archive_oa.oa.simulator import SimulatorConfig, start_simulator
from archive_oa.settings import OaSettings, load_settings
from archive_oa.store import outbox
from archive_oa.store import vouchers as repo
from archive_oa.store.engine import open_store
from archive_oa.sync.worker import DeliveryWorker
from archive_oa.transforms.pipeline import Transforms

import factories
from waiting import eventually as wait_for

W = "urn:archive-oa:oa-workflow:1"


def workflow_xml(key: str = "V-0001#abc", amount: str = "1200.00", account: str = "6602",
                 title: str = "华东公司 2024-03 记字第1号 报销差旅费") -> bytes:
    """A WorkflowRequest document (oa-workflow.xsd), written by hand."""
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<WorkflowRequest xmlns="{W}">
  <workflowCode>FIN_VOUCHER_APPROVAL</workflowCode>
  <title>{title}</title>
  <creator>archive-oa</creator>
  <level>1</level>
  <externalKey>{key}</externalKey>
  <mainFields>
    <field><name>pzbh</name><value>V-0001</value></field>
    <field><name>je</name><value>{amount}</value></field>
    <field><name>zy</name><value>报销差旅费（北京）</value></field>
  </mainFields>
  <detailTables>
    <table name="formtable_main_1_dt1">
      <row><field><name>kmbm</name><value>{account}</value></field><field><name>kmmc</name><value>管理费用</value></field></row>
      <row><field><name>kmbm</name><value>1002</value></field><field><name>kmmc</name><value>银行存款</value></field></row>
    </table>
  </detailTables>
  <attachments>
    <attachment><name>发票.pdf</name><mimeType>application/pdf</mimeType><content>JVBERi0xLjQK</content></attachment>
    <attachment><name>合同</name><mimeType>text/html</mimeType><url>http://dms.example/c/1</url></attachment>
  </attachments>
  <remark>备注：加急</remark>
</WorkflowRequest>""".encode("utf-8")


@pytest.fixture
def start(tmp_path):
    handles = []

    def _start(**switches):
        switches.setdefault("decide_after", 0.1)
        handle = start_simulator(SimulatorConfig(**switches), tmp_path / f"sim{len(handles)}")
        handles.append(handle)
        return handle

    yield _start
    for handle in handles:
        handle.stop()


def client_for(url: str, **overrides) -> OaClient:
    values = {"url": url, "connect_timeout": 1.0, "timeout": 3.0, "pool_size": 2}
    values.update(overrides)
    return OaClient(OaSettings(**values))


def test_every_operation_round_trips(start):
    sim = start(reject_above="100000")
    with client_for(sim.url) as client:
        request_id = client.create_request(workflow_xml())
        assert request_id > 0
        assert list(client.find_requests("V-0001#abc")) == [request_id]
        assert list(client.find_requests("no-such-key")) == []

        pending = client.get_request(request_id)
        assert pending.request_id == request_id
        assert pending.external_key == "V-0001#abc"

        batch = wait_for(lambda: client.fetch_completed(0, 10).items and client.fetch_completed(0, 10))
        (item,) = batch.items
        assert (item.request_id, item.external_key, item.status) == (request_id, "V-0001#abc", WorkflowState.APPROVED)
        assert batch.next_cursor == item.cursor > 0
        assert [a.step for a in item.logs] == [1, 2, 3]
        assert item.logs[0].approver == "张伟(部门经理)" and item.logs[0].comment == "同意"
        assert item.finished_at.tzinfo is not None

        decided = client.get_request(request_id)
        assert decided.status is WorkflowState.APPROVED and decided.finished_at is not None
        assert decided.logs == item.logs

        assert client.fetch_completed(item.cursor, 10).items == ()
        client.acknowledge(batch.next_cursor)
        after_ack = client.fetch_completed(0, 10)
        assert after_ack.items == () and after_ack.next_cursor == 0

    stored = sim.db.get(request_id)
    assert stored.form.title == "华东公司 2024-03 记字第1号 报销差旅费"
    assert stored.form.main_value("zy") == "报销差旅费（北京）"
    assert stored.form.detail_values("kmbm") == ["6602", "1002"]
    assert [(a.name, a.size, a.url) for a in stored.form.attachments] == [
        ("发票.pdf", 9, None),
        ("合同", 0, "http://dms.example/c/1"),
    ]
    assert stored.form.level == 1 and stored.form.remark == "备注：加急"


def test_in_progress_maps_to_submitted(start):
    sim = start(decide_after=60)
    with client_for(sim.url) as client:
        request_id = client.create_request(workflow_xml())
        assert client.get_request(request_id).status is WorkflowState.SUBMITTED
        assert client.get_request(request_id).logs == ()


def test_create_is_not_idempotent(start):
    sim = start(decide_after=60)
    with client_for(sim.url) as client:
        first = client.create_request(workflow_xml(key="dup"))
        second = client.create_request(workflow_xml(key="dup"))
        assert first != second
        assert list(client.find_requests("dup")) == [first, second]
    assert sim.db.requests_per_external_key() == {"dup": 2}


def test_rejections_come_back_with_the_approvers_reasons(start):
    sim = start(reject_above="5000", reject_accounts=("1001",))
    with client_for(sim.url) as client:
        big = client.create_request(workflow_xml(key="big", amount="80000.00"))
        cash = client.create_request(workflow_xml(key="cash", account="1001"))
        ok = client.create_request(workflow_xml(key="ok", amount="100"))
        batch = wait_for(lambda: len(client.fetch_completed(0, 10).items) == 3 and client.fetch_completed(0, 10))
    outcome = {item.request_id: item for item in batch.items}
    assert outcome[big].status is WorkflowState.REJECTED
    assert outcome[big].logs[-1].approver == "李娜(财务总监)"
    assert "超出授权" in outcome[big].logs[-1].comment
    assert outcome[cash].status is WorkflowState.REJECTED and "1001" in outcome[cash].logs[-1].comment
    assert outcome[ok].status is WorkflowState.APPROVED
    assert [i.cursor for i in batch.items] == sorted(i.cursor for i in batch.items)


def test_gbk_answers_keep_chinese_text_both_ways(start):
    sim = start(encoding="gbk", reject_above="10")
    title = "华南分公司 付字第8号 支付供应商货款（鑫源贸易）"
    with client_for(sim.url) as client:
        request_id = client.create_request(workflow_xml(key="键-甲", title=title))
        assert list(client.find_requests("键-甲")) == [request_id]
        decided = wait_for(lambda: client.get_request(request_id).status.decided and client.get_request(request_id))
    assert decided.external_key == "键-甲"
    assert decided.status is WorkflowState.REJECTED
    assert decided.logs[-1].comment == "金额 1200.00 超出授权 10，驳回"
    assert sim.db.get(request_id).form.title == title


def test_wrong_password_is_an_authentication_failure(start):
    sim = start()
    with client_for(sim.url, password="wrong") as client:
        with pytest.raises(OaAuthenticationFailed) as caught:
            client.create_request(workflow_xml())
    assert "credentials" in caught.value.message
    assert isinstance(caught.value.__cause__, Exception)
    assert sim.db.count_requests() == 0


def test_server_fault_is_retryable_and_commits_nothing(start):
    sim = start(error_rate=1.0)
    with client_for(sim.url) as client, pytest.raises(OaServerFault) as caught:
        client.create_request(workflow_xml())
    assert "系统繁忙" in caught.value.message
    assert sim.db.count_requests() == 0


def test_server_fault_in_gbk(start):
    sim = start(error_rate=1.0, encoding="gbk")
    with client_for(sim.url) as client, pytest.raises(OaServerFault) as caught:
        client.find_requests("k")
    assert "系统繁忙" in caught.value.message


def test_dropped_connection_is_ambiguous(start):
    sim = start(drop_rate=1.0)
    with client_for(sim.url) as client:
        with pytest.raises(OaAmbiguous):
            client.create_request(workflow_xml())
        with pytest.raises(OaAmbiguous):
            client.fetch_completed(0, 10)
    assert sim.db.count_requests() == 0


@pytest.mark.slow
def test_commit_then_timeout_is_ambiguous_and_the_request_exists(start):
    sim = start(ambiguous_rate=1.0, ambiguous_hold=10.0)
    with client_for(sim.url, timeout=0.5) as client:
        started = time.monotonic()
        with pytest.raises(OaAmbiguous) as caught:
            client.create_request(workflow_xml(key="amb"))
        assert time.monotonic() - started < 8.0  # our read timeout ended it, not the server's 10 s hold
        assert "did not answer within 0.5s" in caught.value.message
        assert sim.db.requests_per_external_key() == {"amb": 1}
        sim.set_faults(ambiguous_rate=0.0)
        assert len(client.find_requests("amb")) == 1


def test_ambiguous_on_a_read_is_a_drop(start):
    sim = start(ambiguous_rate=1.0, ambiguous_hold=5.0)
    with client_for(sim.url, timeout=2.0) as client:
        started = time.monotonic()
        with pytest.raises(OaAmbiguous, match="dropped the connection"):
            client.find_requests("x")
        assert time.monotonic() - started < 1.5


def test_connection_refused_is_unreachable():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with client_for(f"http://127.0.0.1:{port}/soap/workflow") as client:
        with pytest.raises(OaUnreachable, match="could not be reached"):
            client.create_request(workflow_xml())


@pytest.fixture
def garbage_server():
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            body = self.server.answer
            self.send_response(self.server.status)
            self.send_header("Content-Type", "text/xml; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.answer, server.status = b"", 200
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)  # shutdown waits a poll
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(
    "status, answer",
    [
        (200, b"<html>\xb7\xfe\xce\xf1\xc6\xf7 not xml"),  # an HTML error page in GBK
        (200, b'<?xml version="1.0"?><notAnEnvelope/>'),
        (502, b"<html>Bad Gateway</html>"),
    ],
)
def test_garbled_answer_is_ambiguous(garbage_server, status, answer):
    garbage_server.answer, garbage_server.status = answer, status
    url = f"http://127.0.0.1:{garbage_server.server_address[1]}/soap/workflow"
    with client_for(url) as client, pytest.raises(OaAmbiguous):
        client.create_request(workflow_xml())


def test_http_401_is_an_authentication_failure(garbage_server):
    garbage_server.answer, garbage_server.status = b"<html>401 Unauthorized</html>", 401
    url = f"http://127.0.0.1:{garbage_server.server_address[1]}/soap/workflow"
    with client_for(url) as client, pytest.raises(OaAuthenticationFailed):
        client.find_requests("k")


def test_client_faults_are_rejections(start):
    sim = start()
    with client_for(sim.url) as client:
        with pytest.raises(OaRejected, match="does not exist"):
            client.get_request(999)
        with pytest.raises(OaRejected, match="maxItems"):
            client.fetch_completed(0, 0)
        with pytest.raises(OaRejected, match="level = 7"):
            client.create_request(workflow_xml().replace(b"<level>1</level>", b"<level>7</level>"))
    assert sim.db.count_requests() == 0


def test_a_document_that_is_not_a_workflow_request_is_refused_before_sending(start):
    sim = start()
    with client_for(sim.url) as client:
        with pytest.raises(ValidationFailed, match="WorkflowRequest"):
            client.create_request(b"<Voucher xmlns='urn:archive-oa:voucher:1'/>")
        with pytest.raises(ValidationFailed, match="well-formed"):
            client.create_request(b"<WorkflowRequest")
        broken = workflow_xml().replace(b"JVBERi0xLjQK", b"***")
        with pytest.raises(ValidationFailed, match="base64"):
            client.create_request(broken)
    assert sim.db.count_requests() == 0


def test_wsdl_is_parsed_once_and_timeouts_are_explicit():
    first = client_for("http://127.0.0.1:9/soap/workflow", connect_timeout=1.5, timeout=7.0)
    second = client_for("http://127.0.0.1:9/soap/workflow")
    try:
        assert first._client.wsdl is second._client.wsdl is load_wsdl()
        assert first._client.transport.operation_timeout == (1.5, 7.0)
        adapter = first._client.transport.session.get_adapter("http://x")
        assert adapter._pool_maxsize == 2 and adapter.max_retries.total == 0
        assert first._service._binding_options["address"] == "http://127.0.0.1:9/soap/workflow"
        (port,) = load_wsdl().services["WorkflowService"].ports.values()
        assert port.binding_options["address"] == "http://127.0.0.1:8090/soap/workflow"  # the placeholder
    finally:
        first.close()
        second.close()


def test_concurrent_creates_share_the_pool(start):
    sim = start(decide_after=60, latency_ms=20)
    with client_for(sim.url, pool_size=4) as client:
        results: list[int] = []
        errors: list[Exception] = []

        def create(i: int) -> None:
            try:
                results.append(client.create_request(workflow_xml(key=f"k{i}")))
            except Exception as exc:  # collected and asserted below
                errors.append(exc)

        threads = [threading.Thread(target=create, args=(i,)) for i in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert errors == []
    assert len(set(results)) == 12
    assert sim.db.count_requests() == 12


@pytest.mark.slow
def test_find_before_resend_gives_exactly_one_request_per_key_under_faults(start):
    """The contract the sync engine relies on: every fault either committed nothing or is findable."""
    sim = start(error_rate=0.15, drop_rate=0.15, ambiguous_rate=0.1, ambiguous_hold=0.6, seed=11, decide_after=60)
    outcomes = {"created": 0, "found": 0}
    with client_for(sim.url, timeout=0.3) as client:

        def find(key):
            while True:
                try:
                    return client.find_requests(key)
                except (OaServerFault, OaAmbiguous):
                    continue

        for i in range(40):
            key = f"V{i:03d}#hash"
            while True:
                try:
                    client.create_request(workflow_xml(key=key))
                    outcomes["created"] += 1
                    break
                except OaServerFault:
                    pass  # nothing committed: resend (asking first is still the rule)
                except OaAmbiguous:
                    pass
                if find(key):
                    outcomes["found"] += 1
                    break
    assert sim.db.requests_per_external_key() == {f"V{i:03d}#hash": 1 for i in range(40)}
    injected = sim.injector.counts()
    assert injected["error"] and injected["drop"] and injected["ambiguous"]
    assert outcomes["found"] >= 1 and outcomes["created"] + outcomes["found"] == 40


def test_a_request_with_attachments_above_two_mib_is_accepted(start):
    """spyne's default body limit (2 MiB) must not cap what the simulator accepts."""
    import base64

    sim = start()
    big = base64.b64encode(bytes(range(256)) * (12 * 1024)).decode()  # 3 MiB of bytes, 4 MiB base64
    document = workflow_xml(key="big").replace(b"JVBERi0xLjQK", big.encode())
    with client_for(sim.url) as client:
        request_id = client.create_request(document)
    assert sim.db.requests_per_external_key() == {"big": 1}
    assert request_id > 0


#: 10 MB of attachment: 13.3 MB of base64 in one text node, above libxml2's default 10 MB cap
BIG_ATTACHMENT = random.Random(10).randbytes(10_000_000)


def test_our_own_workflow_document_with_a_10_mb_attachment_is_read_whole():
    """The WorkflowRequest document is our stylesheet's output: no libxml2 text cap on it
    (it used to die as a dead letter with "Text node too long"); the OA's answers keep theirs."""
    from archive_oa.oa.client import _zeep_settings, request_from_document

    document = workflow_xml(key="big").replace(b"JVBERi0xLjQK", base64.b64encode(BIG_ATTACHMENT))
    request = request_from_document(document)
    first = request["attachments"]["attachment"][0]
    assert first["name"] == "发票.pdf" and first["content"] == BIG_ATTACHMENT
    assert _zeep_settings().xml_huge_tree is False  # what the OA answers stays capped


@pytest.mark.slow
def test_a_voucher_with_a_10_mb_attachment_is_delivered_to_the_simulator(start, tmp_path):
    """The whole way: stored blob → our stylesheet's WorkflowRequest → client → simulator (20 MiB bodies)."""
    sim = start(decide_after=600)
    settings = load_settings(data_dir=tmp_path / "data", env={}).replace(
        oa={"url": sim.url, "timeout": 60.0}, sync={"workers": 1, "batch_size": 1}
    )
    store = open_store(settings, upgrade=True)
    try:
        sha = store.blobs.put(BIG_ATTACHMENT)
        voucher = factories.voucher(
            org="HD01", org_name="华东实业有限公司", fonds="Z001", day=8, no=100, preparer="王芳",
            summary="设备采购合同扫描件", amount="4200.00", debit=("1601", "固定资产"), lines=("采购设备", "银行付款"),
            attachments=(AttachmentMeta("HD01-2024-03-J-0100-A1", "contract-scan.png", "image/png",
                                        len(BIG_ATTACHMENT), sha, AttachmentKind.CONTRACT),),
        )
        now = dt.datetime.now(dt.timezone.utc)
        content_hash = voucher_xml.canonical_hash(voucher)
        key = idempotency_key(voucher.voucher_id, content_hash)
        with store.transaction(immediate=True) as conn:
            saved = repo.save_voucher(conn, voucher, content_hash, now)
            assert outbox.enqueue(conn, voucher_id=voucher.voucher_id, version=saved.version,
                                  idempotency_key=key, now=now)
        with OaClient(settings.oa) as client:
            worker = DeliveryWorker(store, client, Transforms.from_settings(settings.workflow), settings.sync)
            try:
                counts = worker.run_until_idle(wait_for_retries=False)
            finally:
                worker.close()
        with store.transaction() as conn:
            delivery = outbox.find_by_key(conn, key)
    finally:
        store.dispose()
    assert "Text node too long" not in (delivery.last_error or "")
    assert (counts.delivered, counts.dead) == (1, 0), delivery.last_error
    assert delivery.state is DeliveryState.DELIVERED
    (attachment,) = sim.db.get(int(delivery.oa_request_id)).form.attachments
    assert (attachment.name, attachment.size) == ("contract-scan.png", len(BIG_ATTACHMENT))


def test_the_environment_is_read_once_per_client_and_still_honoured(monkeypatch):
    """Proxies, NO_PROXY and the CA bundle from the environment apply as requests would apply
    them, read when the client is made instead of on every call."""
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("NO_PROXY", "oa.internal")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/company-ca.pem")
    with client_for("http://oa.example/soap/workflow") as proxied, \
            client_for("http://oa.internal/soap/workflow") as direct:
        session = proxied._client.transport.session
        assert session.trust_env is False  # nothing re-read per call
        assert session.proxies["http"] == "http://proxy.example:3128"
        assert session.verify == "/etc/ssl/company-ca.pem"
        assert "http" not in direct._client.transport.session.proxies  # NO_PROXY names it
