"""The OA simulator: approver rules, queue, faults, encodings, authentication, CLI."""

from __future__ import annotations

import datetime as dt
import random
import time
from decimal import Decimal

import pytest
import requests
from lxml import etree

from archive_oa.cli.main import build_parser
from archive_oa.cli.oa_sim import config_from
from archive_oa.oa.simulator import SimulatorConfig, SimulatorDb, start_simulator
from archive_oa.oa.simulator.db import LogEntry, RequestForm, now
from archive_oa.oa.simulator.faults import FaultInjector, operation_name
from archive_oa.oa.simulator.rules import decide

AT = dt.datetime(2024, 3, 5, 10, 0, tzinfo=dt.timezone(dt.timedelta(hours=8)))
WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
PASSWORD_TEXT = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0#PasswordText"


def form(amount: str | None = "100.00", accounts=("6602",), key: str = "k", creator: str = "王小明") -> RequestForm:
    main = (("je", amount),) if amount is not None else ()
    rows = tuple((("kmbm", code), ("kmmc", "科目")) for code in accounts)
    return RequestForm("FIN", "报销单", creator, 0, key, main, (("dt1", rows),))


# --- approver rules ---------------------------------------------------------------


def test_everything_approved_without_rules():
    decision = decide(form(), SimulatorConfig(), random.Random(1), AT)
    assert decision.status == "APPROVED"
    assert [(e.step, e.action) for e in decision.logs] == [(1, "APPROVE"), (2, "APPROVE"), (3, "APPROVE")]
    assert decision.logs[0].approver == "张伟(部门经理)" and decision.logs[0].time == AT


def test_amount_above_the_limit_is_rejected_by_the_director():
    config = SimulatorConfig(reject_above=Decimal("5000"))
    assert decide(form("5000.00"), config, random.Random(), AT).status == "APPROVED"
    rejected = decide(form("5000.01"), config, random.Random(), AT)
    assert rejected.status == "REJECTED"
    assert rejected.logs[-1] == LogEntry(3, "李娜(财务总监)", "REJECT", "金额 5000.01 超出授权 5000，驳回", AT)


def test_amount_field_is_configurable_and_commas_are_read():
    config = SimulatorConfig(reject_above="10", amount_field="amount")
    custom = RequestForm("FIN", "t", "c", main_fields=(("amount", "1,000.00"),))
    assert decide(custom, config, random.Random(), AT).status == "REJECTED"
    assert decide(form("99999"), config, random.Random(), AT).status == "APPROVED"  # je is not the field now


def test_unreadable_amount_is_rejected_missing_amount_is_not():
    config = SimulatorConfig(reject_above="10")
    unreadable = decide(form("十万"), config, random.Random(), AT)
    assert unreadable.status == "REJECTED" and "无法识别" in unreadable.logs[-1].comment
    assert decide(form(None), config, random.Random(), AT).status == "APPROVED"


def test_listed_account_is_rejected_by_the_finance_manager():
    config = SimulatorConfig(reject_accounts=("1001", "1012"))
    decision = decide(form(accounts=("6602", "1001")), config, random.Random(), AT)
    assert decision.status == "REJECTED"
    assert [e.action for e in decision.logs] == ["APPROVE", "REJECT"]
    assert decision.logs[-1].approver == "王芳(财务经理)" and "1001" in decision.logs[-1].comment


def test_withdrawal_by_the_requester():
    decision = decide(form(), SimulatorConfig(withdraw_rate=1.0), random.Random(), AT)
    assert decision.status == "WITHDRAWN"
    assert decision.logs == (LogEntry(1, "王小明", "WITHDRAW", "申请人撤回", AT),)


def test_config_refuses_impossible_switches():
    with pytest.raises(ValueError, match="error_rate"):
        SimulatorConfig(error_rate=1.5)
    with pytest.raises(ValueError, match="must not exceed 1"):
        SimulatorConfig(error_rate=0.6, drop_rate=0.6)
    with pytest.raises(ValueError, match="encoding"):
        SimulatorConfig(encoding="latin-1")
    with pytest.raises(ValueError, match="not an amount"):
        SimulatorConfig(reject_above="lots")


