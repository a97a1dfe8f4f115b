"""SOAP 1.2 at /soap12/archive: zeep's Soap12Binding, chosen from the served WSDL, calls
every operation over loopback HTTP against the demo's data, with the same users, roles
and faults as SOAP 1.1; and the SOAP 1.1 WSDL says nothing of SOAP 1.2."""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import os
import re
import shutil
import subprocess
from decimal import Decimal

import pytest
import requests
import zeep
from lxml import etree
from requests.auth import HTTPBasicAuth
from zeep.exceptions import Fault
from zeep.plugins import HistoryPlugin
from zeep.transports import Transport
from zeep.wsdl.bindings.soap import Soap11Binding, Soap12Binding
from zeep.wsse.username import UsernameToken

from archive_oa import safexml
from archive_oa.devtools.wsdl_file import FILE_NAME, SOAP12_FILE_NAME, checked_in_path, normalise_address
from archive_oa.samples import samples_dir
from archive_oa.store.vouchers import lookup_request
from archive_oa.transforms.pipeline import Transforms

import factories
from demo_gateway import running_demo

ENV12 = "http://www.w3.org/2003/05/soap-envelope"
ENV11 = "http://schemas.xmlsoap.org/soap/envelope/"
GW = "urn:archive-oa:gateway:1"
#: every namespace whose mere declaration suggests SOAP 1.2 to a client generator
SOAP12_MARKERS = (
    b"http://schemas.xmlsoap.org/wsdl/soap12/",
    b"http://www.w3.org/2003/05/soap-envelope",
    b"http://www.w3.org/2003/05/soap-encoding",
    b"application/soap+xml",
)
VOUCHER = "HD01-202609-0001"
ATTACHMENT = "HD01-202609-0027-A1"


@pytest.fixture(scope="module")
def demo():
    with running_demo(deliver_first_batch=True) as running:
        yield running


@pytest.fixture(scope="module")
def wsdl12(demo):
    return demo.gateway.base_url + "/soap12/archive?wsdl"


def token_client(wsdl, user, password=None, **kwargs):
    return zeep.Client(wsdl, wsse=UsernameToken(user, password or user), **kwargs)


def basic_client(wsdl, user):
    session = requests.Session()
    session.auth = HTTPBasicAuth(user, user)
    return zeep.Client(wsdl, transport=Transport(session=session))


@pytest.fixture(params=["token", "basic"])
def as_user(request, wsdl12):
    make = token_client if request.param == "token" else basic_client
    return lambda user: make(wsdl12, user).service


def gateway_code(fault: Fault) -> str:
    return fault.detail.find(f"{{{GW}}}GatewayFault/{{{GW}}}code").text


# --- the contract ---------------------------------------------------------------------------


@pytest.mark.slow
def test_zeep_picks_the_soap12_binding_from_the_wsdl(demo, wsdl12):
    assert isinstance(zeep.Client(wsdl12).service._binding, Soap12Binding)
    assert isinstance(zeep.Client(demo.gateway.wsdl_url).service._binding, Soap11Binding)


def test_served_soap12_wsdl_equals_the_checked_in_file(demo, wsdl12):
    served = requests.get(wsdl12, timeout=10)
    assert served.status_code == 200
    location = demo.gateway.base_url + "/soap12/archive"
    assert f'location="{location}"'.encode() in served.content
    normal = "http://127.0.0.1:8080/soap12/archive"
    assert normalise_address(served.content, normal) == normalise_address(
        checked_in_path(SOAP12_FILE_NAME).read_bytes(), normal
    ), "wsdl/archive-gateway-soap12.wsdl drifted from the service: run python -m archive_oa.devtools.wsdl_file"


def test_soap12_wsdl_has_only_a_soap12_binding():
    root = etree.fromstring(checked_in_path(SOAP12_FILE_NAME).read_bytes())
    ns = {"w": "http://schemas.xmlsoap.org/wsdl/", "s12": "http://schemas.xmlsoap.org/wsdl/soap12/"}
    (binding,) = root.findall("w:binding", ns)
    assert binding.get("name") == "ArchiveGatewaySoap12"
    assert binding.find("s12:binding", ns).get("transport") == "http://schemas.xmlsoap.org/soap/http"
    assert root.find("w:service/w:port/s12:address", ns).get("location").endswith("/soap12/archive")
    assert b"http://schemas.xmlsoap.org/wsdl/soap/" not in etree.tostring(root)
    # the same operations as SOAP 1.1, each declaring the fault
    operations = binding.findall("w:operation", ns)
    assert len(operations) == 10 and all(op.find("w:fault", ns) is not None for op in operations)


