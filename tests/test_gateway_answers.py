"""The operations the gateway answers with its own writer (``@written``, ``gateway/answers.py``):
the very answer spyne gives — the same bytes, status, headers, faults and audit records —
whatever the request's shape, and spyne's serializer never runs for them.  spyne is the
reference: each request is also answered by spyne's own WSGI application over the same
service (``SpyneReference``), which serializes the same answer objects.

GetAttachment streams its file in base64 pieces instead of building the answer in memory;
the other answers are written as text from the declared types (``wire_text``)."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import io
import itertools
import os
import time
import tracemalloc
import uuid
from unittest import mock
from xml.sax.saxutils import escape
from decimal import Decimal

import pytest
import requests
import zeep
from lxml import etree
from requests.auth import HTTPBasicAuth
from spyne import Application
from spyne.server.wsgi import WsgiApplication
from zeep.transports import Transport

from archive_oa import safexml

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
from archive_oa.gateway import encoding, faults, streamed
from archive_oa.gateway.app import make_gateway_app
from archive_oa.gateway.auth import PasswordAuthenticator
from archive_oa.gateway.context import GatewayServices
from archive_oa.gateway.intake import read_request
from archive_oa.gateway.faults import GatewayFault, fault_from_error, fault_from_spyne
from archive_oa.gateway.protocol import GatewaySoap11, GatewaySoap12, record_refusal
from archive_oa.gateway.service import GatewayService, perform_call
from archive_oa.gateway.server import start_gateway
from archive_oa.gateway.soap import SOAP11 as V11, SOAP12 as V12
from archive_oa.services import audit
from archive_oa.services.archive import ArchiveDocumentCommand, ArchiveService, NewFile
from archive_oa.services.sync import SyncService
from archive_oa.services.users import UserService
from archive_oa.settings import load_settings
from archive_oa.store import documents as document_repo, outbox, vouchers as voucher_repo
from archive_oa.store.blobs import BlobStore
from archive_oa.store.engine import open_store
from archive_oa.voucher_xml import canonical_hash
from archive_oa.wsgi_keys import CLIENT_ADDRESS_KEY, CORRELATION_KEY, ORIGIN_KEY, STARTED_KEY

NOW = dt.datetime(2024, 3, 5, 8, 0, tzinfo=dt.timezone.utc)
GW = "urn:archive-oa:gateway:1"
SOAP11 = "http://schemas.xmlsoap.org/soap/envelope/"
SOAP12 = "http://www.w3.org/2003/05/soap-envelope"
INVOICE = "%PDF-1.4 invoice 增值税专用发票 0001".encode("utf-8")
#: over two streamed pieces and not a multiple of 3: padding only at the very end
BIG = os.urandom(2 * streamed.CHUNK_BYTES + 1)
#: failed logins here (two gateways per case) must not lock the test client out
UNLOCKED = {"ARCHIVE_OA_SECURITY_LOCKOUT_AFTER": "1000"}
USERS = {"viewer1": ({"viewer"}, {"ORG1"}), "viewer-all": ({"viewer"}, None), "auditor": ({"auditor"}, None)}


def password(user: str) -> str:
    return f"pw-{user}-密码-2026"  # [security] min_password_length: 12 characters


def _voucher(voucher_id: str, org: str, attachments: tuple[AttachmentMeta, ...]) -> Voucher:
    amount = Decimal("88.00")
    return Voucher(
        voucher_id=voucher_id, org_code=org, org_name=f"{org} 有限公司", fonds_code=f"F-{org}", fiscal_year=2024,
        period="2024-03", voucher_word="记", voucher_no=int(voucher_id[-1]), date=dt.date(2024, 3, 10),
        preparer="张三", summary="报销差旅费", attachment_count=len(attachments), attachments=attachments,
        entries=(Entry(1, "报销差旅费", "6602", "管理费用", debit=amount),
                 Entry(2, "报销差旅费", "1002", "银行存款", credit=amount)),
    )


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
    return GatewayServices(store=store, archive=ArchiveService(store),  # a fixed clock: Ping's serverTime
                           authenticator=PasswordAuthenticator(users, sleep=lambda seconds: None), clock=lambda: NOW)


class _AnsweringProtocol:
    """What the gateway's protocols added to spyne's while spyne still answered (before
    issue 10 made every operation ``@written``): the schema check as spyne reads a
    request, and every fault — spyne's own included — in the gateway's shape."""

    def validate_body(self, ctx, message):
        if ctx.in_body_doc is not None:
            self.check(ctx.in_body_doc, _correlation_of(ctx))

    def fault_to_parent(self, ctx, cls, inst, parent, ns, *args, **kwargs):
        fault = inst if isinstance(inst, GatewayFault) else fault_from_error(inst, _correlation_of(ctx))
        parent.append(faults.fault_element(fault, self.ns_soap_env))

    def serialize(self, ctx, message):
        super().serialize(ctx, message)
        if ctx.out_error is not None:
            # the fault's codes are QNames in text, written once spyne has chosen the prefixes
            for fault in ctx.out_document.iter(f"{{{self.ns_soap_env}}}Fault"):
                faults.qualify(fault)


class _Reference11(_AnsweringProtocol, GatewaySoap11):
    """The gateway's SOAP 1.1 protocol, answering, in the reference (told apart by ``spyne_calls``)."""