# --- the database -----------------------------------------------------------------


def test_queue_cursor_grows_and_acknowledge_removes(tmp_path):
    db = SimulatorDb(tmp_path)
    ids = [db.create(form(key=f"k{i}"), decide_at=0) for i in range(3)]
    db.create(form(key="k0"), decide_at=0)  # a duplicate of k0
    assert db.requests_per_external_key() == {"k0": 2, "k1": 1, "k2": 1}
    assert db.count_requests() == 4

    logs = (LogEntry(1, "张伟", "APPROVE", "同意", now()),)
    cursors = [db.record_decision(i, "APPROVED", now(), logs).cursor for i in ids]
    assert cursors == sorted(cursors) and len(set(cursors)) == 3
    assert db.record_decision(ids[0], "REJECTED", now(), logs) is None  # decided once only
    assert db.decided() == {"APPROVED": 3, "REJECTED": 0, "WITHDRAWN": 0}
    assert db.status_counts() == {"APPROVED": 3, "IN_PROGRESS": 1}

    first = db.fetch_completed(0, 2)
    assert [e.request_id for e in first] == ids[:2] and first[0].logs == logs
    assert db.acknowledge(first[-1].cursor) == 2
    assert db.acknowledge(first[-1].cursor) == 0
    assert [e.request_id for e in db.fetch_completed(0, 10)] == [ids[2]]
    assert [e.request_id for e in db.fetch_completed(0, 10, include_acknowledged=True)] == ids
    db.close()

    reopened = SimulatorDb(tmp_path)  # the file keeps everything
    assert reopened.count_requests() == 4 and reopened.get(ids[0]).status == "APPROVED"
    # AUTOINCREMENT: a new decision never reuses a cursor
    late = reopened.create(form(key="late"), decide_at=0)
    assert reopened.record_decision(late, "WITHDRAWN", now(), ()).cursor > max(cursors)
    reopened.close()


# --- faults -----------------------------------------------------------------------


def test_fault_draws_repeat_with_the_same_seed():
    config = SimulatorConfig(error_rate=0.2, drop_rate=0.2, ambiguous_rate=0.2)

    def draws(seed):
        injector = FaultInjector(None, lambda: config, random.Random(seed))
        return [injector._draw(config) for _ in range(200)]

    first = draws(7)
    assert first == draws(7) and first != draws(8)
    share = {kind: first.count(kind) / 200 for kind in ("error", "drop", "ambiguous", None)}
    assert all(0.1 < share[kind] < 0.3 for kind in ("error", "drop", "ambiguous"))
    assert 0.3 < share[None] < 0.5


def test_operation_name_reads_the_body_safely():
    envelope = (
        b'<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body>'
        b'<CreateWorkflowRequest xmlns="urn:legacy-oa:workflow:1"/></s:Body></s:Envelope>'
    )
    assert operation_name(envelope) == "CreateWorkflowRequest"
    assert operation_name(b"<not xml") is None
    assert operation_name(b'<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><x>&e;</x>') is None


# --- over HTTP --------------------------------------------------------------------


def envelope(body: str, user: str | None = "archive-oa", password: str = "archive-oa") -> bytes:
    header = ""
    if user is not None:
        header = (
            f'<soap:Header><wsse:Security xmlns:wsse="{WSSE}"><wsse:UsernameToken>'
            f"<wsse:Username>{user}</wsse:Username>"
            f'<wsse:Password Type="{PASSWORD_TEXT}">{password}</wsse:Password>'
            "</wsse:UsernameToken></wsse:Security></soap:Header>"
        )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/" xmlns:w="urn:legacy-oa:workflow:1">'
        f"{header}<soap:Body>{body}</soap:Body></soap:Envelope>"
    ).encode("utf-8")


CREATE = (
    "<w:CreateWorkflowRequest><w:request><w:workflowCode>FIN</w:workflowCode><w:title>差旅费报销</w:title>"
    "<w:creator>archive-oa</w:creator><w:externalKey>{key}</w:externalKey>"
    "<w:mainFields><w:field><w:name>je</w:name><w:value>{amount}</w:value></w:field></w:mainFields>"
    "</w:request></w:CreateWorkflowRequest>"
)


