"""Units behind the gateway: the access table, credentials, roles, faults, input checks,
archival codes, idempotent archiving under concurrency, password hashing."""

from __future__ import annotations

import base64
import copy
import datetime as dt
import threading
from decimal import Decimal

import pytest
from lxml import etree

from archive_oa.errors import (
    AuthenticationFailed,
    IntegrityError,
    Issue,
    NotFound,
    Unavailable,
    ValidationFailed,
)
from archive_oa.gateway.auth import (
    OPERATION_ACCESS,
    PASSWORD_DIGEST,
    WSSE_NS,
    authorize,
    credentials_from,
)
from archive_oa.gateway.faults import INTERNAL_MESSAGE, fault_envelope, fault_from_error
from archive_oa.gateway.mapping import plain
from archive_oa.gateway.service import GatewayService
from archive_oa.gateway.types import NAMESPACE
from archive_oa.devtools.wsdl_file import checked_in_path
from archive_oa.services.archive import (
    ArchiveDocumentCommand,
    ArchiveService,
    NewFile,
    archival_rule,
    check_document,
)
from archive_oa.services.users import Principal, UserService, hash_password, verify_password
from archive_oa.settings import load_settings
from archive_oa.store.engine import open_store

G = f"{{{NAMESPACE}}}"


# --- one access table for every operation ---------------------------------------------------


def test_every_operation_declares_its_role_and_nothing_else_is_declared():
    operations = set(GatewayService.public_methods)
    assert operations == set(OPERATION_ACCESS)
    assert OPERATION_ACCESS["Ping"].role is None
    assert {name for name, access in OPERATION_ACCESS.items() if access.role is None} == {"Ping"}


@pytest.mark.parametrize(
    "held, required, allowed",
    [
        ({"viewer"}, "viewer", True),
        ({"viewer"}, "archivist", False),
        ({"archivist"}, "viewer", True),
        ({"operator"}, "archivist", True),
        ({"operator"}, "admin", False),
        ({"admin"}, "operator", True),
        ({"auditor"}, "viewer", False),
        ({"admin"}, "auditor", False),
        ({"auditor", "viewer"}, "viewer", True),
    ],
)
def test_role_ranks(held, required, allowed):
    assert Principal("u", frozenset(held), None).has_role(required) is allowed


def test_authorize_checks_the_declared_organisation_argument():
    scoped = Principal("op", frozenset({"operator"}), frozenset({"ORG1"}))
    authorize("ReconcilePeriod", scoped, {"orgCode": "ORG1", "period": "2024-03"})
    with pytest.raises(Exception) as denied:
        authorize("ReconcilePeriod", scoped, {"orgCode": "ORG2", "period": "2024-03"})
    assert denied.value.code == "AccessDenied" and "ORG2" in str(denied.value)


# --- credentials ------------------------------------------------------------------------------


def _basic(text: bytes) -> dict:
    return {"HTTP_AUTHORIZATION": "Basic " + base64.b64encode(text).decode()}


def _wsse(password_type: str | None = None) -> list:
    attr = f' Type="{password_type}"' if password_type else ""
    return [etree.fromstring(
        f'<wsse:Security xmlns:wsse="{WSSE_NS}"><wsse:UsernameToken><wsse:Username>王五</wsse:Username>'
        f"<wsse:Password{attr}>秘密</wsse:Password><wsse:Nonce>bm9uY2U=</wsse:Nonce></wsse:UsernameToken>"
        "</wsse:Security>"
    )]


def test_basic_credentials_in_utf8_and_gbk():
    assert credentials_from(_basic("王五:秘密".encode()), None).password == "秘密"
    gbk = credentials_from(_basic("王五:秘密".encode("gbk")), None)
    assert (gbk.username, gbk.password, gbk.scheme) == ("王五", "秘密", "basic")
    assert credentials_from({}, None) is None
    with pytest.raises(AuthenticationFailed):
        credentials_from({"HTTP_AUTHORIZATION": "Basic !!!"}, None)
    with pytest.raises(AuthenticationFailed):
        credentials_from(_basic(b"no-colon"), None)