class _Reference12(_AnsweringProtocol, GatewaySoap12):
    """The gateway's SOAP 1.2 protocol, answering, in the reference: a Sender fault 400, a Receiver fault 500."""

    def fault_to_http_response_code(self, fault):
        return faults.soap12_status(fault if isinstance(fault, GatewayFault) else None)


class _ReferenceApplication(Application):
    """spyne's application running each operation through ``perform_call``, as the
    gateway's call wrapper did while spyne answered."""

    def call_wrapper(self, ctx):
        environ = getattr(ctx.transport, "req_env", None) or {}
        arguments = tuple(ctx.in_object)
        names = ctx.descriptor.in_message._type_info.keys()
        return perform_call(self.gateway_services, environ, ctx.descriptor.name, dict(zip(names, arguments)),
                            ctx.in_header_doc, lambda call: ctx.descriptor.function(call, *arguments))


def _correlation_of(ctx) -> str:
    return (getattr(ctx.transport, "req_env", None) or {}).get(CORRELATION_KEY) or "unknown"


def _normalise_fault(ctx) -> None:
    """spyne's own faults (schema, syntax) get the gateway's detail and codes; a fault
    before any operation ran is audited as the gateway audits it."""
    if ctx.out_error is not None and not isinstance(ctx.out_error, GatewayFault):
        ctx.out_error = fault_from_spyne(ctx.out_error, _correlation_of(ctx))
        if ctx.in_error is not None:
            ctx.in_error = ctx.out_error
    if ctx.in_error is not None and isinstance(ctx.out_error, GatewayFault):
        record_refusal(ctx.app.gateway_services, getattr(ctx.transport, "req_env", None) or {}, ctx.out_error,
                       "protocol")


def _reference_application(protocol: type, services, *, content_type: str, charset: str) -> Application:
    out_protocol = protocol(encoding=charset)
    out_protocol.mime_type = content_type
    app = _ReferenceApplication([GatewayService], tns=GW, name="ArchiveGateway",
                                in_protocol=protocol(validator="lxml", huge_tree=True), out_protocol=out_protocol)
    app.gateway_services = services
    app.event_manager.add_listener("method_exception_object", _normalise_fault)
    return app