@pytest.mark.parametrize("source", ["checked-in", "served"])
def test_soap11_wsdl_declares_nothing_of_soap12(demo, source):
    if source == "served":
        document = requests.get(demo.gateway.wsdl_url, timeout=10).content
    else:
        document = checked_in_path().read_bytes()
    for marker in SOAP12_MARKERS:
        assert marker not in document, f"the SOAP 1.1 WSDL mentions {marker.decode()}"
    root = etree.fromstring(document)
    declared = {uri for element in root.iter() for uri in element.nsmap.values()}
    assert "http://schemas.xmlsoap.org/wsdl/soap/" in declared
    assert not any("2003/05" in uri or "soap12" in uri for uri in declared)


# --- the shape that keeps generated Java and PHP code usable (docs/wsdl-shape.md) --------------

XS = "http://www.w3.org/2001/XMLSchema"
WSDL = "http://schemas.xmlsoap.org/wsdl/"


@pytest.mark.parametrize("name", [FILE_NAME, SOAP12_FILE_NAME])
def test_wsdl_shape_for_code_generators(name):
    root = etree.fromstring(checked_in_path(name).read_bytes())
    (schema,) = root.iter(f"{{{XS}}}schema")  # one schema, one namespace, no imports
    assert root.get("targetNamespace") == schema.get("targetNamespace") == GW
    assert schema.get("elementFormDefault") == "qualified"
    assert not list(schema.iter(f"{{{XS}}}import")) and not list(schema.iter(f"{{{XS}}}include"))
    for construct in ("any", "choice", "attribute", "anyAttribute", "union", "list", "extension"):
        assert not list(schema.iter(f"{{{XS}}}{construct}")), f"xs:{construct} in {name}"
    elements = list(schema.iter(f"{{{XS}}}element"))
    assert not [e.get("name") for e in elements if e.get("nillable")], "optional means absent, never nil"
    parts = {p.get("element").partition(":")[2] for p in root.iter(f"{{{WSDL}}}part")}
    assert {e.get("name") for e in schema.findall(f"{{{XS}}}element")} == parts
    for array in schema.findall(f"{{{XS}}}complexType"):
        if array.get("name").endswith("Array"):
            (item,) = array.find(f"{{{XS}}}sequence")
            assert (item.get("minOccurs"), item.get("maxOccurs")) == ("0", "unbounded"), array.get("name")


@pytest.mark.parametrize("name", [FILE_NAME, SOAP12_FILE_NAME])
def test_every_operation_is_documented_in_english_and_chinese(name):
    root = etree.fromstring(checked_in_path(name).read_bytes())
    operations = root.findall(f"{{{WSDL}}}portType/{{{WSDL}}}operation")
    assert len(operations) == 10
    for operation in operations:
        text = operation.findtext(f"{{{WSDL}}}documentation") or ""
        english, _, chinese = text.rpartition(" / ")
        assert re.search(r"[A-Za-z]{3,} [a-z]{2,}", english), operation.get("name")
        assert re.search(r"[\u4e00-\u9fff]{2,}", chinese), operation.get("name")
        assert "\n" not in text and "  " not in text


def test_served_wsdl_documents_every_operation(demo):
    served = etree.fromstring(requests.get(demo.gateway.wsdl_url, timeout=10).content)
    documented = [op.findtext(f"{{{WSDL}}}documentation") for op in served.iter(f"{{{WSDL}}}operation")
                  if op.getparent().tag == f"{{{WSDL}}}portType"]
    assert len(documented) == 10 and all(documented)