def test_username_token_wins_over_basic_and_names_its_password_type():
    token = credentials_from(_basic(b"other:x"), _wsse())
    assert (token.username, token.password, token.scheme, token.nonce) == ("王五", "秘密", "wsse-text", "bm9uY2U=")
    digest = credentials_from({}, _wsse(PASSWORD_DIGEST))
    assert digest.scheme == "wsse-digest"  # checked end to end in test_auth.py
    assert "秘密" not in repr(digest)


# --- faults -------------------------------------------------------------------------------------


def test_validation_fault_carries_code_message_correlation_and_issues():
    error = ValidationFailed("bad", [Issue("/QueryVouchers/pageSize", "range", "use 1-500", line=3)])
    fault = fault_from_error(error, "cid-1")
    assert fault.faultcode == "Client"
    doc = etree.fromstring(fault_envelope(fault))
    detail = doc.find(f".//detail/{G}GatewayFault")
    assert detail.findtext(f"{G}code") == "Validation"
    assert detail.findtext(f"{G}correlationId") == "cid-1"
    issue = detail.find(f"{G}issues/{G}issue")
    assert (issue.findtext(f"{G}place"), issue.findtext(f"{G}rule"), issue.findtext(f"{G}line")) == (
        "/QueryVouchers/pageSize", "range", "3")


def test_fault_detail_matches_the_type_declared_in_the_wsdl():
    wsdl = etree.fromstring(checked_in_path().read_bytes())
    embedded = wsdl.find(".//{http://www.w3.org/2001/XMLSchema}schema")
    # standalone, the schema needs the in-scope prefixes its QName values (tns:…) use
    standalone = etree.Element(embedded.tag, dict(embedded.attrib), nsmap=embedded.nsmap)
    standalone.extend(copy.deepcopy(child) for child in embedded)
    schema = etree.XMLSchema(standalone)
    error = ValidationFailed("bad", [Issue("page", "range", "use 1 or more", line=2), Issue("pageSize", "r", "m")])
    detail = etree.fromstring(fault_envelope(fault_from_error(error, "cid"))).find(f".//detail/{G}GatewayFault")
    assert schema.validate(detail), schema.error_log
    assert 'name="GatewayFault" message="tns:GatewayFault"' in checked_in_path().read_text(encoding="utf-8")


def test_exchange_rates_leave_without_exponent():
    assert str(plain(Decimal("1E+1"))) == "10" and str(plain(Decimal("7.1234"))) == "7.1234"


@pytest.mark.parametrize(
    "error, code, faultcode",
    [
        (NotFound("voucher x not found"), "NotFound", "Client"),
        (Unavailable("db at /var/lib/secret is down"), "Unavailable", "Server"),
        (IntegrityError("blob /data/blobs/ab/cd mismatch"), "Internal", "Server"),
        (KeyError("/home/app/secret.py"), "Internal", "Server"),
    ],
)
def test_error_mapping_hides_internals(error, code, faultcode):
    fault = fault_from_error(error, "cid")
    assert (fault.gateway_code, fault.faultcode) == (code, faultcode)
    if faultcode == "Server":
        assert "/" not in fault.gateway_message.replace("n/a", "")
    if code == "Internal":
        assert fault.gateway_message == INTERNAL_MESSAGE


# --- input checks and archival codes ---------------------------------------------------------


def _cmd(**changes) -> ArchiveDocumentCommand:
    values = dict(source_system="ekp", source_id="FK-1", doc_type="PAYMENT", org_code="ORG1", period="2024-03",
                  title="付款单", amount=Decimal("10.00"))
    values.update(changes)
    return ArchiveDocumentCommand(**values)