class SpyneReference:
    """spyne's own answer to a request: the router's environ keys and the gateway's intake,
    then spyne's WSGI application over the same service and services, so every operation
    is run by spyne and its answer — the same answer object — written by spyne's serializer,
    as the gateway answered before its own writer answered every operation."""

    def __init__(self, settings, services) -> None:
        charset = encoding.response_charset(settings.gateway.response_encoding)
        self._services = services
        self._limit = settings.gateway.max_body_bytes
        self._policy = safexml.XmlPolicy.soap_message(settings.security)
        self._spyne = {
            version.path: (version, WsgiApplication(_reference_application(
                protocol, services, content_type=version.content_type(charset), charset=charset),
                max_content_length=self._limit))
            for version, protocol in ((V11, _Reference11), (V12, _Reference12))
        }

    def __call__(self, environ, start_response):
        version, spyne = self._spyne[environ["PATH_INFO"]]
        correlation_id = environ["HTTP_X_CORRELATION_ID"]
        origin = self._services.authenticator.origin(environ)
        environ.update({CORRELATION_KEY: correlation_id, STARTED_KEY: time.monotonic(), ORIGIN_KEY: origin,
                        CLIENT_ADDRESS_KEY: origin.address})
        request = read_request(environ, version, limit=self._limit, policy=self._policy)
        environ.update({"wsgi.input": io.BytesIO(request.body), "CONTENT_LENGTH": str(len(request.body))})
        return spyne(environ, lambda status, headers, exc_info=None: start_response(
            status, list(headers) + [("X-Correlation-Id", correlation_id)], exc_info))


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
        "spyne": SpyneReference(settings, services),
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
    ns = SOAP11 if version == "1.1" else SOAP12
    return (f'<?xml version="1.0" encoding="UTF-8"?><s:Envelope xmlns:s="{ns}" xmlns:g="{GW}">'
            f"<s:Header>{header_xml}</s:Header><s:Body>{operation_xml}</s:Body></s:Envelope>").encode()


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
    reference_store = gw.get("spyne_store", gw["store"])  # the writes' reference has its own twin store
    assert audit_records(gw["store"], "direct-" + tag) == audit_records(reference_store, "spyne-" + tag) != []
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
               spyne=SpyneReference(settings, gw["services"]))
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
               spyne=SpyneReference(settings, gw["services"]))
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
def test_query_vouchers_refused_by_the_schema_is_refused_as_spyne_refuses(gw, spyne_calls, arguments):
    # was "…_is_left_to_spyne": since issue 10 no request shape picks another way to answer
    answer = assert_same_as_spyne(gw, query(*arguments), correlation_id=f"q-refused-{len(arguments)}")
    assert spyne_calls() == 0 and ">Validation<" in answer.body.decode()


# --- every request of a written operation is answered without spyne's serializer ----------------


@pytest.fixture
def spyne_calls(monkeypatch):
    """How many answers spyne's serializer wrote for the gateway (the reference's not counted)."""
    calls = []
    for protocol in (GatewaySoap11, GatewaySoap12):
        def counting(self, ctx, message, _serialize=protocol.serialize):
            if type(self) in (GatewaySoap11, GatewaySoap12):
                calls.append(ctx.descriptor and ctx.descriptor.name)
            return _serialize(self, ctx, message)
        monkeypatch.setattr(protocol, "serialize", counting)
    return lambda: len(calls)


@pytest.mark.parametrize("version", ["1.1", "1.2"])
def test_plain_get_attachment_is_streamed_without_spyne(gw, spyne_calls, version):
    answer = call(gw["app"], get_attachment("ATT-BIG", version), version=version)
    assert answer.status == "200 OK" and spyne_calls() == 0
    # the file travels in pieces of at most CHUNK_BYTES (base64: 4/3 of it), never whole
    assert len(answer.chunks) == 2 + 3
    assert max(len(c) for c in answer.chunks) == streamed.CHUNK_BYTES * 4 // 3


@pytest.mark.parametrize("case, operation_xml", [
    ("no argument", "<g:GetAttachment/>"),  # the schema needs attachmentId: spyne's Validation fault
    ("empty", "<g:GetAttachment><g:attachmentId/></g:GetAttachment>"),  # empty: schema (min length 1)
    ("extra", "<g:GetAttachment><g:attachmentId>ATT-1</g:attachmentId><g:extra/></g:GetAttachment>"),
    ("nil", '<g:GetAttachment><g:attachmentId xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
            'xsi:nil="true"/></g:GetAttachment>'),
    ("id", '<g:GetAttachment id="a"><g:attachmentId>ATT-1</g:attachmentId></g:GetAttachment>'),
    ("document", "<g:GetVoucherDocument><g:voucherId>V-ORG1-1</g:voucherId></g:GetVoucherDocument>"),
    ("document missing", "<g:GetVoucherDocument><g:voucherId>V-NONE</g:voucherId></g:GetVoucherDocument>"),
    ("ping", "<g:Ping/>"),
    ("ping indented", "<g:Ping>\n  </g:Ping>"),
    ("sync status", "<g:GetSyncStatus/>"),  # no sync engine here: Unavailable
    ("reconcile", "<g:ReconcilePeriod><g:orgCode>ORG1</g:orgCode><g:period>2024-03</g:period></g:ReconcilePeriod>"),
])
def test_every_shape_of_a_written_operation_is_answered_as_spyne_answers_without_spyne(
        gw, spyne_calls, case, operation_xml):
    # was "test_other_requests_are_left_to_spyne": schema refusals, xsi:nil and ids were
    # spyne's to answer; now the operation decides, not the request's shape
    assert_same_as_spyne(gw, envelope(operation_xml), correlation_id=f"shape-{case.replace(' ', '_')}")
    assert spyne_calls() == 0