def post(url: str, body: bytes) -> requests.Response:
    return requests.post(url, data=body, headers={"Content-Type": "text/xml; charset=utf-8"}, timeout=5)


@pytest.fixture
def sim(tmp_path):
    handle = start_simulator(SimulatorConfig(decide_after=0.1, reject_above="1000"), tmp_path)
    yield handle
    handle.stop()


def test_serves_its_wsdl_and_404_elsewhere(sim):
    answer = requests.get(sim.wsdl_url, timeout=5)
    assert answer.status_code == 200
    wsdl = etree.fromstring(answer.content)
    operations = {op.get("name") for op in wsdl.iterfind("{http://schemas.xmlsoap.org/wsdl/}portType/{http://schemas.xmlsoap.org/wsdl/}operation")}
    assert operations == {
        "CreateWorkflowRequest", "GetWorkflowRequest", "FindWorkflowRequests",
        "FetchCompletedRequests", "AcknowledgeCompleted",
    }
    assert sim.url.endswith("/soap/workflow")
    assert requests.get(sim.url.replace("/soap/workflow", "/other"), timeout=5).status_code == 404


def test_missing_or_wrong_token_is_a_client_fault(sim):
    for user, password in ((None, ""), ("archive-oa", "nope"), ("someone", "archive-oa")):
        answer = post(sim.url, envelope(CREATE.format(key="a", amount="1"), user, password))
        assert answer.status_code == 500
        fault = etree.fromstring(answer.content).find(".//faultcode")
        assert fault.text.endswith("Client.Authentication")
    assert sim.db.count_requests() == 0


@pytest.mark.slow
def test_decider_decides_after_the_delay_and_calls_back(tmp_path):
    seen = []
    # generous delay: both requests must be created before either is decided, even on a busy machine
    handle = start_simulator(SimulatorConfig(decide_after=2.0, reject_above="1000"), tmp_path, on_decided=seen.append)
    try:
        post(handle.url, envelope(CREATE.format(key="small", amount="10")))
        post(handle.url, envelope(CREATE.format(key="big", amount="5000")))
        assert handle.db.status_counts() == {"IN_PROGRESS": 2}
        deadline = time.monotonic() + 30
        while len(seen) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert {(e.external_key, e.status) for e in seen} == {("small", "APPROVED"), ("big", "REJECTED")}
        assert handle.db.decided() == {"APPROVED": 1, "REJECTED": 1, "WITHDRAWN": 0}
        assert all(e.cursor > 0 and e.logs for e in seen)
    finally:
        handle.stop()


def test_gbk_answers_declare_their_charset(tmp_path):
    handle = start_simulator(SimulatorConfig(encoding="gbk", decide_after=60), tmp_path)
    try:
        post(handle.url, envelope(CREATE.format(key="报销-1", amount="1")))
        answer = post(handle.url, envelope("<w:GetWorkflowRequest><w:requestId>1</w:requestId></w:GetWorkflowRequest>"))
        assert answer.status_code == 200
        assert answer.headers["Content-Type"] == "text/xml; charset=GBK"
        assert answer.content.startswith(b"<?xml version='1.0' encoding='GBK'?>")
        assert "差旅费报销".encode("gbk") in answer.content
        assert "报销-1".encode("gbk") in answer.content
        assert etree.fromstring(answer.content).findtext(".//{urn:legacy-oa:workflow:1}title") == "差旅费报销"
    finally:
        handle.stop()


def test_faults_can_be_switched_off_while_running(tmp_path):
    handle = start_simulator(SimulatorConfig(error_rate=1.0, seed=3, decide_after=60), tmp_path)
    try:
        failed = post(handle.url, envelope(CREATE.format(key="x", amount="1")))
        assert failed.status_code == 500 and b"soap:Server" in failed.content
        assert handle.injector.injected["error"] == 1
        handle.set_faults(error_rate=0.0)
        assert handle.config.error_rate == 0.0
        ok = post(handle.url, envelope(CREATE.format(key="x", amount="1")))
        assert ok.status_code == 200 and handle.db.count_requests() == 1
    finally:
        handle.stop()


