"""Operations the gateway answers beside spyne (``gateway/direct.py``): the very answer spyne
gives — the same bytes, status, headers, faults and audit records — for every request the
direct path takes; everything else still reaches spyne.  spyne is the reference: each
request is sent to the gateway and to a second gateway whose direct path is switched off.

GetAttachment streams its file in base64 pieces instead of building the answer in memory;
GetVoucher is written as text from the mapping's fields (``wire_text``)."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import io
import os
from decimal import Decimal

import pytest
import requests
import zeep
from lxml import etree
from requests.auth import HTTPBasicAuth
from zeep.transports import Transport

from archive_oa.domain.model import (
    Approval,
    ArchiveInfo,
    AttachmentKind,
    AttachmentMeta,
    AuxiliaryItem,
    Entry,
    Retention,
    Voucher,
    WorkflowState,
)
from archive_oa.errors import IntegrityError, NotFound
from archive_oa.gateway import direct
from archive_oa.gateway.app import make_gateway_app
from archive_oa.gateway.auth import PasswordAuthenticator
from archive_oa.gateway.context import GatewayServices
from archive_oa.gateway.server import start_gateway
from archive_oa.services import audit
from archive_oa.services.archive import ArchiveDocumentCommand, ArchiveService, NewFile
from archive_oa.services.users import UserService
from archive_oa.settings import load_settings
from archive_oa.store import vouchers as voucher_repo
from archive_oa.store.blobs import BlobStore
from archive_oa.store.engine import open_store
from archive_oa.voucher_xml import canonical_hash

import factories
from factories import password, voucher

NOW = dt.datetime(2024, 3, 5, 8, 0, tzinfo=dt.timezone.utc)
GW = "urn:archive-oa:gateway:1"
SOAP11 = "http://schemas.xmlsoap.org/soap/envelope/"
SOAP12 = "http://www.w3.org/2003/05/soap-envelope"
INVOICE = "%PDF-1.4 invoice 增值税专用发票 0001".encode("utf-8")
#: over two streamed pieces and not a multiple of 3: padding only at the very end
BIG = os.urandom(2 * direct.CHUNK_BYTES + 1)
#: failed logins here (two gateways per case) must not lock the test client out
UNLOCKED = {"ARCHIVE_OA_SECURITY_LOCKOUT_AFTER": "1000"}
USERS = {"viewer1": ({"viewer"}, {"ORG1"}), "viewer-all": ({"viewer"}, None), "auditor": ({"auditor"}, None)}


def _voucher(voucher_id: str, org: str, attachments: tuple[AttachmentMeta, ...]) -> Voucher:
    return voucher(voucher_id, org=org, no=int(voucher_id[-1]), amount="88.00", attachments=attachments)


CST = dt.timezone(dt.timedelta(hours=8))
#: GetVoucher's answers: foreign currency, auxiliary items, every optional header field,
#: text that must be escaped, an archived voucher, and a voucher in each workflow state.
FX_VOUCHER = Voucher(
    voucher_id="V-FX-1", org_code="ORG1", org_name="ORG1 有限公司 <总部> & 分部", fonds_code="F-ORG1",
    fiscal_year=2024, period="2024-03", voucher_word="转", voucher_no=42, date=dt.date(2024, 3, 31),
    preparer="张三", reviewer="李四", bookkeeper="王五", cashier="赵六 € 😀",  # not all in GBK
    currency="CNY",
    summary='支付 "ACME" 货款 > 10,000 USD\r\n第二行\t制表', attachment_count=0,
    entries=(
        Entry(1, "应付账款 USD", "2202", "应付账款", debit=Decimal("71234.00"), currency="USD",
              exchange_rate=Decimal("7.1234"), original_amount=Decimal("10000"),
              auxiliary=(AuxiliaryItem("supplier", "S-001", "ACME Corp."),
                         AuxiliaryItem("project", "P-9", "项目九"))),
        Entry(2, "汇率 1E+1", "6603", "财务费用", debit=Decimal("10"), currency="EUR",
              exchange_rate=Decimal("1E+1"), original_amount=Decimal("1")),
        Entry(3, "银行存款", "1002", "银行存款", credit=Decimal("71244.00")),
    ),
    archive=ArchiveInfo("ORG1-2024-PZ-Y30-000042", "会计凭证", Retention.Y30,
                        dt.datetime(2024, 4, 2, 9, 30, tzinfo=CST)),
)
TRAIL = (
    Approval(1, "财务经理", "APPROVE", "同意 <ok> & 通过", dt.datetime(2024, 3, 6, 10, 0, tzinfo=CST)),
    Approval(2, "总经理", "COMMENT", None, dt.datetime(2024, 3, 6, 11, 15, 30, 250000, tzinfo=dt.timezone.utc)),
)


def _state_vouchers() -> list[tuple[Voucher, WorkflowState]]:
    return [(_voucher(f"V-{state.value}-{n}", "ORG1", ()), state) for n, state in enumerate(WorkflowState, start=1)]


def _services(store, users) -> GatewayServices:
    return GatewayServices(store=store, archive=ArchiveService(store),
                           authenticator=PasswordAuthenticator(users, sleep=lambda seconds: None))


def _spyne_only(app):
    """The same gateway with its direct path switched off: spyne answers everything."""
    app._direct = lambda environ, respond, envelope: None
    app._soap12._direct = lambda environ, respond, envelope: None
    return app


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    settings = load_settings(data_dir=tmp_path_factory.mktemp("direct"), env=UNLOCKED)
    store = open_store(settings)
    users = UserService(store, settings=settings)
    for name, (roles, scope) in USERS.items():
        users.add_user(name, password(name), roles, scope)
    blobs = store.blobs
    corrupt_sha = blobs.put(b"the bytes as archived")
    blob_path = blobs.root / corrupt_sha[:2] / corrupt_sha[2:4] / corrupt_sha
    os.chmod(blob_path, 0o644)
    blob_path.write_bytes(b"the bytes as changed")  # altered on disk after archiving
    metas = {
        "ATT-1": AttachmentMeta("ATT-1", "发票.pdf", "application/pdf", len(INVOICE), blobs.put(INVOICE),
                                AttachmentKind.INVOICE, "INV-0001"),
        "ATT-BIG": AttachmentMeta("ATT-BIG", "扫描件 <全部> & 附注.tif", "image/tiff", len(BIG), blobs.put(BIG)),
        "ATT-EMPTY": AttachmentMeta("ATT-EMPTY", "empty.txt", "text/plain", 0, blobs.put(b"")),
        "ATT-CORRUPT": AttachmentMeta("ATT-CORRUPT", "bad.pdf", "application/pdf", 21, corrupt_sha),
        "ATT-GONE": AttachmentMeta("ATT-GONE", "gone.pdf", "application/pdf", 4, hashlib.sha256(b"gone").hexdigest()),
        "ATT-SIZE": AttachmentMeta("ATT-SIZE", "size.pdf", "application/pdf", len(INVOICE) + 1, blobs.put(INVOICE)),
    }
    org2 = AttachmentMeta("ATT-ORG2", "org2.pdf", "application/pdf", len(INVOICE), blobs.put(INVOICE))
    with store.transaction(immediate=True) as conn:
        for v in (_voucher("V-ORG1-1", "ORG1", tuple(metas.values())), _voucher("V-ORG2-1", "ORG2", (org2,)),
                  FX_VOUCHER):
            voucher_repo.save_voucher(conn, v, canonical_hash(v), NOW)
        for v, state in _state_vouchers():
            voucher_repo.save_voucher(conn, v, canonical_hash(v), NOW)
            if state is not WorkflowState.NONE:
                voucher_repo.set_workflow(
                    conn, v.voucher_id, state=state, oa_request_id=f"OA-{v.voucher_id}",
                    decided_at=dt.datetime(2024, 3, 7, 8, 0, tzinfo=CST) if state.decided else None,
                    approvals=TRAIL if state.decided else None,
                )
    archived = ArchiveService(store).archive_document(ArchiveDocumentCommand(
        source_system="ecology", source_id="BX-1", doc_type="EXPENSE_CLAIM", org_code="ORG1", period="2024-03",
        title="差旅费报销单", attachments=(NewFile("机票.pdf", "application/pdf", b"ticket"),),
    ), None)
    services = _services(store, users)
    yield {
        "settings": settings, "store": store, "users": users, "services": services,
        "app": make_gateway_app(settings, services),
        "spyne": _spyne_only(make_gateway_app(settings, services)),
        "document_file": f"{archived.archive_id}-1", "blob_path": blob_path,
    }
    store.dispose()


# --- calling a WSGI app in-process ---------------------------------------------------------


class Answer:
    def __init__(self, status: str, headers: list, chunks: list[bytes]) -> None:
        self.status, self.headers, self.chunks = status, dict(headers), chunks
        self.body = b"".join(chunks)

    def canonical(self) -> bytes:
        return etree.tostring(etree.fromstring(self.body, etree.XMLParser(huge_tree=True)), method="c14n")


def envelope(operation_xml: str, version: str = "1.1", header_xml: str = "") -> bytes:
    return factories.envelope(operation_xml, header_xml, namespace=SOAP11 if version == "1.1" else SOAP12,
                              prefix="s", declaration=True).encode()


def get_attachment(attachment_id: str, version: str = "1.1") -> bytes:
    return envelope(f"<g:GetAttachment><g:attachmentId>{attachment_id}</g:attachmentId></g:GetAttachment>", version)


def call(app, body: bytes, *, user: str | None = "viewer1", secret: str | None = None, version: str = "1.1",
         correlation_id: str = "corr-1") -> Answer:
    environ = {
        "REQUEST_METHOD": "POST", "PATH_INFO": "/soap/archive" if version == "1.1" else "/soap12/archive",
        "QUERY_STRING": "", "CONTENT_LENGTH": str(len(body)),
        "CONTENT_TYPE": "text/xml; charset=utf-8" if version == "1.1" else "application/soap+xml; charset=utf-8",
        "SERVER_NAME": "localhost", "SERVER_PORT": "8080", "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1", "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(body),
        "wsgi.errors": io.StringIO(), "HTTP_X_CORRELATION_ID": correlation_id,
    }
    if user is not None:
        credentials = f"{user}:{secret or password(user)}".encode("utf-8")
        environ["HTTP_AUTHORIZATION"] = "Basic " + base64.b64encode(credentials).decode("ascii")
    started = []
    iterable = app(environ, lambda status, headers, exc_info=None: started.append((status, headers)))
    try:
        chunks = list(iterable)
    finally:
        if hasattr(iterable, "close"):
            iterable.close()
    return Answer(*started[0], chunks)


def audit_records(store, correlation_id: str) -> list[tuple]:
    with store.transaction() as conn:
        records = audit.find_records(conn)
    return [(r.actor, r.source, r.operation, r.targets, r.outcome, r.details)
            for r in records if r.correlation_id == correlation_id]


def assert_same_as_spyne(gw, body: bytes, **kwargs) -> Answer:
    """The gateway's answer and audit record equal spyne's for the same request."""
    mine = call(gw["app"], body, correlation_id="direct-" + kwargs.get("correlation_id", "x"),
                **{k: v for k, v in kwargs.items() if k != "correlation_id"})
    reference = call(gw["spyne"], body, correlation_id="spyne-" + kwargs.get("correlation_id", "x"),
                     **{k: v for k, v in kwargs.items() if k != "correlation_id"})
    same_id = reference.body.replace(b"spyne-", b"direct-")
    assert mine.status == reference.status
    assert mine.headers["Content-Type"] == reference.headers["Content-Type"]
    assert int(mine.headers["Content-Length"]) == len(mine.body) == len(same_id)
    assert mine.canonical() == etree.tostring(etree.fromstring(same_id, etree.XMLParser(huge_tree=True)),
                                              method="c14n")
    assert mine.body == same_id  # not only the same XML: the same bytes
    tag = kwargs.get("correlation_id", "x")
    assert audit_records(gw["store"], "direct-" + tag) == audit_records(gw["store"], "spyne-" + tag) != []
    return mine


# --- GetAttachment: the same answer as spyne's ------------------------------------------------


@pytest.mark.parametrize("version", ["1.1", "1.2"])
@pytest.mark.parametrize("attachment_id, content", [
    ("ATT-1", INVOICE), ("ATT-BIG", BIG), ("ATT-EMPTY", b""),
])
def test_get_attachment_answer_equals_spyne(gw, version, attachment_id, content):
    answer = assert_same_as_spyne(gw, get_attachment(attachment_id, version), version=version,
                                  correlation_id=f"{attachment_id}-{version}")
    assert answer.status == "200 OK"
    found = etree.fromstring(answer.body, etree.XMLParser(huge_tree=True)).find(f".//{{{GW}}}content")
    assert base64.b64decode(found.text or "") == content


def test_document_files_and_users_without_an_organisation_scope(gw):
    assert_same_as_spyne(gw, get_attachment(gw["document_file"]), correlation_id="document")
    assert_same_as_spyne(gw, get_attachment("ATT-ORG2"), user="viewer-all", correlation_id="all-orgs")


@pytest.mark.parametrize("version", ["1.1", "1.2"])
@pytest.mark.parametrize("case, attachment_id, user, secret, code", [
    ("missing", "ATT-NONE", "viewer1", None, "NotFound"),
    ("other organisation", "ATT-ORG2", "viewer1", None, "NotFound"),
    ("blank id", " ", "viewer1", None, "NotFound"),
    ("markup in the id", "&lt;x&gt; &amp; 中文", "viewer1", None, "NotFound"),
    ("no credentials", "ATT-1", None, None, "Authentication"),
    ("wrong password", "ATT-1", "viewer-all", "wrong", "Authentication"),
    ("unknown user", "ATT-1", "nobody", "x", "Authentication"),
    ("role", "ATT-1", "auditor", None, "AccessDenied"),
    ("altered blob", "ATT-CORRUPT", "viewer1", None, "Internal"),
    ("blob file gone", "ATT-GONE", "viewer1", None, "NotFound"),
    ("size differs", "ATT-SIZE", "viewer1", None, "Internal"),
])
def test_get_attachment_faults_equal_spyne(gw, version, case, attachment_id, user, secret, code):
    answer = assert_same_as_spyne(gw, get_attachment(attachment_id, version), user=user, secret=secret,
                                  version=version, correlation_id=f"{case.replace(' ', '_')}-{version}")
    assert answer.status != "200 OK"
    assert f">{code}<".encode() in answer.body


def test_get_attachment_with_a_username_token_equals_spyne(gw):
    token = (
        '<wsse:Security xmlns:wsse="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd">'
        f"<wsse:UsernameToken><wsse:Username>viewer1</wsse:Username><wsse:Password>{password('viewer1')}"
        "</wsse:Password></wsse:UsernameToken></wsse:Security>"
    )
    body = envelope("<g:GetAttachment><g:attachmentId>ATT-1</g:attachmentId></g:GetAttachment>", header_xml=token)
    answer = assert_same_as_spyne(gw, body, user=None, correlation_id="token")
    assert answer.status == "200 OK"


def test_gbk_answers_equal_spyne(gw):
    gbk_env = {**UNLOCKED, "ARCHIVE_OA_GATEWAY_RESPONSE_ENCODING": "GBK"}
    settings = load_settings(data_dir=gw["settings"].data_dir, env=gbk_env)
    assert settings.gateway.response_encoding.upper() == "GBK"
    gbk = dict(gw, app=make_gateway_app(settings, gw["services"]),
               spyne=_spyne_only(make_gateway_app(settings, gw["services"])))
    for version in ("1.1", "1.2"):
        answer = assert_same_as_spyne(gbk, get_attachment("ATT-BIG", version), version=version,
                                      correlation_id=f"gbk-{version}")
        assert answer.body.startswith(b"<?xml version='1.0' encoding='GBK'?>")
        assert "扫描件".encode("gbk") in answer.body
        assert_same_as_spyne(gbk, get_attachment("ATT-NONE", version), version=version,
                             correlation_id=f"gbk-fault-{version}")


# --- GetVoucher: the same answer as spyne's -------------------------------------------------------


def get_voucher(voucher_id: str, version: str = "1.1") -> bytes:
    return envelope(f"<g:GetVoucher><g:voucherId>{voucher_id}</g:voucherId></g:GetVoucher>", version)


@pytest.mark.parametrize("version", ["1.1", "1.2"])
@pytest.mark.parametrize("voucher_id", ["V-ORG1-1", "V-FX-1"] + [v.voucher_id for v, _ in _state_vouchers()])
def test_get_voucher_answer_equals_spyne(gw, spyne_calls, version, voucher_id):
    answer = assert_same_as_spyne(gw, get_voucher(voucher_id, version), version=version,
                                  correlation_id=f"{voucher_id}-{version}")
    assert answer.status == "200 OK" and spyne_calls() == 0
    assert f"<tns:voucherId>{voucher_id}</tns:voucherId>".encode() in answer.body


@pytest.mark.parametrize("version", ["1.1", "1.2"])
@pytest.mark.parametrize("case, voucher_id, user, secret", [
    ("missing", "V-NONE", "viewer1", None),
    ("other organisation", "V-ORG2-1", "viewer1", None),
    ("no credentials", "V-FX-1", None, None),
    ("wrong password", "V-FX-1", "viewer-all", "wrong"),
    ("role", "V-FX-1", "auditor", None),
])
def test_get_voucher_faults_equal_spyne(gw, version, case, voucher_id, user, secret):
    answer = assert_same_as_spyne(gw, get_voucher(voucher_id, version), user=user, secret=secret, version=version,
                                  correlation_id=f"voucher-{case.replace(' ', '_')}-{version}")
    assert answer.status != "200 OK"


def test_get_voucher_in_gbk_equals_spyne(gw):
    gbk_env = {**UNLOCKED, "ARCHIVE_OA_GATEWAY_RESPONSE_ENCODING": "GBK"}
    settings = load_settings(data_dir=gw["settings"].data_dir, env=gbk_env)
    gbk = dict(gw, app=make_gateway_app(settings, gw["services"]),
               spyne=_spyne_only(make_gateway_app(settings, gw["services"])))
    for version in ("1.1", "1.2"):
        assert_same_as_spyne(gbk, get_voucher("V-FX-1", version), version=version, correlation_id=f"gbk-v-{version}")


# --- QueryVouchers: the same answer as spyne's ----------------------------------------------------


def query(*arguments: str, version: str = "1.1") -> bytes:
    return envelope(f"<g:QueryVouchers>{''.join(arguments)}</g:QueryVouchers>", version)


PAGE = ("<g:page>1</g:page>", "<g:pageSize>100</g:pageSize>")


@pytest.mark.parametrize("version", ["1.1", "1.2"])
@pytest.mark.parametrize("case, arguments, user", [
    ("all in scope", PAGE, "viewer1"),
    ("all organisations", PAGE, "viewer-all"),
    ("small pages", ("<g:page> 2 </g:page>", "<g:pageSize>3</g:pageSize>"), "viewer-all"),
    ("past the end", ("<g:page>99</g:page>", "<g:pageSize>10</g:pageSize>"), "viewer1"),
    ("every filter", ("<g:orgCode>ORG1</g:orgCode>", "<g:periodFrom>2024-01</g:periodFrom>",
                      "<g:periodTo>2024-03</g:periodTo>", "<g:voucherWord>记</g:voucherWord>",
                      "<g:voucherNoFrom>1</g:voucherNoFrom>", "<g:voucherNoTo>9</g:voucherNoTo>",
                      "<g:state>SUBMITTED</g:state>", "<g:keyword>差旅</g:keyword>",
                      "<g:amountMin>10.5</g:amountMin>", "<g:amountMax>100</g:amountMax>", *PAGE), "viewer1"),
    ("another organisation", ("<g:orgCode>ORG2</g:orgCode>", *PAGE), "viewer1"),
    ("empty strings", ("<g:orgCode></g:orgCode>", "<g:keyword/>", *PAGE), "viewer1"),
    ("page size too large", ("<g:page>1</g:page>", "<g:pageSize>501</g:pageSize>"), "viewer1"),
    ("periods reversed", ("<g:periodFrom>2024-03</g:periodFrom>", "<g:periodTo>2024-01</g:periodTo>", *PAGE),
     "viewer1"),
    ("role", PAGE, "auditor"),
])
def test_query_vouchers_answer_equals_spyne(gw, spyne_calls, version, case, arguments, user):
    assert_same_as_spyne(gw, query(*arguments, version=version), user=user, version=version,
                         correlation_id=f"query-{case.replace(' ', '_')}-{version}")
    assert spyne_calls() == 0


@pytest.mark.parametrize("arguments", [
    PAGE[::-1],  # out of order: the schema's sequence
    ("<g:page>1</g:page>",),  # pageSize is required
    ("<g:state>LOST</g:state>", *PAGE),  # not a state
    ("<g:amountMin>1.234</g:amountMin>", *PAGE),  # three fraction digits
    ("<g:page>1</g:page>", "<g:page>2</g:page>", "<g:pageSize>1</g:pageSize>"),
])
def test_query_vouchers_refused_by_the_schema_is_left_to_spyne(gw, spyne_calls, arguments):
    answer = call(gw["app"], query(*arguments), correlation_id="q-left")
    assert spyne_calls() == 1 and ">Validation<" in answer.body.decode()


# --- which requests the direct path takes ---------------------------------------------------


class _Recorder:
    """Wraps the spyne WSGI application of an endpoint and counts the requests it gets."""

    def __init__(self, inner) -> None:
        self.inner, self.calls = inner, 0

    def __call__(self, environ, respond):
        self.calls += 1
        return self.inner(environ, respond)


@pytest.fixture
def spyne_calls(gw, monkeypatch):
    soap11, soap12 = _Recorder(gw["app"]._soap), _Recorder(gw["app"]._soap12._soap)
    monkeypatch.setattr(gw["app"], "_soap", soap11)
    monkeypatch.setattr(gw["app"]._soap12, "_soap", soap12)
    return lambda: soap11.calls + soap12.calls


@pytest.mark.parametrize("version", ["1.1", "1.2"])
def test_plain_get_attachment_is_streamed_without_spyne(gw, spyne_calls, version):
    answer = call(gw["app"], get_attachment("ATT-BIG", version), version=version)
    assert answer.status == "200 OK" and spyne_calls() == 0
    # the file travels in pieces of at most CHUNK_BYTES (base64: 4/3 of it), never whole
    assert len(answer.chunks) == 2 + 3
    assert max(len(c) for c in answer.chunks) == direct.CHUNK_BYTES * 4 // 3


@pytest.mark.parametrize("operation_xml", [
    "<g:GetAttachment/>",  # the schema needs attachmentId: spyne's Validation fault
    "<g:GetAttachment><g:attachmentId/></g:GetAttachment>",  # empty: schema (min length 1)
    "<g:GetAttachment><g:attachmentId>ATT-1</g:attachmentId><g:extra/></g:GetAttachment>",
    '<g:GetAttachment><g:attachmentId xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:nil="true"/>'
    "</g:GetAttachment>",
    '<g:GetAttachment id="a"><g:attachmentId>ATT-1</g:attachmentId></g:GetAttachment>',
    "<g:GetVoucherDocument><g:voucherId>V-ORG1-1</g:voucherId></g:GetVoucherDocument>",  # other operations
])
def test_other_requests_are_left_to_spyne(gw, spyne_calls, operation_xml):
    before = spyne_calls()
    answer = call(gw["app"], envelope(operation_xml), correlation_id="left")
    assert spyne_calls() == before + 1
    assert answer.body == call(gw["spyne"], envelope(operation_xml), correlation_id="left").body


@pytest.mark.parametrize("attribute", ['id="r1"', 'xml:id="r1"'])
def test_an_id_anywhere_leaves_the_request_to_spyne(gw, spyne_calls, attribute):
    """spyne resolves SOAP-encoding references (``href`` to an ``id``) all over the envelope."""
    body = envelope("<g:GetAttachment><g:attachmentId>ATT-1</g:attachmentId></g:GetAttachment>",
                    header_xml=f'<x:ref xmlns:x="urn:example"><x:deeper {attribute}>ATT-1</x:deeper></x:ref>')
    answer = call(gw["app"], body, correlation_id="id-header")
    assert spyne_calls() == 1 and answer.status == "200 OK"


def test_comments_are_gone_before_either_path_reads_the_request(gw, spyne_calls):
    """Both parsers drop comments: ``ATT<!-- -->-1`` is ATT-1 to spyne, and so here too."""
    body = envelope("<g:GetAttachment><!-- a --><g:attachmentId>ATT<!-- b -->-1</g:attachmentId></g:GetAttachment>")
    answer = assert_same_as_spyne(gw, body, correlation_id="comments")
    assert answer.status == "200 OK" and spyne_calls() == 0


def test_attachment_meta_is_the_lookup_and_scope_of_get_attachment_without_the_bytes(gw, monkeypatch):
    archive = gw["services"].archive
    org1, everyone = frozenset({"ORG1"}), None
    meta = archive.attachment_meta("ATT-1", org1)
    assert meta == archive.get_attachment("ATT-1", org1).meta
    assert (meta.file_name, meta.size, meta.kind) == ("发票.pdf", len(INVOICE), AttachmentKind.INVOICE)
    assert archive.attachment_meta(gw["document_file"], org1).file_name == "机票.pdf"
    assert archive.attachment_meta("ATT-ORG2", everyone).attachment_id == "ATT-ORG2"
    for attachment_id, scope in (("ATT-ORG2", org1), ("ATT-NONE", everyone), ("ATT-1", frozenset())):
        with pytest.raises(NotFound, match="check the attachmentId"):
            archive.attachment_meta(attachment_id, scope)
    # metadata only: neither the blob nor its check is touched (a missing blob still has metadata)
    monkeypatch.setattr(BlobStore, "read", lambda *args: pytest.fail("attachment_meta read the blob"))
    monkeypatch.setattr(BlobStore, "open_verified", lambda *args: pytest.fail("attachment_meta opened the blob"))
    assert archive.attachment_meta("ATT-GONE", org1).sha256 == hashlib.sha256(b"gone").hexdigest()


# --- a blob that changes while it is sent -----------------------------------------------------


def test_a_blob_cut_short_while_streaming_breaks_the_answer_and_is_audited(gw, tmp_path):
    store = open_store(load_settings(data_dir=tmp_path / "data", env={}))
    try:
        users = UserService(store)
        users.add_user("viewer1", password("viewer1"), {"viewer"}, {"ORG1"})
        meta = AttachmentMeta("ATT-CUT", "cut.bin", "application/octet-stream", len(BIG), store.blobs.put(BIG))
        with store.transaction(immediate=True) as conn:
            v = _voucher("V-ORG1-9", "ORG1", (meta,))
            voucher_repo.save_voucher(conn, v, canonical_hash(v), NOW)
        app = make_gateway_app(gw["settings"], _services(store, users))
        body = get_attachment("ATT-CUT")
        environ = {
            "REQUEST_METHOD": "POST", "PATH_INFO": "/soap/archive", "CONTENT_TYPE": "text/xml; charset=utf-8",
            "CONTENT_LENGTH": str(len(body)), "wsgi.input": io.BytesIO(body), "REMOTE_ADDR": "127.0.0.1",
            "HTTP_X_CORRELATION_ID": "cut-1",
            "HTTP_AUTHORIZATION": "Basic " + base64.b64encode(f"viewer1:{password('viewer1')}".encode()).decode(),
        }
        iterable = app(environ, lambda status, headers, exc_info=None: None)
        pieces = iter(iterable)
        next(pieces)  # the head has gone out: the file was checked and is open
        path = store.blobs.root / meta.sha256[:2] / meta.sha256[2:4] / meta.sha256
        os.chmod(path, 0o644)
        with open(path, "r+b") as damaged:
            damaged.truncate(direct.CHUNK_BYTES + 7)
        with pytest.raises(IntegrityError, match="changed on disk while it was sent"):
            list(pieces)
        iterable.close()
        outcomes = [(r[2], r[4], r[5]) for r in audit_records(store, "cut-1")]
        assert outcomes == [("GetAttachment", "OK", None), ("GetAttachment", "Internal", {"stage": "answer"})]
    finally:
        store.dispose()


# --- over HTTP, to zeep ---------------------------------------------------------------------


def test_zeep_reads_a_streamed_attachment_over_http(gw):
    handle = start_gateway(gw["app"], "127.0.0.1", 0)
    try:
        session = requests.Session()
        session.auth = HTTPBasicAuth(b"viewer1", password("viewer1").encode("utf-8"))
        client = zeep.Client(handle.wsdl_url, transport=Transport(session=session))
        result = client.service.GetAttachment(attachmentId="ATT-BIG")
        session.close()
    finally:
        handle.stop()
    assert result.content == BIG
    assert (result.fileName, result.size, result.sha256) == ("扫描件 <全部> & 附注.tif", len(BIG),
                                                             hashlib.sha256(BIG).hexdigest())


# --- the blob store's checked open --------------------------------------------------------------


def test_open_verified_checks_the_whole_file_and_returns_it_from_the_start(tmp_path):
    blobs = BlobStore(tmp_path)
    digest = blobs.put(BIG)
    file, size = blobs.open_verified(digest)
    with file:
        assert size == len(BIG) and file.read() == BIG
    path = tmp_path / digest[:2] / digest[2:4] / digest
    os.chmod(path, 0o644)
    path.write_bytes(BIG[:-1] + b"\0")
    with pytest.raises(IntegrityError, match=f"blob {digest} is corrupt"):
        blobs.open_verified(digest)  # and no file left open (filterwarnings=error)
    with pytest.raises(NotFound):
        blobs.open_verified(hashlib.sha256(b"never stored").hexdigest())