def test_write_operations_without_a_sync_engine_are_answered_as_spyne_answers_without_spyne(gw, spyne_calls):
    # was "test_write_operations_are_answered_by_spyne": since issue 10 the writes are
    # ``@written`` too, and spyne serialises no answer at all
    body = envelope("<g:TriggerSync><g:orgCode>ORG1</g:orgCode></g:TriggerSync>")
    answer = assert_same_as_spyne(gw, body, user="viewer-all", correlation_id="write")
    assert spyne_calls() == 0 and answer.status != "200 OK"  # no sync engine here: Unavailable


@pytest.mark.parametrize("attribute", ['id="r1"', 'xml:id="r1"'])
def test_an_id_anywhere_is_read_as_spyne_reads_it(gw, spyne_calls, attribute):
    """spyne resolves SOAP-encoding references (``href`` to an ``id``) all over the envelope."""
    # was "…_leaves_the_request_to_spyne"
    body = envelope("<g:GetAttachment><g:attachmentId>ATT-1</g:attachmentId></g:GetAttachment>",
                    header_xml=f'<x:ref xmlns:x="urn:example"><x:deeper {attribute}>ATT-1</x:deeper></x:ref>')
    answer = assert_same_as_spyne(gw, body, correlation_id=f"id-header-{attribute[0]}")
    assert spyne_calls() == 0 and answer.status == "200 OK"


def test_a_soap_encoding_reference_is_resolved_as_spyne_resolves_it(gw, spyne_calls):
    """spyne copies the referenced element in, ``href`` stays: the schema refuses the attribute."""
    body = envelope('<g:GetVoucher><g:voucherId href="#v"/></g:GetVoucher>',
                    header_xml='<x:value xmlns:x="urn:example" id="v">V-FX-1</x:value>')
    answer = assert_same_as_spyne(gw, body, correlation_id="href")
    assert spyne_calls() == 0 and ">Validation<" in answer.body.decode() and "href" in answer.body.decode()


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
            damaged.truncate(streamed.CHUNK_BYTES + 7)
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


# --- the writes: ArchiveDocument, SubmitWorkflowResult, TriggerSync -------------------------------
#
# A write changes the store, so the gateway and spyne each answer against their own twin of
# it: the same users, vouchers and clock, built the same way, asked the same requests in the
# same order.  The ids a write makes (archiveId, jobId) come from ``uuid4``; each side draws
# them from its own counter started alike (``Numbered``), so the twins stay equal.

#: small enough for a quick run; large enough that a copy of the body shows in memory
WRITE_LIMIT = 4 * 1024 * 1024
WRITERS = {
    "archivist1": ({"archivist"}, {"ORG1"}), "archivist-all": ({"archivist"}, None),
    "operator1": ({"operator"}, {"ORG1"}), "viewer1": ({"viewer"}, {"ORG1"}),
}


class Numbered:
    """A WSGI app whose calls draw ``uuid4`` from this side's own counter."""

    def __init__(self, app, ids) -> None:
        self._app, self._ids = app, ids

    def __call__(self, environ, start_response):
        with mock.patch.object(uuid, "uuid4", lambda: uuid.UUID(int=next(self._ids))):
            return list(self._app(environ, start_response))