def test_drop_closes_without_an_answer(tmp_path):
    handle = start_simulator(SimulatorConfig(drop_rate=1.0), tmp_path)
    try:
        with pytest.raises(requests.ConnectionError):
            post(handle.url, envelope(CREATE.format(key="x", amount="1")))
        assert handle.db.count_requests() == 0
        assert requests.get(handle.wsdl_url, timeout=5).status_code == 200  # reads of the WSDL are never faulted
    finally:
        handle.stop()


@pytest.mark.slow
def test_latency_is_added(tmp_path):
    handle = start_simulator(SimulatorConfig(latency_ms=300), tmp_path)
    try:
        started = time.monotonic()
        post(handle.url, envelope("<w:FindWorkflowRequests><w:externalKey>k</w:externalKey></w:FindWorkflowRequests>"))
        assert time.monotonic() - started >= 0.3
    finally:
        handle.stop()


def test_schema_invalid_request_is_a_client_fault(sim):
    answer = post(sim.url, envelope("<w:CreateWorkflowRequest><w:request><w:title>x</w:title></w:request></w:CreateWorkflowRequest>"))
    assert answer.status_code == 500
    assert "Client" in etree.fromstring(answer.content).findtext(".//faultcode")
    assert sim.db.count_requests() == 0


# --- command line -----------------------------------------------------------------


def test_cli_switches_and_environment(monkeypatch):
    monkeypatch.setenv("ARCHIVE_OA_SIM_ERROR_RATE", "0.25")
    monkeypatch.setenv("ARCHIVE_OA_SIM_REJECT_ACCOUNTS", "1001, 1012")
    args = build_parser().parse_args(
        ["oa-sim", "--port", "0", "--drop-rate", "0.1", "--ambiguous-rate", "0.05", "--latency-ms", "20",
         "--encoding", "gbk", "--decide-after", "1.5", "--reject-above", "50000", "--seed", "42",
         "--user", "u", "--password", "p"]
    )
    config = config_from(args)
    assert (config.error_rate, config.drop_rate, config.ambiguous_rate) == (0.25, 0.1, 0.05)
    assert (config.latency_ms, config.encoding, config.decide_after, config.seed) == (20, "gbk", 1.5, 42)
    assert config.reject_above == Decimal("50000") and config.reject_accounts == ("1001", "1012")
    assert (config.user, config.password) == ("u", "p")
    assert args.port == 0 and args.host == "127.0.0.1"

    defaults = config_from(build_parser().parse_args(["oa-sim", "--reject-account", "1001"]))
    assert defaults.reject_accounts == ("1001",) and defaults.user == defaults.password == "archive-oa"


def test_cli_help_documents_the_switches(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["oa-sim", "--help"])
    text = capsys.readouterr().out
    for switch in ("--error-rate", "--drop-rate", "--ambiguous-rate", "--latency-ms", "--encoding",
                   "--decide-after", "--reject-above", "--seed", "--user", "--password", "--data-dir",
                   "ARCHIVE_OA_SIM_", "default: 8090"):
        assert switch in text


def test_served_wsdl_matches_the_checked_in_one(sim):
    """spyne's WSDL is not byte-equal to wsdl/legacy-oa-workflow.wsdl, but describes the same messages."""
    import zeep

    from archive_oa.oa.client import load_wsdl

    def signatures(document):
        found = {}
        for binding in document.bindings.values():
            for name, operation in binding._operations.items():
                found[f"op:{name}"] = (
                    operation.input.signature(as_output=False),
                    operation.output.signature(as_output=True),
                )
        for xsd_type in document.types.types:
            qname = xsd_type.qname
            if qname is not None and qname.namespace == "urn:legacy-oa:workflow:1" and not qname.localname.endswith("Response"):
                found[f"type:{qname.localname}"] = xsd_type.signature(schema=document.types)
        return found

    checked_in = signatures(load_wsdl())
    served = signatures(zeep.Client(sim.wsdl_url).wsdl)
    # the operation wrappers are anonymous in the checked-in WSDL and named types in spyne's
    served = {k: v for k, v in served.items() if k in checked_in or not k.startswith("type:")}
    assert served == checked_in