def test_a_client_sending_xsi_nil_for_an_optional_element_is_accepted(demo):
    """The published WSDL says optional means absent, yet legacy stacks that send
    xsi:nil for a null are still understood (spyne validates against its own schema)."""
    body = (f'<s:Envelope xmlns:s="{ENV11}" xmlns:g="{GW}" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
            '<s:Body><g:QueryVouchers><g:orgCode xsi:nil="true"/><g:keyword xsi:nil="true"/>'
            "<g:page>1</g:page><g:pageSize>2</g:pageSize></g:QueryVouchers></s:Body></s:Envelope>")
    answer = requests.post(demo.gateway.url, data=body.encode(), headers={"Content-Type": "text/xml"},
                           auth=("demo-viewer", "demo-viewer"), timeout=10)
    assert answer.status_code == 200, answer.text
    assert int(etree.fromstring(answer.content).findtext(f".//{{{GW}}}total")) > 2


WRAPPERLESS = """<jaxws:bindings xmlns:jaxws="http://java.sun.com/xml/ns/jaxws">
  <jaxws:enableWrapperStyle>false</jaxws:enableWrapperStyle>
</jaxws:bindings>"""


@pytest.mark.slow
@pytest.mark.parametrize("wrapper_style", [True, False])
def test_wsimport_generates_plain_java_without_binding_files(tmp_path, wrapper_style):
    """wsimport (JAX-WS RI) reads the WSDL as published: no JAXBElement, no ObjectFactory
    clash, the documentation in the Javadoc; docs/wsdl-shape.md's binding turns wrapper
    style off so each operation takes and returns one bean."""
    if shutil.which("wsimport") is None:
        reason = "wsimport is not installed (Debian: jaxws, with a JDK)"
        (pytest.fail if os.environ.get("CI", "").lower() == "true" else pytest.skip)(reason)
    command = ["wsimport", "-Xnocompile", "-p", "example.archiveoa", "-d", str(tmp_path), "-s", str(tmp_path)]
    if not wrapper_style:
        (tmp_path / "bindings.xml").write_text(WRAPPERLESS, encoding="utf-8")
        command += ["-b", str(tmp_path / "bindings.xml")]
    done = subprocess.run([*command, str(checked_in_path())], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    sources = {p.name: p.read_text(encoding="utf-8") for p in (tmp_path / "example" / "archiveoa").glob("*.java")}
    beans = [source for name, source in sources.items() if name != "ObjectFactory.java"]
    assert not [b for b in beans if "JAXBElement" in b], "optional elements must map to plain properties"
    gateway = sources["ArchiveGateway.java"]
    assert "连通性检查" in gateway and "Liveness check" in gateway
    if wrapper_style:
        assert "public Voucher getVoucher(" in gateway
    else:
        assert "public QueryVouchersResponse queryVouchers(" in gateway
    assert "GatewayFault_Exception.java" in sources  # the fault, with getFaultInfo().getCode()


# --- every operation, with UsernameToken and with Basic ------------------------------------


def test_ping_needs_no_user(wsdl12):
    result = zeep.Client(wsdl12).service.Ping()
    assert result.version and result.serverTime.tzinfo is not None


def test_query_and_get_voucher_keep_chinese_text_and_exact_amounts(as_user):
    page = as_user("demo-viewer").QueryVouchers(orgCode="HD01", periodFrom="2026-09", periodTo="2026-09",
                                                page=1, pageSize=5)
    assert page.total > 5 and [v.voucherId for v in page["items"]["voucher"]][0] == VOUCHER
    voucher = as_user("demo-viewer").GetVoucher(voucherId=VOUCHER)
    assert voucher.orgName == "华东制造"
    assert sum(e.debit for e in voucher.entries.entry) == voucher.totalAmount
    assert isinstance(voucher.totalAmount, Decimal)
    summary = page["items"]["voucher"][0]
    assert summary.totalAmount == voucher.totalAmount and summary.summary == voucher.summary


def test_get_voucher_document_is_valid(as_user):
    text = as_user("demo-viewer").GetVoucherDocument(voucherId=VOUCHER)
    tree = safexml.parse_text(text)
    Transforms.from_settings().validate_voucher(tree)


def test_get_attachment_bytes_equal_the_sample_file(as_user):
    result = as_user("demo-viewer").GetAttachment(attachmentId=ATTACHMENT)
    original = (samples_dir() / "attachments" / result.fileName).read_bytes()
    assert result.content == original
    assert result.sha256 == hashlib.sha256(original).hexdigest() and result.size == len(original)


def test_archive_document_round_trips_chinese_text_and_an_attachment(as_user, request):
    source_id = f"SOAP12-BX-{request.node.callspec.id}"
    call = dict(
        sourceSystem="泛微OA", sourceId=source_id, docType="EXPENSE_CLAIM", orgCode="HD01", period="2026-10",
        title="差旅费报销单（上海）", amount=Decimal("1280.50"),
        fields={"field": [{"name": "申请人", "value": "李四"}]},
        attachments={"attachment": [{"fileName": "机票行程单.pdf", "mimeType": "application/pdf",
                                     "content": "行程单".encode("utf-8")}]},
    )
    first = as_user("demo-archivist").ArchiveDocument(**call)
    assert first.duplicate is False and first.archivalCode.startswith("HD01-2026-")
    again = as_user("demo-archivist").ArchiveDocument(**call)
    assert (again.archiveId, again.duplicate) == (first.archiveId, True)
    stored = as_user("demo-viewer").GetAttachment(attachmentId=f"{first.archiveId}-1")
    assert (stored.fileName, stored.content) == ("机票行程单.pdf", "行程单".encode("utf-8"))


def test_submit_workflow_result_and_its_repeat(demo, as_user, request):
    with demo.adapter.store.transaction() as conn:  # the simulator numbers requests from 1
        voucher_id = lookup_request(conn, oa_request_id="1").voucher_id
    finished = dt.datetime(2026, 10, 15, 9, 30, tzinfo=dt.timezone(dt.timedelta(hours=8)))
    finished += dt.timedelta(minutes=1 if request.node.callspec.id == "basic" else 0)
    call = dict(oaRequestId="1", state="APPROVED", finishedAt=finished,
                approvals={"approval": [{"step": 1, "approver": "王芳(财务经理)", "action": "APPROVE",
                                         "comment": "同意", "time": finished}]})
    first = as_user("demo-archivist").SubmitWorkflowResult(**call)
    assert (first.accepted, first.voucherId, first.duplicate) == (True, voucher_id, False)
    assert as_user("demo-archivist").SubmitWorkflowResult(**call).duplicate is True


@pytest.mark.slow
def test_sync_operations(as_user):
    triggered = as_user("demo-operator").TriggerSync(voucherIds={"id": [VOUCHER]})
    assert triggered.jobId
    status = as_user("demo-operator").GetSyncStatus(jobId=triggered.jobId)
    assert status.jobId == triggered.jobId and status.state in ("RUNNING", "FINISHED")
    report = as_user("demo-operator").ReconcilePeriod(orgCode="HN02", period="2026-10")
    assert (report.orgCode, report.period) == ("HN02", "2026-10")


PHP_SOAP12 = r"""<?php
// PHP's SoapClient, SOAP 1.2, HTTP Basic: read a voucher, an attachment and a fault's code.
$client = new SoapClient($argv[1], [
    'cache_wsdl' => WSDL_CACHE_NONE, 'soap_version' => SOAP_1_2, 'trace' => true,
    'login' => 'demo-viewer', 'password' => 'demo-viewer', 'features' => SOAP_SINGLE_ELEMENT_ARRAYS,
]);
$voucher = $client->GetVoucher(['voucherId' => $argv[2]])->voucher;
$file = $client->GetAttachment(['attachmentId' => $argv[3]]);
try {
    $client->GetVoucher(['voucherId' => 'no-such-voucher']);
    $fault = null;
} catch (SoapFault $f) {
    $fault = ['code' => $f->faultcode, 'detail' => $f->detail->GatewayFault->code];
}
echo json_encode([
    'orgName' => $voucher->orgName, 'totalAmount' => $voucher->totalAmount,
    'entries' => count($voucher->entries->entry), 'sha256' => hash('sha256', $file->content),
    'contentType' => $client->__getLastRequestHeaders(), 'fault' => $fault,
], JSON_UNESCAPED_UNICODE);
"""


def test_php_soapclient_speaks_soap12(demo, wsdl12, tmp_path):
    """One client outside Python: PHP's SoapClient with soap_version SOAP_1_2."""
    php = shutil.which("php")
    has_soap = php and "soap" in subprocess.run([php, "-m"], capture_output=True, text=True).stdout.split()
    if not has_soap:
        reason = "PHP with ext-soap is not installed (Debian: php-cli php-soap)"
        (pytest.fail if os.environ.get("CI", "").lower() == "true" else pytest.skip)(reason)
    script = tmp_path / "soap12.php"
    script.write_text(PHP_SOAP12, encoding="utf-8")
    done = subprocess.run([php, str(script), wsdl12, VOUCHER, ATTACHMENT], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    seen = json.loads(done.stdout)
    expected = zeep.Client(wsdl12, wsse=UsernameToken("demo-viewer", "demo-viewer")).service
    voucher = expected.GetVoucher(voucherId=VOUCHER)
    original = expected.GetAttachment(attachmentId=ATTACHMENT)
    assert seen["orgName"] == "华东制造" and seen["totalAmount"] == str(voucher.totalAmount)  # exact text
    assert seen["entries"] == len(voucher.entries.entry)
    assert seen["sha256"] == hashlib.sha256(original.content).hexdigest()
    assert "application/soap+xml" in seen["contentType"]
    assert seen["fault"]["code"].endswith("Sender") and seen["fault"]["detail"] == "NotFound"


# --- the wire: content types, faults ----------------------------------------------------------


def test_requests_and_answers_are_application_soap_xml(wsdl12):
    history = HistoryPlugin()
    client = token_client(wsdl12, "demo-viewer", plugins=[history])
    client.service.GetVoucher(voucherId=VOUCHER)
    sent = history.last_sent["http_headers"]["Content-Type"]
    assert sent.startswith("application/soap+xml") and 'action="GetVoucher"' in sent
    assert history.last_sent["envelope"].tag == f"{{{ENV12}}}Envelope"
    assert history.last_received["envelope"].tag == f"{{{ENV12}}}Envelope"
    assert history.last_received["http_headers"]["Content-Type"] == "application/soap+xml; charset=UTF-8"


@pytest.mark.parametrize(
    "user, password, operation, kwargs, code",
    [
        (None, None, "GetVoucher", {"voucherId": VOUCHER}, "Authentication"),
        ("demo-viewer", "wrong", "GetVoucher", {"voucherId": VOUCHER}, "Authentication"),
        ("demo-viewer", None, "TriggerSync", {"orgCode": "HD01"}, "AccessDenied"),
        ("demo-archivist", None, "ReconcilePeriod", {"orgCode": "HD01", "period": "2026-09"}, "AccessDenied"),
        ("demo-viewer", None, "GetVoucher", {"voucherId": "不存在"}, "NotFound"),
        ("demo-viewer", None, "QueryVouchers", {"page": 1, "pageSize": 501}, "Validation"),
    ],
)
def test_sender_faults_carry_the_stable_code(wsdl12, user, password, operation, kwargs, code):
    client = token_client(wsdl12, user, password) if user else zeep.Client(wsdl12)
    with pytest.raises(Fault) as caught:
        getattr(client.service, operation)(**kwargs)
    fault = caught.value
    assert fault.code.endswith(":Sender")
    assert [q.localname for q in fault.subcodes] == [code] and fault.subcodes[0].namespace == GW
    assert gateway_code(fault) == code
    assert fault.message.startswith(f"{code}: ")


def post12(demo, body: bytes, content_type="application/soap+xml; charset=utf-8", auth=("demo-viewer",) * 2):
    return requests.post(demo.gateway.base_url + "/soap12/archive", data=body,
                         headers={"Content-Type": content_type}, auth=auth, timeout=10)


envelope12 = functools.partial(factories.envelope, header_xml=None, namespace=ENV12, prefix="env")


def fault_of(response, status: int, code: str) -> etree._Element:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/soap+xml")
    fault = etree.fromstring(response.content).find(f"{{{ENV12}}}Body/{{{ENV12}}}Fault")
    detail = fault.find(f"{{{ENV12}}}Detail/{{{GW}}}GatewayFault")
    assert detail.findtext(f"{{{GW}}}code") == code
    assert detail.findtext(f"{{{GW}}}correlationId") == response.headers["X-Correlation-Id"]
    assert fault.find(f"{{{ENV12}}}Reason/{{{ENV12}}}Text").text.startswith(code)
    return fault


def test_schema_errors_are_sender_faults_with_every_place(demo):
    body = envelope12("<g:QueryVouchers><g:periodFrom>2026-13</g:periodFrom><g:page>x</g:page>"
                      "<g:pageSize>10</g:pageSize></g:QueryVouchers>")
    fault = fault_of(post12(demo, body.encode()), 400, "Validation")
    value = fault.find(f"{{{ENV12}}}Code/{{{ENV12}}}Value")
    prefix, _, local = value.text.partition(":")
    assert value.nsmap[prefix] == ENV12 and local == "Sender"
    issues = fault.findall(f".//{{{GW}}}issue")
    assert len(issues) >= 2


@pytest.mark.parametrize(
    "body_xml",
    ["<g:Ping>\n  </g:Ping>", f"<g:GetVoucher>\n  <g:voucherId>{VOUCHER}</g:voucherId>\n</g:GetVoucher>"],
    ids=["empty-operation", "indented-get-voucher"],
)
def test_indentation_is_not_content(demo, body_xml):
    response = post12(demo, envelope12(body_xml).encode())
    assert response.status_code == 200, response.text
    assert etree.fromstring(response.content).find(f"{{{ENV12}}}Body/*").tag.endswith("Response")


def test_a_missing_required_element_is_named_once_and_first(demo):
    response = post12(demo, envelope12("<g:QueryVouchers>\n  <g:pageSize>5</g:pageSize>\n</g:QueryVouchers>").encode())
    fault = fault_of(response, 400, "Validation")
    reason = fault.findtext(f"{{{ENV12}}}Reason/{{{ENV12}}}Text")
    assert reason == "Validation: QueryVouchers: required element page is missing"
    issues = [(i.findtext(f"{{{GW}}}place"), i.findtext(f"{{{GW}}}message")) for i in fault.iter(f"{{{GW}}}issue")]
    assert issues == [("/g:QueryVouchers", "required element page is missing")]


@pytest.mark.parametrize(
    "body, content_type",
    [
        (b"not xml at all", "application/soap+xml"),
        (envelope12("<g:NoSuchOperation/>").encode(), "application/soap+xml"),
        (f'<env:Envelope xmlns:env="{ENV12}"/>'.encode(), "application/soap+xml"),
        (envelope12("<g:Ping/><g:Ping/>").encode(), "application/soap+xml"),
    ],
)
def test_malformed_requests_are_soap12_faults(demo, body, content_type):
    fault_of(post12(demo, body, content_type), 400, "Validation")


def test_a_soap11_envelope_gets_a_soap11_fault_pointing_to_the_11_endpoint(demo):
    body = f'<s:Envelope xmlns:s="{ENV11}"><s:Body><Ping xmlns="{GW}"/></s:Body></s:Envelope>'
    response = post12(demo, body.encode(), "text/xml; charset=utf-8")
    assert response.status_code == 500 and response.headers["Content-Type"].startswith("text/xml")
    fault = etree.fromstring(response.content).find(f"{{{ENV11}}}Body/{{{ENV11}}}Fault")
    assert "/soap/archive" in fault.findtext("faultstring")


def test_get_without_wsdl_is_405_with_a_fault(demo):
    response = requests.get(demo.gateway.base_url + "/soap12/archive", timeout=10)
    assert response.headers["Allow"] == "GET, POST"
    fault_of(response, 405, "Validation")


def test_internal_errors_are_receiver_faults_without_details(demo, wsdl12, monkeypatch):
    def broken(*_args, **_kwargs):
        raise RuntimeError("database file /var/secret/archive.db is locked")

    monkeypatch.setattr(demo.adapter.archive, "get_voucher", broken)
    response = post12(demo, envelope12(f"<g:GetVoucher><g:voucherId>{VOUCHER}</g:voucherId></g:GetVoucher>").encode())
    fault = fault_of(response, 500, "Internal")
    assert fault.find(f"{{{ENV12}}}Code/{{{ENV12}}}Value").text.endswith(":Receiver")
    assert "/var/secret" not in response.text and "Traceback" not in response.text


def test_gbk_request_on_the_soap12_endpoint(demo):
    body = envelope12(f"<g:GetVoucher><g:voucherId>{VOUCHER}</g:voucherId></g:GetVoucher>")
    body = ('<?xml version="1.0" encoding="GBK"?>' + body).encode("gbk")
    response = post12(demo, body, "application/soap+xml; charset=GBK")
    assert response.status_code == 200, response.text
    assert "华东制造" in response.content.decode("utf-8")