def _twin(settings):
    """One side's store: the writers, a voucher of each organisation submitted to the OA
    and two not yet sent, a sync engine (TriggerSync) over an OA it never calls."""
    store = open_store(settings)
    users = UserService(store, settings=settings)
    for name, (roles, scope) in WRITERS.items():
        users.add_user(name, password(name), roles, scope)
    with store.transaction(immediate=True) as conn:
        for v, request_id in ((_voucher("V-ORG1-1", "ORG1", ()), "7001"), (_voucher("V-ORG2-1", "ORG2", ()), "7002"),
                              (_voucher("V-ORG1-2", "ORG1", ()), None), (_voucher("V-ORG1-3", "ORG1", ()), None)):
            voucher_repo.save_voucher(conn, v, canonical_hash(v), NOW)
            if request_id:
                key = f"{v.voucher_id}:{canonical_hash(v)[:16]}"
                outbox.enqueue(conn, voucher_id=v.voucher_id, version=1, idempotency_key=key, now=NOW)
                voucher_repo.map_request(conn, external_key=key, voucher_id=v.voucher_id, version=1,
                                         oa_request_id=request_id)
                voucher_repo.set_workflow(conn, v.voucher_id, state=WorkflowState.SUBMITTED,
                                          oa_request_id=request_id)
    services = GatewayServices(store=store, archive=ArchiveService(store, clock=lambda: NOW),
                               authenticator=PasswordAuthenticator(users, sleep=lambda seconds: None),
                               sync=SyncService(store, clock=lambda: NOW), clock=lambda: NOW)
    return store, services


def _write_settings(data_dir, response_encoding: str = "UTF-8"):
    return load_settings(data_dir=data_dir, env={
        **UNLOCKED, "ARCHIVE_OA_GATEWAY_MAX_BODY_BYTES": str(WRITE_LIMIT),
        "ARCHIVE_OA_GATEWAY_RESPONSE_ENCODING": response_encoding})


@pytest.fixture(scope="module")
def wr(tmp_path_factory):
    mine_settings, spyne_settings = (_write_settings(tmp_path_factory.mktemp(side)) for side in ("mine", "spyne"))
    (store, services), (spyne_store, spyne_services) = _twin(mine_settings), _twin(spyne_settings)
    mine_ids, spyne_ids = itertools.count(1), itertools.count(1)
    yield {
        "settings": (mine_settings, spyne_settings), "services": (services, spyne_services), "ids": (mine_ids, spyne_ids),
        "store": store, "spyne_store": spyne_store,
        "app": Numbered(make_gateway_app(mine_settings, services), mine_ids),
        "spyne": Numbered(SpyneReference(spyne_settings, spyne_services), spyne_ids),
    }
    store.dispose()
    spyne_store.dispose()


def in_encoding(wr, response_encoding: str) -> dict:
    """The same twins, answering in ``response_encoding``."""
    (mine, spyne), (services, spyne_services) = wr["settings"], wr["services"]
    mine_ids, spyne_ids = wr["ids"]
    mine = _write_settings(mine.data_dir, response_encoding)
    spyne = _write_settings(spyne.data_dir, response_encoding)
    assert mine.gateway.response_encoding.upper() == response_encoding
    return dict(wr, app=Numbered(make_gateway_app(mine, services), mine_ids),
                spyne=Numbered(SpyneReference(spyne, spyne_services), spyne_ids))


def archive_document(source_id: str, *, org: str = "ORG1", doc_type: str = "EXPENSE_CLAIM", period: str = "2024-03",
                     files=(("发票 <1> & 2.pdf", "application/pdf", INVOICE),), extra: str = "",
                     version: str = "1.1") -> bytes:
    attachments = "".join(
        f"<g:attachment><g:fileName>{escape(name)}</g:fileName><g:mimeType>{mime}</g:mimeType>"
        f"<g:content>{base64.b64encode(content).decode()}</g:content></g:attachment>" for name, mime, content in files)
    return envelope(
        f"<g:ArchiveDocument><g:sourceSystem>ecology</g:sourceSystem><g:sourceId>{source_id}</g:sourceId>"
        f"<g:docType>{doc_type}</g:docType><g:orgCode>{org}</g:orgCode><g:period>{period}</g:period>"
        f"<g:title>差旅费报销单 “北京” &amp; &lt;出差&gt;</g:title><g:amount>1200.50</g:amount>"
        f"<g:oaRequestId>OA-{source_id}</g:oaRequestId>{extra}"
        f"<g:fields><g:field><g:name>部门</g:name><g:value>财务部</g:value></g:field>"
        f"<g:field><g:name>empty</g:name></g:field></g:fields>"
        f"<g:attachments>{attachments}</g:attachments></g:ArchiveDocument>", version)