def test_callback_submits_the_outcome_to_the_gateway_wsdl(tmp_path):
    """GatewayCallback speaks wsdl/archive-gateway.wsdl with HTTP Basic auth; a recording stub answers."""
    import base64
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from archive_oa.oa.simulator.callback import GatewayCallback
    from archive_oa.oa.simulator.db import CompletedEntry

    seen = []
    answer = (
        '<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/" xmlns:g="urn:archive-oa:gateway:1">'
        "<soap:Body><g:SubmitWorkflowResultResponse><g:accepted>true</g:accepted><g:voucherId>V1</g:voucherId>"
        "<g:voucherState>REJECTED</g:voucherState><g:duplicate>false</g:duplicate>"
        "</g:SubmitWorkflowResultResponse></soap:Body></soap:Envelope>"
    ).encode()

    class Gateway(BaseHTTPRequestHandler):
        def do_POST(self):
            seen.append((self.headers["Authorization"], self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.send_header("Content-Type", "text/xml; charset=utf-8")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Gateway)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()  # shutdown waits a poll
    callback = GatewayCallback(f"http://127.0.0.1:{server.server_address[1]}/soap/archive", "demo-archivist", "pw")
    try:
        logs = (LogEntry(1, "张伟(部门经理)", "APPROVE", "同意", AT), LogEntry(2, "李娜(财务总监)", "REJECT", "金额超出授权 驳回", AT))
        callback(CompletedEntry(5, 42, "V1#abc", "REJECTED", AT, logs))
        assert callback.drain(5) and callback.sent == 1 and callback.failed == 0
    finally:
        callback.close()
        server.shutdown()
        server.server_close()
    ((authorization, body),) = seen
    assert authorization == "Basic " + base64.b64encode(b"demo-archivist:pw").decode()
    document = etree.fromstring(body)
    g = "{urn:archive-oa:gateway:1}"
    call = document.find(f".//{g}SubmitWorkflowResult")
    assert call.findtext(f"{g}oaRequestId") == "42" and call.findtext(f"{g}externalKey") == "V1#abc"
    assert call.findtext(f"{g}state") == "REJECTED"
    assert [a.findtext(f"{g}comment") for a in call.iterfind(f"{g}approvals/{g}approval")] == ["同意", "金额超出授权 驳回"]


@pytest.mark.slow
def test_oa_sim_command_serves_until_terminated(tmp_path):
    import os
    import signal
    import subprocess
    import sys

    from archive_oa.oa.client import OaClient
    from archive_oa.settings import OaSettings

    env = dict(os.environ, ARCHIVE_OA_SIM_ENCODING="gbk", ARCHIVE_OA_SIM_DECIDE_AFTER="60")
    process = subprocess.Popen(
        [sys.executable, "-m", "archive_oa.cli.main", "oa-sim", "--port", "0", "--data-dir", str(tmp_path),
         "--user", "oa-user", "--password", "秘密"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    try:
        first = process.stdout.readline()
        assert first.startswith("OA simulator: http://127.0.0.1:"), first + process.stderr.read()
        url = first.split(": ", 1)[1].strip()
        with OaClient(OaSettings(url=url, user="oa-user", password="秘密", timeout=5)) as client:
            request_id = client.create_request(
                b'<WorkflowRequest xmlns="urn:archive-oa:oa-workflow:1"><workflowCode>F</workflowCode>'
                b"<title>t</title><creator>c</creator><level>0</level><externalKey>cli</externalKey>"
                b"<mainFields><field><name>je</name><value>1</value></field></mainFields></WorkflowRequest>"
            )
            assert list(client.find_requests("cli")) == [request_id]
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0
        process.stdout.close()
        process.stderr.close()
    assert (tmp_path / "oa-sim.db").is_file()
