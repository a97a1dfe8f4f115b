"""The gateway over real HTTP on loopback: zeep loads the served WSDL and calls every
operation, with HTTP Basic and with a WS-Security UsernameToken; roles, organisation
scope, faults and malformed requests are checked on the wire."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from decimal import Decimal

import pytest
import requests
import zeep
from lxml import etree
from requests.auth import HTTPBasicAuth
from zeep.exceptions import Fault
from zeep.transports import Transport
from zeep.wsse.username import UsernameToken

from archive_oa import safexml
from archive_oa.domain.model import (
    AttachmentKind,
    AttachmentMeta,
    WorkflowState,
)
from archive_oa.gateway.app import build_gateway_services, make_gateway_app
from archive_oa.gateway.server import start_gateway
from archive_oa.devtools.wsdl_file import checked_in_path, normalise_address
from archive_oa.services.sync import SyncService
from archive_oa.services.users import UserService
from archive_oa.settings import load_settings
from archive_oa.store import outbox
from archive_oa.store import vouchers as voucher_repo
from archive_oa.store.engine import open_store
from archive_oa.transforms.pipeline import Transforms
from archive_oa.voucher_xml import canonical_hash

from factories import envelope, password, voucher
from fakes import FakeOa

UTC = dt.timezone.utc
NOW = dt.datetime(2024, 3, 5, 8, 0, tzinfo=UTC)
GW = "urn:archive-oa:gateway:1"
SOAP = "http://schemas.xmlsoap.org/soap/envelope/"
INVOICE = "%PDF-1.4 invoice 增值税专用发票 0001".encode("utf-8")

USERS = {
    # name: (roles, organisation scope)
    "viewer1": ({"viewer"}, {"ORG1"}),
    "viewer-all": ({"viewer"}, None),
    "archivist1": ({"archivist"}, {"ORG1"}),
    "operator": ({"operator"}, None),
    "operator1": ({"operator"}, {"ORG1"}),
    "admin": ({"admin"}, None),
    "auditor": ({"auditor"}, None),
}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    settings = load_settings(data_dir=tmp_path_factory.mktemp("gateway"), env={})
    store = open_store(settings)
    users = UserService(store)
    for name, (roles, scope) in USERS.items():
        users.add_user(name, password(name), roles, scope)
    invoice_sha = store.blobs.put(INVOICE)
    attachment = AttachmentMeta("ATT-1", "发票.pdf", "application/pdf", len(INVOICE), invoice_sha,
                                AttachmentKind.INVOICE, "INV-0001")
    vouchers = [
        voucher("V-ORG1-1", org="ORG1", no=1, amount="1200.50", attachments=[attachment]),
        voucher("V-ORG1-2", org="ORG1", no=2, amount="88.00", summary="购买办公用品"),
        voucher("V-ORG1-3", org="ORG1", no=3, amount="500000.00", period="2024-04", summary="支付货款"),
        voucher("V-ORG2-1", org="ORG2", no=1, amount="300.00", summary="报销差旅费 ORG2"),
    ]
    with store.transaction(immediate=True) as conn:
        for v in vouchers:
            voucher_repo.save_voucher(conn, v, canonical_hash(v), NOW)
        # V-ORG1-2 was delivered to the OA as request 7001 (its outcome comes back by callback).
        key = f"V-ORG1-2:{canonical_hash(vouchers[1])[:16]}"
        outbox.enqueue(conn, voucher_id="V-ORG1-2", version=1, idempotency_key=key, now=NOW)
        voucher_repo.map_request(conn, external_key=key, voucher_id="V-ORG1-2", version=1, oa_request_id="7001")
        voucher_repo.set_workflow(conn, "V-ORG1-2", state=WorkflowState.SUBMITTED, oa_request_id="7001")
        # V-ORG2-1 was delivered as 7002: out of ORG1 users' scope.
        key2 = f"V-ORG2-1:{canonical_hash(vouchers[3])[:16]}"
        outbox.enqueue(conn, voucher_id="V-ORG2-1", version=1, idempotency_key=key2, now=NOW)
        voucher_repo.map_request(conn, external_key=key2, voucher_id="V-ORG2-1", version=1, oa_request_id="7002")
        voucher_repo.set_workflow(conn, "V-ORG2-1", state=WorkflowState.SUBMITTED, oa_request_id="7002")
    sync = SyncService(store, FakeOa())
    services = build_gateway_services(settings, store, transforms=Transforms.from_settings(), sync=sync)
    app = make_gateway_app(settings, services)
    handle = start_gateway(app, "127.0.0.1", 0)
    yield {"handle": handle, "store": store, "settings": settings, "services": services, "invoice_sha": invoice_sha}
    handle.stop()
    store.dispose()


def basic_auth(user, secret=None):
    # UTF-8 (RFC 7617): requests would encode str credentials as latin-1
    return HTTPBasicAuth(user.encode("utf-8"), (secret or password(user)).encode("utf-8"))


def basic_client(env, user):
    session = requests.Session()
    session.auth = basic_auth(user)
    return zeep.Client(env["handle"].wsdl_url, transport=Transport(session=session)).service


def token_client(env, user, secret=None):
    return zeep.Client(env["handle"].wsdl_url, wsse=UsernameToken(user, secret or password(user))).service


def anonymous_client(env):
    return zeep.Client(env["handle"].wsdl_url).service


def fault_code(fault: Fault) -> str:
    return fault.detail.find(f"{{{GW}}}GatewayFault/{{{GW}}}code").text


def post(env, body: bytes, content_type="text/xml; charset=utf-8", auth=("viewer1", None), **headers):
    user, secret = auth if auth else (None, None)
    return requests.post(
        env["handle"].url,
        data=body,
        headers={"Content-Type": content_type, **headers},
        auth=basic_auth(user, secret) if user else None,
        timeout=10,
    )


def assert_soap_fault(response, code: str, status: int = 500):
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("text/xml")
    doc = etree.fromstring(response.content)
    assert doc.tag == f"{{{SOAP}}}Envelope"
    fault = doc.find(f"{{{SOAP}}}Body/{{{SOAP}}}Fault")
    assert fault is not None
    detail = fault.find(f"detail/{{{GW}}}GatewayFault")
    assert detail.findtext(f"{{{GW}}}code") == code
    assert detail.findtext(f"{{{GW}}}correlationId") == response.headers["X-Correlation-Id"]
    assert "Traceback" not in response.text and "/work/" not in response.text and ".py" not in response.text
    return fault


# --- every operation, with Basic and with UsernameToken ------------------------------------


@pytest.fixture(params=["basic", "token"])
def client_for(request, env):
    return lambda user: (basic_client if request.param == "basic" else token_client)(env, user)


def test_ping_is_anonymous(env):
    result = anonymous_client(env).Ping()
    assert result.version
    assert result.serverTime.tzinfo is not None


def test_query_vouchers(client_for):
    result = client_for("viewer-all").QueryVouchers(page=1, pageSize=2)
    assert result.total == 4 and result.page == 1 and result.pageSize == 2
    first = result["items"]["voucher"][0]
    assert (first.voucherId, first.orgCode, first.voucherWord, first.voucherNo) == ("V-ORG1-1", "ORG1", "记", 1)
    assert first.totalAmount == Decimal("1200.50") and isinstance(first.totalAmount, Decimal)
    assert first.state == "NONE" and first.attachmentCount == 1

    filtered = client_for("viewer-all").QueryVouchers(
        keyword="差旅", amountMin=Decimal("100"), amountMax=Decimal("2000.00"), page=1, pageSize=50
    )
    assert sorted(v.voucherId for v in filtered["items"]["voucher"]) == ["V-ORG1-1", "V-ORG2-1"]


def test_query_counts_only_the_callers_organisations(client_for):
    result = client_for("viewer1").QueryVouchers(page=1, pageSize=500)
    assert result.total == 3
    assert {v.orgCode for v in result["items"]["voucher"]} == {"ORG1"}
    other = client_for("viewer1").QueryVouchers(orgCode="ORG2", page=1, pageSize=10)
    assert other.total == 0 and not other["items"]


def test_get_voucher(client_for):
    v = client_for("viewer1").GetVoucher(voucherId="V-ORG1-1")
    assert v.voucherId == "V-ORG1-1" and v.orgName == "ORG1 有限公司" and v.period == "2024-03"
    assert v.date == dt.date(2024, 3, 10) and v.totalAmount == Decimal("1200.50")
    entries = v.entries.entry
    assert [(e.accountCode, e.debit, e.credit) for e in entries] == [
        ("6602", Decimal("1200.50"), Decimal("0.00")),
        ("1002", Decimal("0.00"), Decimal("1200.50")),
    ]
    (att,) = v.attachments.attachment
    assert (att.attachmentId, att.fileName, att.kind, att.invoiceNumber) == ("ATT-1", "发票.pdf", "INVOICE", "INV-0001")


def test_get_voucher_document_is_valid_canonical_xml(client_for):
    text = client_for("viewer1").GetVoucherDocument(voucherId="V-ORG1-1")
    tree = safexml.parse_text(text)
    Transforms.from_settings().validate_voucher(tree)
    assert tree.getroot().findtext("{urn:archive-oa:voucher:1}voucherId") == "V-ORG1-1"


def test_get_attachment(env, client_for):
    result = client_for("viewer1").GetAttachment(attachmentId="ATT-1")
    assert result.content == INVOICE
    assert result.sha256 == hashlib.sha256(INVOICE).hexdigest() == env["invoice_sha"]
    assert (result.fileName, result.mimeType, result.size) == ("发票.pdf", "application/pdf", len(INVOICE))


def test_archive_document_is_idempotent(client_for, request):
    source_id = f"BX-{request.node.callspec.id}"
    call = dict(
        sourceSystem="ecology", sourceId=source_id, docType="EXPENSE_CLAIM", orgCode="ORG1",
        period="2024-03", title="差旅费报销单", amount=Decimal("1234.56"), oaRequestId="9001",
        fields={"field": [{"name": "申请人", "value": "李四"}, {"name": "部门", "value": "财务部"}]},
        attachments={"attachment": [{"fileName": "机票.pdf", "mimeType": "application/pdf", "content": b"ticket"}]},
    )
    first = client_for("archivist1").ArchiveDocument(**call)
    assert first.duplicate is False
    assert first.archivalCode.startswith("ORG1-2024-PZ-Y30-")
    again = client_for("archivist1").ArchiveDocument(**call)
    assert (again.archiveId, again.archivalCode, again.duplicate) == (first.archiveId, first.archivalCode, True)
    # its file is served like any attachment, to callers in scope
    content = client_for("viewer1").GetAttachment(attachmentId=f"{first.archiveId}-1")
    assert content.content == b"ticket" and content.fileName == "机票.pdf"


def test_submit_workflow_result_and_its_repeat(env, client_for, request):
    finished = dt.datetime(2024, 3, 6, 10, 0, tzinfo=dt.timezone(dt.timedelta(hours=8)))
    if request.node.callspec.id == "token":
        finished += dt.timedelta(minutes=1)  # a later decision: applied again
    call = dict(
        oaRequestId="7001", state="APPROVED", finishedAt=finished,
        approvals={"approval": [{"step": 1, "approver": "王经理", "action": "APPROVE", "comment": "同意",
                                 "time": finished}]},
    )
    result = client_for("archivist1").SubmitWorkflowResult(**call)
    assert (result.accepted, result.voucherId, result.voucherState, result.duplicate) == (
        True, "V-ORG1-2", "APPROVED", False)
    again = client_for("archivist1").SubmitWorkflowResult(**call)
    assert again.duplicate is True and again.voucherState == "APPROVED"
    stored = client_for("viewer1").GetVoucher(voucherId="V-ORG1-2")
    assert stored.workflow.state == "APPROVED"
    assert [a.approver for a in stored.workflow.approvals.approval] == ["王经理"]


def test_trigger_sync_and_status(client_for):
    triggered = client_for("operator").TriggerSync(orgCode="ORG1", periodFrom="2024-03", periodTo="2024-04")
    assert triggered.jobId and triggered.queued >= 0
    status = client_for("operator").GetSyncStatus(jobId=triggered.jobId)
    assert status.jobId == triggered.jobId and status.state
    latest = client_for("operator").GetSyncStatus()
    assert latest.jobId


def test_reconcile_period(client_for):
    report = client_for("operator").ReconcilePeriod(orgCode="ORG1", period="2024-03")
    assert report.orgCode == "ORG1" and report.period == "2024-03"
    assert report.missingCount == len(report.missingInOa.id if report.missingInOa else [])
    assert report.mismatchCount == 0


def test_admin_may_do_everything(env):
    admin = basic_client(env, "admin")
    assert admin.QueryVouchers(page=1, pageSize=1).total == 4
    assert admin.ReconcilePeriod(orgCode="ORG2", period="2024-03").orgCode == "ORG2"


# --- authentication, roles and scope -----------------------------------------------------


def test_missing_and_wrong_credentials(env):
    with pytest.raises(Fault) as missing:
        anonymous_client(env).QueryVouchers(page=1, pageSize=1)
    assert fault_code(missing.value) == "Authentication"
    with pytest.raises(Fault) as wrong:
        token_client(env, "viewer1", "not-the-password").GetVoucher(voucherId="V-ORG1-1")
    assert fault_code(wrong.value) == "Authentication"
    assert missing.value.code.endswith("Client")


@pytest.mark.parametrize(
    "user, operation, kwargs",
    [
        ("viewer1", "ArchiveDocument", dict(sourceSystem="s", sourceId="x", docType="OTHER", orgCode="ORG1",
                                            period="2024-03", title="t")),
        ("viewer1", "SubmitWorkflowResult", dict(oaRequestId="7001", state="APPROVED",
                                                 finishedAt=dt.datetime(2024, 3, 1, tzinfo=UTC))),
        ("archivist1", "TriggerSync", {}),
        ("archivist1", "GetSyncStatus", {}),
        ("archivist1", "ReconcilePeriod", dict(orgCode="ORG1", period="2024-03")),
        ("auditor", "QueryVouchers", dict(page=1, pageSize=1)),
        ("operator1", "ReconcilePeriod", dict(orgCode="ORG2", period="2024-03")),
        ("archivist1", "ArchiveDocument", dict(sourceSystem="s", sourceId="y", docType="OTHER", orgCode="ORG2",
                                               period="2024-03", title="t")),
    ],
)
def test_access_denied(env, user, operation, kwargs):
    with pytest.raises(Fault) as denied:
        getattr(basic_client(env, user), operation)(**kwargs)
    assert fault_code(denied.value) == "AccessDenied"


@pytest.mark.parametrize(
    "operation, kwargs",
    [
        ("GetVoucher", dict(voucherId="V-ORG2-1")),
        ("GetVoucherDocument", dict(voucherId="V-ORG2-1")),
        ("GetVoucher", dict(voucherId="NO-SUCH")),
        ("SubmitWorkflowResult", dict(oaRequestId="7002", state="REJECTED",
                                      finishedAt=dt.datetime(2024, 3, 1, tzinfo=UTC))),
        ("SubmitWorkflowResult", dict(oaRequestId="99999", state="REJECTED",
                                      finishedAt=dt.datetime(2024, 3, 1, tzinfo=UTC))),
    ],
)
def test_out_of_scope_is_not_found(env, operation, kwargs):
    with pytest.raises(Fault) as missing:
        getattr(basic_client(env, "archivist1"), operation)(**kwargs)
    assert fault_code(missing.value) == "NotFound"


def test_out_of_scope_outcome_changes_nothing(env):
    with pytest.raises(Fault):
        basic_client(env, "archivist1").SubmitWorkflowResult(
            oaRequestId="7002", state="REJECTED", finishedAt=dt.datetime(2024, 3, 2, tzinfo=UTC))
    assert basic_client(env, "viewer-all").GetVoucher(voucherId="V-ORG2-1").workflow.state == "SUBMITTED"


def test_attachment_of_another_organisation_is_not_found(env):
    org2_file = basic_client(env, "admin").ArchiveDocument(
        sourceSystem="ecology", sourceId="ORG2-FILE", docType="CONTRACT", orgCode="ORG2", period="2024-03",
        title="采购合同", attachments={"attachment": [{"fileName": "合同.pdf", "mimeType": "application/pdf",
                                                    "content": b"contract"}]},
    )
    assert org2_file.archivalCode.startswith("ORG2-2024-QT-Y30-")
    with pytest.raises(Fault) as missing:
        basic_client(env, "viewer1").GetAttachment(attachmentId=f"{org2_file.archiveId}-1")
    assert fault_code(missing.value) == "NotFound"


# --- validation faults ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, place",
    [
        (dict(page=0, pageSize=10), "page"),
        (dict(page=1, pageSize=501), "pageSize"),
        (dict(page=1, pageSize=10, periodFrom="2024-05", periodTo="2024-03"), "periodFrom"),
        (dict(page=1, pageSize=10, amountMin=Decimal("5"), amountMax=Decimal("1")), "amountMin"),
    ],
)
def test_query_validation_names_the_field(env, kwargs, place):
    with pytest.raises(Fault) as invalid:
        basic_client(env, "viewer1").QueryVouchers(**kwargs)
    detail = invalid.value.detail.find(f"{{{GW}}}GatewayFault")
    assert detail.findtext(f"{{{GW}}}code") == "Validation"
    assert place in [i.findtext(f"{{{GW}}}place") for i in detail.iter(f"{{{GW}}}issue")]


@pytest.mark.parametrize(
    "field_xml, expected",
    [
        ("<g:period>2024-13</g:period>", "period"),
        ("<g:period>2024-03</g:period><g:amount>12.345</g:amount>", "amount"),
        ("<g:period>2024-03</g:period><g:amount>NaN</g:amount>", "amount"),
    ],
)
def test_schema_validation_of_raw_requests(env, field_xml, expected):
    body = envelope(
        "<g:ArchiveDocument><g:sourceSystem>s</g:sourceSystem><g:sourceId>v1</g:sourceId>"
        "<g:docType>OTHER</g:docType><g:orgCode>ORG1</g:orgCode>"
        f"{field_xml}<g:title>t</g:title></g:ArchiveDocument>"
    )
    response = post(env, body.encode(), auth=("archivist1", None))
    fault = assert_soap_fault(response, "Validation")
    assert expected in etree.tostring(fault, encoding="unicode")


def test_bad_doc_type_is_refused(env):
    with pytest.raises(Fault) as invalid:
        basic_client(env, "archivist1").ArchiveDocument(
            sourceSystem="s", sourceId="bad-type", docType="INVOICE", orgCode="ORG1", period="2024-03", title="t")
    assert fault_code(invalid.value) == "Validation"


@pytest.mark.parametrize(
    "body_xml",
    [
        "<g:Ping>\n  </g:Ping>",  # gSOAP's sample requests, hand-indented SoapUI requests
        "<g:Ping>\n  <!-- nothing to send -->\n</g:Ping>",
        "<g:QueryVouchers>\n  <g:page>1</g:page>\n  <g:pageSize>5</g:pageSize>\n</g:QueryVouchers>",
        "<g:GetVoucher>\n  <g:voucherId>V-ORG1-1</g:voucherId>\n</g:GetVoucher>",
    ],
    ids=["empty-operation", "empty-operation-with-comment", "indented-query", "indented-get-voucher"],
)
def test_indentation_is_not_content(env, body_xml):
    response = post(env, envelope(body_xml).encode())
    assert response.status_code == 200, response.text
    assert etree.fromstring(response.content).find(f"{{{SOAP}}}Body/*").tag.endswith("Response")


def test_text_in_an_empty_element_is_still_refused(env):
    assert_soap_fault(post(env, envelope("<g:Ping>x</g:Ping>").encode()), "Validation")


def issues_of(fault) -> list[tuple[str, str]]:
    return [(i.findtext(f"{{{GW}}}place"), i.findtext(f"{{{GW}}}message")) for i in fault.iter(f"{{{GW}}}issue")]


@pytest.mark.parametrize(
    "body_xml, message, issues",
    [
        ("<g:GetVoucher>\n</g:GetVoucher>", "GetVoucher: required element voucherId is missing",
         [("/g:GetVoucher", "required element voucherId is missing")]),
        # libxml2 lists ten optional elements and not the required page
        ("<g:QueryVouchers><g:pageSize>5</g:pageSize></g:QueryVouchers>",
         "QueryVouchers: required element page is missing",
         [("/g:QueryVouchers", "required element page is missing")]),
        ("<g:SubmitWorkflowResult><g:oaRequestId>7001</g:oaRequestId><g:approvals><g:approval><g:step>1</g:step>"
         "</g:approval></g:approvals></g:SubmitWorkflowResult>",
         "SubmitWorkflowResult: required elements state, finishedAt are missing; "
         "SubmitWorkflowResult/approvals/approval: required elements approver, action, time are missing",
         [("/g:SubmitWorkflowResult", "required elements state, finishedAt are missing"),
          ("/g:SubmitWorkflowResult/g:approvals/g:approval", "required elements approver, action, time are missing")]),
    ],
    ids=["get-voucher", "query-vouchers", "nested"],
)
def test_missing_required_elements_are_named_first_and_once(env, body_xml, message, issues):
    fault = assert_soap_fault(post(env, envelope(body_xml).encode()), "Validation")
    assert fault.findtext("faultstring") == f"Validation: {message}"
    assert fault.findtext(f"detail/{{{GW}}}GatewayFault/{{{GW}}}message") == message
    assert issues_of(fault) == issues


def test_a_misspelt_element_is_named_beside_the_missing_one(env):
    body = envelope("<g:GetVoucher><g:voucherID>V-ORG1-1</g:voucherID></g:GetVoucher>")
    fault = assert_soap_fault(post(env, body.encode()), "Validation")
    assert fault.findtext("faultstring") == (
        "Validation: GetVoucher: required element voucherId is missing (1 more schema problem in the fault's issues)"
    )
    assert [place for place, _ in issues_of(fault)] == ["/g:GetVoucher", "/g:GetVoucher/g:voucherID"]


# --- malformed requests are SOAP faults, never HTML --------------------------------------


def test_bad_xml(env):
    assert_soap_fault(post(env, b"<soap:Envelope xmlns:soap='x'><unclosed>"), "Validation")


def test_not_an_envelope(env):
    fault = assert_soap_fault(post(env, f'<g:Ping xmlns:g="{GW}"/>'.encode()), "Validation")
    assert "Envelope" in fault.findtext("faultstring")


def test_gbk_bytes_declared_utf8(env):
    body = envelope("<g:GetVoucher><g:voucherId>报销单</g:voucherId></g:GetVoucher>")
    body = ('<?xml version="1.0" encoding="UTF-8"?>' + body).encode("gbk")  # 报 = B1 A8: not UTF-8
    assert_soap_fault(post(env, body), "Validation")


def test_gbk_request_declared_gbk_is_understood(env):
    body = envelope("<g:GetVoucher><g:voucherId>不存在的凭证</g:voucherId></g:GetVoucher>").encode("gbk")
    response = post(env, body, content_type="text/xml; charset=GBK")
    fault = assert_soap_fault(response, "NotFound")
    assert "不存在的凭证" in fault.findtext("faultstring")


def test_missing_body(env):
    body = f'<soap:Envelope xmlns:soap="{SOAP}"><soap:Header/></soap:Envelope>'.encode()
    assert_soap_fault(post(env, body), "Validation")


def test_unknown_operation(env):
    assert_soap_fault(post(env, envelope("<g:DropAllTables/>").encode()), "Validation")


def test_dtd_and_entities_are_refused(env):
    body = (
        '<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
        + envelope("<g:GetVoucher><g:voucherId>&e;</g:voucherId></g:GetVoucher>")
    ).encode()
    response = post(env, body)
    assert_soap_fault(response, "Validation")
    assert "root:" not in response.text


def test_soap12_is_refused_clearly(env):
    body = ('<e:Envelope xmlns:e="http://www.w3.org/2003/05/soap-envelope"><e:Body>'
            f'<g:Ping xmlns:g="{GW}"/></e:Body></e:Envelope>').encode()
    fault = assert_soap_fault(post(env, body, content_type="application/soap+xml"), "Validation")
    assert "SOAP 1.2" in fault.findtext("faultstring")


def test_oversized_body_is_413_fault(env):
    limit = env["settings"].gateway.max_body_bytes
    filler = b"A" * (limit + 10)
    response = post(env, envelope("<g:Ping/>").encode().replace(b"<g:Ping/>", b"<g:Ping/><!--" + filler + b"-->"))
    assert_soap_fault(response, "RequestTooLarge", status=413)


def test_get_without_wsdl_is_a_fault(env):
    response = requests.get(env["handle"].url, timeout=10)
    assert_soap_fault(response, "Validation", status=405)


def test_unexpected_errors_are_internal_without_details(env, monkeypatch):
    services = env["services"]

    def explode(*args, **kwargs):
        raise RuntimeError("secret /etc/archive/db.sqlite exploded")

    monkeypatch.setattr(services.archive, "get_voucher", explode)
    with pytest.raises(Fault) as internal:
        basic_client(env, "viewer1").GetVoucher(voucherId="V-ORG1-1")
    assert fault_code(internal.value) == "Internal"
    assert internal.value.code.endswith("Server")
    assert "secret" not in internal.value.message and "secret" not in etree.tostring(internal.value.detail).decode()


def test_raw_username_token_password_text(env):
    header = (
        '<wsse:Security xmlns:wsse="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd">'
        f"<wsse:UsernameToken><wsse:Username>viewer1</wsse:Username><wsse:Password>{password('viewer1')}"
        "</wsse:Password></wsse:UsernameToken></wsse:Security>"
    )
    body = envelope("<g:QueryVouchers><g:page>1</g:page><g:pageSize>5</g:pageSize></g:QueryVouchers>", header)
    response = post(env, body.encode(), auth=None)
    assert response.status_code == 200, response.text
    assert etree.fromstring(response.content).findtext(f".//{{{GW}}}total") == "3"


# --- WSDL, address, healthz ------------------------------------------------------------------


def test_served_wsdl_equals_the_checked_in_file(env):
    served = requests.get(env["handle"].wsdl_url, timeout=10)
    assert served.status_code == 200
    assert f'location="{env["handle"].url}"'.encode() in served.content
    assert normalise_address(served.content) == normalise_address(checked_in_path().read_bytes()), (
        "wsdl/archive-gateway.wsdl drifted from the service: run python -m archive_oa.devtools.wsdl_file"
    )


def test_wsdl_address_is_the_configured_public_url(env):
    settings = env["settings"].replace(gateway={"public_url": "https://archive.example.com/"})
    app = make_gateway_app(settings, env["services"])
    handle = start_gateway(app, "127.0.0.1", 0)
    try:
        wsdl = requests.get(handle.wsdl_url, headers={"Host": "evil.example.org"}, timeout=10).content
    finally:
        handle.stop()
    assert b'location="https://archive.example.com/soap/archive"' in wsdl
    assert b"evil.example.org" not in wsdl and b"127.0.0.1" not in wsdl


def test_healthz(env, monkeypatch):
    ok = requests.get(env["handle"].base_url + "/healthz", timeout=10)
    assert ok.status_code == 200 and ok.json()["status"] == "ok"
    monkeypatch.setattr(env["store"], "ping", lambda: False)
    down = requests.get(env["handle"].base_url + "/healthz", timeout=10)
    assert down.status_code == 503 and json.loads(down.content)["status"] == "unavailable"


def test_correlation_id_is_echoed(env):
    response = post(env, b"not xml", **{"X-Correlation-Id": "abc-123"})
    fault = assert_soap_fault(response, "Validation")
    assert response.headers["X-Correlation-Id"] == "abc-123"
    assert fault is not None


def test_parallel_callers_get_their_own_answers(env):
    from concurrent.futures import ThreadPoolExecutor

    def archive(i):
        client = basic_client(env, "archivist1")
        return client.ArchiveDocument(sourceSystem="seeyon", sourceId="PAR-1", docType="PAYMENT", orgCode="ORG1",
                                      period="2024-04", title=f"付款单 {i}").archiveId

    def invalid(i):
        body = envelope(f"<g:QueryVouchers><g:page>1</g:page><g:pageSize>x{i}</g:pageSize></g:QueryVouchers>")
        return etree.tostring(assert_soap_fault(post(env, body.encode()), "Validation"), encoding="unicode")

    with ThreadPoolExecutor(8) as pool:
        archived = list(pool.map(archive, range(8)))
        refused = list(pool.map(invalid, range(8)))
    assert len(set(archived)) == 1
    assert all(f"x{i}" in text for i, text in enumerate(refused))