def submit_result(*, request_id: str | None = "7001", external_key: str | None = None, state: str = "APPROVED",
                  finished_at: str = "2024-03-06T11:00:00+08:00", version: str = "1.1") -> bytes:
    names = (f"<g:oaRequestId>{request_id}</g:oaRequestId>" if request_id else "") + (
        f"<g:externalKey>{external_key}</g:externalKey>" if external_key else "")
    return envelope(
        f"<g:SubmitWorkflowResult>{names}<g:state>{state}</g:state><g:finishedAt>{finished_at}</g:finishedAt>"
        "<g:approvals><g:approval><g:step>1</g:step><g:approver>财务经理</g:approver><g:action>APPROVE</g:action>"
        "<g:comment>同意 &lt;ok&gt;</g:comment><g:time>2024-03-06T10:00:00+08:00</g:time></g:approval>"
        "</g:approvals></g:SubmitWorkflowResult>", version)


def trigger_sync(*arguments: str, version: str = "1.1") -> bytes:
    return envelope(f"<g:TriggerSync>{''.join(arguments)}</g:TriggerSync>", version)


def assert_write_same_as_spyne(wr, spyne_calls, body: bytes, *, user: str | None, correlation_id: str,
                               **kwargs) -> Answer:
    answer = assert_same_as_spyne(wr, body, user=user, correlation_id=correlation_id, **kwargs)
    assert spyne_calls() == 0
    return answer


def text_of(answer: Answer, name: str) -> str | None:
    found = etree.fromstring(answer.body, etree.XMLParser(huge_tree=True)).find(f".//{{{GW}}}{name}")
    return None if found is None else found.text


@pytest.mark.parametrize("version", ["1.1", "1.2"])
def test_archive_document_and_its_repeat_equal_spyne(wr, spyne_calls, version):
    body = archive_document(f"BX-{version}", version=version,
                            files=(("发票 <1> & 2.pdf", "application/pdf", INVOICE), ("扫描件.tif", "image/tiff", BIG)))
    first = assert_write_same_as_spyne(wr, spyne_calls, body, user="archivist1", version=version,
                                       correlation_id=f"archive-{version}")
    assert first.status == "200 OK" and text_of(first, "duplicate") == "false"
    assert text_of(first, "archivalCode").startswith("ORG1-2024-")
    # a repeat of (sourceSystem, sourceId) is the first result, marked duplicate
    again = assert_write_same_as_spyne(wr, spyne_calls, body, user="archivist-all", version=version,
                                       correlation_id=f"archive-again-{version}")
    assert text_of(again, "duplicate") == "true"
    assert text_of(again, "archiveId") == text_of(first, "archiveId")
    with wr["store"].transaction() as conn:
        stored = document_repo.find_by_source(conn, "ecology", f"BX-{version}")
    assert [(f.file_name, f.size) for f in stored.files] == [("发票 <1> & 2.pdf", len(INVOICE)), ("扫描件.tif", len(BIG))]
    assert wr["store"].blobs.read(stored.files[1].sha256) == BIG


@pytest.mark.parametrize("version", ["1.1", "1.2"])
@pytest.mark.parametrize("case, body, user, secret", [
    # refused by the schema, as spyne refuses it
    ("no sourceId", lambda v: archive_document("", version=v).replace(b"<g:sourceId></g:sourceId>", b""),
     "archivist1", None),
    ("unknown docType", lambda v: archive_document("BX-F1", doc_type="INVOICE", version=v), "archivist1", None),
    ("bad period", lambda v: archive_document("BX-F2", period="2024-13", version=v), "archivist1", None),
    ("base64 cut short", lambda v: archive_document("BX-F3", version=v).replace(b"<g:content>", b"<g:content>A"),
     "archivist1", None),
    ("empty file name", lambda v: archive_document("BX-F4", files=(("", "text/plain", b"x"),), version=v),
     "archivist1", None),
    # refused by the service's own checks
    ("empty file", lambda v: archive_document("BX-F5", files=(("a.txt", "text/plain", b""),), version=v),
     "archivist1", None),
    ("path in the file name", lambda v: archive_document("BX-F6", files=(("../a.txt", "text/plain", b"x"),),
                                                         version=v), "archivist1", None),
    # authentication and authorisation
    ("no credentials", lambda v: archive_document("BX-F7", version=v), None, None),
    ("wrong password", lambda v: archive_document("BX-F8", version=v), "archivist1", "wrong"),
    ("role", lambda v: archive_document("BX-F9", version=v), "viewer1", None),
    ("other organisation", lambda v: archive_document("BX-F10", org="ORG2", version=v), "archivist1", None),
])
def test_archive_document_faults_equal_spyne(wr, spyne_calls, version, case, body, user, secret):
    answer = assert_write_same_as_spyne(wr, spyne_calls, body(version), user=user, secret=secret, version=version,
                                        correlation_id=f"archive-{case.replace(' ', '_')}-{version}")
    assert answer.status != "200 OK"