@pytest.mark.parametrize(
    "changes, place",
    [
        (dict(amount=Decimal("12.345")), "amount"),
        (dict(amount=Decimal("NaN")), "amount"),
        (dict(amount=Decimal("Infinity")), "amount"),
        (dict(amount=Decimal("-1")), "amount"),
        (dict(amount=Decimal("1E+19")), "amount"),
        (dict(period="2024-3"), "period"),
        (dict(doc_type="INVOICE"), "docType"),
        (dict(title="  "), "title"),
        (dict(attachments=(NewFile("", "application/pdf", b"x"),)), "attachments/attachment[1]/fileName"),
        (dict(attachments=(NewFile("a.pdf", "application/pdf", b""),)), "attachments/attachment[1]/content"),
    ],
)
def test_document_checks_name_the_field(changes, place):
    with pytest.raises(ValidationFailed) as invalid:
        check_document(_cmd(**changes))
    assert place in [issue.place for issue in invalid.value.issues]


def test_trailing_zeros_are_not_extra_decimals():
    check_document(_cmd(amount=Decimal("1.230")))


def test_archival_rules():
    assert (archival_rule(_cmd(doc_type="EXPENSE_CLAIM")).category_code,
            archival_rule(_cmd(doc_type="EXPENSE_CLAIM")).retention.value) == ("PZ", "Y30")
    assert archival_rule(_cmd(doc_type="REPORT")).retention.value == "Y10"
    annual = archival_rule(_cmd(doc_type="REPORT", fields=(("reportKind", "年度"),)))
    assert (annual.category, annual.retention.value) == ("财务会计报告", "PERMANENT")


# --- the archive service on a real store ---------------------------------------------------


@pytest.fixture
def store(tmp_path):
    store = open_store(load_settings(data_dir=tmp_path / "data", env={}))
    yield store
    store.dispose()


def test_concurrent_archive_of_one_source_stores_one_document(store):
    service = ArchiveService(store)
    cmd = _cmd(attachments=(NewFile("回单.pdf", "application/pdf", b"receipt"),))
    results, errors = [], []
    barrier = threading.Barrier(6)

    def archive():
        barrier.wait()
        try:
            results.append(service.archive_document(cmd, frozenset({"ORG1"})))
        except Exception as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=archive) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len({(r.archive_id, r.archival_code) for r in results}) == 1
    assert sorted(r.duplicate for r in results) == [False] + [True] * 5
    assert results[0].archival_code == "ORG1-2024-PZ-Y30-0001"
    second = service.archive_document(_cmd(source_id="FK-2"), None)
    assert second.archival_code == "ORG1-2024-PZ-Y30-0002"
    content = service.get_attachment(f"{results[0].archive_id}-1", frozenset({"ORG1"}))
    assert content.content == b"receipt" and content.meta.file_name == "回单.pdf"
    with pytest.raises(NotFound):
        service.get_attachment(f"{results[0].archive_id}-1", frozenset({"ORG2"}))


def test_archive_outside_scope_is_denied(store):
    with pytest.raises(Exception) as denied:
        ArchiveService(store).archive_document(_cmd(org_code="ORG9"), frozenset({"ORG1"}))
    assert denied.value.code == "AccessDenied"


# --- users ------------------------------------------------------------------------------------


def test_password_hash_format_and_verification():
    encoded = hash_password("口令-1")
    assert encoded.startswith("scrypt$16384$8$1$") and "口令" not in encoded
    assert verify_password("口令-1", encoded)
    assert not verify_password("口令-2", encoded)
    assert not verify_password("x", "md5$abc")


def test_user_service(store):
    users = UserService(store, clock=lambda: dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc))
    users.add_user("alice", "s3cret-of-alice", {"archivist"}, {"ORG1", "ORG2"})
    principal = users.authenticate("alice", "s3cret-of-alice")
    assert principal == Principal("alice", frozenset({"archivist"}), frozenset({"ORG1", "ORG2"}))
    for name, secret in (("alice", "wrong"), ("nobody", "s3cret-of-alice")):
        with pytest.raises(AuthenticationFailed):
            users.authenticate(name, secret)
    users.add_user("alice", "s3cret-of-alice", {"archivist"}, None, disabled=True)
    with pytest.raises(AuthenticationFailed):
        users.authenticate("alice", "s3cret-of-alice")
    with pytest.raises(ValidationFailed) as invalid:
        users.add_user("bob", "pw-of-bob-2026", {"superuser"})
    assert [i.place for i in invalid.value.issues] == ["roles"]