def test_a_repeat_archived_for_another_organisation_is_refused_as_spyne_refuses(wr, spyne_calls):
    body = archive_document("BX-ORG2", org="ORG2")
    assert_write_same_as_spyne(wr, spyne_calls, body, user="archivist-all", correlation_id="archive-org2")
    answer = assert_write_same_as_spyne(wr, spyne_calls, body.replace(b">ORG2<", b">ORG1<"), user="archivist1",
                                        correlation_id="archive-org2-again")
    assert ">AccessDenied<" in answer.body.decode()


@pytest.mark.parametrize("version", ["1.1", "1.2"])
def test_submit_workflow_result_and_its_repeat_equal_spyne(wr, spyne_calls, version):
    request_id = "7001" if version == "1.1" else None
    external_key = None if request_id else "V-ORG1-1"  # unknown: NotFound, the same way
    body = submit_result(request_id=request_id, external_key=external_key, version=version)
    first = assert_write_same_as_spyne(wr, spyne_calls, body, user="archivist1", version=version,
                                       correlation_id=f"outcome-{version}")
    again = assert_write_same_as_spyne(wr, spyne_calls, body, user="archivist1", version=version,
                                       correlation_id=f"outcome-again-{version}")
    if request_id:
        assert first.status == again.status == "200 OK"
        assert (text_of(first, "voucherState"), text_of(first, "duplicate")) == ("APPROVED", "false")
        assert (text_of(again, "voucherState"), text_of(again, "duplicate")) == ("APPROVED", "true")


@pytest.mark.parametrize("version", ["1.1", "1.2"])
@pytest.mark.parametrize("case, body, user, secret", [
    ("neither name", dict(request_id=None), "archivist1", None),
    ("not decided", dict(state="SUBMITTED"), "archivist1", None),  # the schema: not a DecisionState
    ("no time zone", dict(finished_at="2024-03-06T11:00:00"), "archivist1", None),
    ("unknown request", dict(request_id="9999"), "archivist1", None),
    ("other organisation", dict(request_id="7002"), "archivist1", None),
    ("no credentials", dict(), None, None),
    ("wrong password", dict(), "archivist1", "wrong"),
    ("role", dict(), "viewer1", None),
])
def test_submit_workflow_result_faults_equal_spyne(wr, spyne_calls, version, case, body, user, secret):
    answer = assert_write_same_as_spyne(wr, spyne_calls, submit_result(**body, version=version), user=user,
                                        secret=secret, version=version,
                                        correlation_id=f"outcome-{case.replace(' ', '_')}-{version}")
    assert answer.status != "200 OK"


@pytest.mark.parametrize("version", ["1.1", "1.2"])
def test_trigger_sync_and_its_repeat_equal_spyne(wr, spyne_calls, version):
    ids = "<g:voucherIds><g:id>V-ORG1-2</g:id><g:id>V-ORG1-2</g:id></g:voucherIds>"
    body = trigger_sync("<g:orgCode>ORG1</g:orgCode>", ids if version == "1.1" else "", version=version)
    first = assert_write_same_as_spyne(wr, spyne_calls, body, user="operator1", version=version,
                                       correlation_id=f"trigger-{version}")
    again = assert_write_same_as_spyne(wr, spyne_calls, body, user="operator1", version=version,
                                       correlation_id=f"trigger-again-{version}")
    assert first.status == again.status == "200 OK"
    assert text_of(first, "jobId") != text_of(again, "jobId")
    assert text_of(again, "queued") == "0"  # queued once: a repeat finds nothing left to queue


@pytest.mark.parametrize("version", ["1.1", "1.2"])
@pytest.mark.parametrize("case, arguments, user", [
    ("periods reversed", ("<g:periodFrom>2024-03</g:periodFrom>", "<g:periodTo>2024-01</g:periodTo>"), "operator1"),
    ("bad period", ("<g:periodFrom>2024-3</g:periodFrom>",), "operator1"),
    ("other organisation", ("<g:orgCode>ORG2</g:orgCode>",), "operator1"),
    ("role", ("<g:orgCode>ORG1</g:orgCode>",), "archivist1"),
    ("no credentials", (), None),
])
def test_trigger_sync_faults_equal_spyne(wr, spyne_calls, version, case, arguments, user):
    answer = assert_write_same_as_spyne(wr, spyne_calls, trigger_sync(*arguments, version=version), user=user,
                                        version=version, correlation_id=f"trigger-{case.replace(' ', '_')}-{version}")
    assert answer.status != "200 OK"


@pytest.mark.parametrize("response_encoding", ["GBK", "GB18030"])
def test_writes_in_gbk_and_gb18030_equal_spyne(wr, spyne_calls, response_encoding):
    encoded = in_encoding(wr, response_encoding)
    for version in ("1.1", "1.2"):
        tag = f"{response_encoding}-{version}"
        for case, body, user in (
            ("archive", archive_document(f"BX-{tag}", version=version), "archivist1"),
            ("archive-fault", archive_document(f"BX-{tag}", org="ORG2", version=version), "archivist1"),
            ("outcome", submit_result(request_id="7001", version=version), "archivist1"),
            ("outcome-fault", submit_result(request_id="7002", version=version), "archivist1"),
            ("trigger", trigger_sync("<g:orgCode>ORG1</g:orgCode>", version=version), "operator1"),
            ("trigger-fault", trigger_sync("<g:orgCode>ORG2</g:orgCode>", version=version), "operator1"),
        ):
            answer = assert_write_same_as_spyne(encoded, spyne_calls, body, user=user, version=version,
                                                correlation_id=f"{case}-{tag}")
            assert answer.body.startswith(f"<?xml version='1.0' encoding='{response_encoding}'?>".encode())


def _large_archive_document(source_id: str) -> bytes:
    """An ArchiveDocument just under ``WRITE_LIMIT``: two files of random bytes in base64."""
    frame = len(archive_document(source_id, files=(("a.bin", "application/octet-stream", b""),) * 2))
    raw = (WRITE_LIMIT - frame - 64) * 3 // 4 // 2
    files = tuple((f"{n}.bin", "application/octet-stream", os.urandom(raw)) for n in (1, 2))
    body = archive_document(source_id, files=files)
    assert WRITE_LIMIT - 100 < len(body) <= WRITE_LIMIT
    return body


def _peak_python_memory(app, body: bytes, correlation_id: str) -> tuple[Answer, int]:
    tracemalloc.start()
    try:
        answer = call(app, body, user="archivist1", correlation_id=correlation_id)
        return answer, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_large_archive_document_equals_spyne_and_copies_the_body_less(wr, spyne_calls):
    body = _large_archive_document("BX-LARGE")
    mine, mine_peak = _peak_python_memory(wr["app"], body, "direct-large")
    reference, reference_peak = _peak_python_memory(wr["spyne"], body, "spyne-large")
    assert mine.status == reference.status == "200 OK" and spyne_calls() == 0
    assert mine.body == reference.body.replace(b"spyne-", b"direct-")
    assert audit_records(wr["store"], "direct-large") == audit_records(wr["spyne_store"], "spyne-large")
    # The request is parsed once, at intake, its charset checked piece by piece; spyne
    # reads the body again and parses a second tree.  What Python holds beyond the body
    # at the peak: a file's base64 text and the files' bytes (~1.25 × the body here).
    assert mine_peak < reference_peak
    assert mine_peak < 1.5 * len(body), (mine_peak, len(body))