def test_basic_credentials_in_the_url_safe_alphabet_are_read_like_standard_ones():
    """suds-community encodes HTTP Basic with base64's URL-safe alphabet ('-', '_')."""
    import base64

    from archive_oa.gateway.auth import _from_basic

    raw = b"u>>?:p>>?"  # encodes to '+' and '/' in the standard alphabet
    standard = _from_basic("Basic " + base64.b64encode(raw).decode())
    url_safe = _from_basic("Basic " + base64.urlsafe_b64encode(raw).decode())
    assert (standard.username, standard.password) == (url_safe.username, url_safe.password) == ("u>>?", "p>>?")


@pytest.mark.parametrize("name", ["x\x00", "a\tb", "\x7fadmin", "line\nbreak"])
def test_basic_user_names_with_control_characters_are_refused(name):
    from archive_oa.gateway.auth import _from_basic

    header = "Basic " + base64.b64encode(f"{name}:secret".encode()).decode()
    with pytest.raises(AuthenticationFailed, match="control characters"):
        _from_basic(header)


def test_audit_text_never_carries_nul():
    from archive_oa.services import audit

    assert audit._clip("x\x00y", "actor") == "x\\x00y"
    assert "\x00" not in audit._targets_json(["id=\x00"])


# --- stopping the server ---------------------------------------------------------------------


def test_stop_survives_the_loop_running_its_close_before_our_own_pull():
    """A worker's earlier pull can wake the loop, which then runs stop's close thunk before
    stop's own byte reaches the trigger pipe; the pipe must still be open for that byte."""
    from archive_oa.gateway.server import start_gateway

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    handle = start_gateway(app, "127.0.0.1", 0, threads=1)
    trigger = handle._server.trigger
    own_pull = trigger._physical_pull

    def pull_late():
        own_pull()  # the "worker's" byte: the loop wakes and runs the queued close
        handle._thread.join(10)
        assert not handle._thread.is_alive()
        own_pull()  # stop's own byte, after the loop has gone

    trigger._physical_pull = pull_late
    handle.stop()
    assert not handle._thread.is_alive()
    assert trigger._closed and not trigger._fds


# --- spyne's forced garbage collection ---------------------------------------------------------


def test_spyne_forces_no_gc_collect_after_a_request(tmp_path, monkeypatch):
    """compat turns off spyne's gc.collect() after requests (once a second it stopped every thread)."""
    import gc
    import io

    import spyne.const
    import spyne.context

    from archive_oa.gateway.app import build_gateway_services, make_gateway_app

    assert spyne.const.MIN_GC_INTERVAL == float("inf")
    collections = []
    monkeypatch.setattr(gc, "collect", lambda *args: collections.append(args) or 0)
    monkeypatch.setattr(spyne.context, "_LAST_GC_RUN", 0.0)  # long ago: spyne's 1 s would have passed
    settings = load_settings(data_dir=tmp_path / "data", env={})
    store = open_store(settings)
    try:
        app = make_gateway_app(settings, build_gateway_services(settings, store))
        body = (f'<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body>'
                f'<Ping xmlns="{NAMESPACE}"/></s:Body></s:Envelope>').encode()
        environ = {
            "REQUEST_METHOD": "POST", "PATH_INFO": "/soap/archive", "QUERY_STRING": "",
            "CONTENT_TYPE": "text/xml; charset=utf-8", "CONTENT_LENGTH": str(len(body)),
            "HTTP_SOAPACTION": '"Ping"', "SERVER_NAME": "localhost", "SERVER_PORT": "8080",
            "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "127.0.0.1", "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(body), "wsgi.errors": io.StringIO(),
        }
        statuses = []
        answer = b"".join(app(environ, lambda status, headers, exc_info=None: statuses.append(status)))
    finally:
        store.dispose()
    assert statuses[0].startswith("200") and b"PingResponse" in answer
    assert collections == []
