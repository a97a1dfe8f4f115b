"""Charsets on the wire: requests in UTF-8, GBK and GB18030 — named in the Content-Type,
the XML declaration or both — reach the archive with their Chinese text intact (raw HTTP
POSTs to the gateway and to the OA simulator); answers come in the deployment's
``[gateway] response_encoding`` with the same charset in the header and the declaration;
the adapter's zeep client and the simulator agree in GBK and GB18030."""

from __future__ import annotations

import base64
import re
import time

import pytest
import requests
import zeep
from lxml import etree
from zeep.wsse.username import UsernameToken

from archive_oa.errors import ConfigurationError, ValidationFailed
from archive_oa.gateway.app import GatewayApp
from archive_oa.gateway.encoding import canonical, declared_encoding, request_as_utf8, response_charset
from archive_oa.oa.client import OaClient
from archive_oa.oa.simulator import SimulatorConfig, start_simulator
from archive_oa.settings import OaSettings

import factories
from demo_gateway import running_demo, second_gateway

SOAP11 = "http://schemas.xmlsoap.org/soap/envelope/"
SOAP12 = "http://www.w3.org/2003/05/soap-envelope"
GW = "urn:archive-oa:gateway:1"
WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
#: in GBK and GB18030 alike; 𠀀 (U+20000) only in GB18030 (four bytes)
CHINESE = "报销单（华东制造·差旅）"
EXTENSION_B = "𠀀"
CHARSETS = ("UTF-8", "GBK", "GB18030")
LABELS = ("header", "declaration", "both")


def _token(user: str) -> str:
    return (f'<wsse:Security xmlns:wsse="{WSSE}"><wsse:UsernameToken><wsse:Username>{user}</wsse:Username>'
            f"<wsse:Password>{user}</wsse:Password></wsse:UsernameToken></wsse:Security>")


def envelope(body_xml: str, user: str | None = None, env: str = SOAP11) -> str:
    return factories.envelope(body_xml, _token(user) if user else None, namespace=env, prefix="s")


def labelled(xml: str, charset: str, label: str, media_type: str = "text/xml") -> tuple[bytes, str]:
    """The document encoded in ``charset`` and labelled in the header, the declaration or both."""
    declaration = f'<?xml version="1.0" encoding="{charset}"?>' if label in ("declaration", "both") else ""
    content_type = f"{media_type}; charset={charset}" if label in ("header", "both") else media_type
    return (declaration + xml).encode(charset), content_type


def archive_document_call(source_id: str, text: str) -> str:
    content = base64.b64encode(text.encode("utf-8")).decode()
    return (
        f"<g:ArchiveDocument><g:sourceSystem>编码测试</g:sourceSystem><g:sourceId>{source_id}</g:sourceId>"
        f"<g:docType>EXPENSE_CLAIM</g:docType><g:orgCode>HD01</g:orgCode><g:period>2026-10</g:period>"
        f"<g:title>{text}</g:title><g:amount>88.80</g:amount>"
        f"<g:fields><g:field><g:name>申请人</g:name><g:value>{text}</g:value></g:field></g:fields>"
        f"<g:attachments><g:attachment><g:fileName>{text}.txt</g:fileName><g:mimeType>text/plain</g:mimeType>"
        f"<g:content>{content}</g:content></g:attachment></g:attachments></g:ArchiveDocument>"
    )


@pytest.fixture(scope="module")
def demo():
    with running_demo() as running:
        yield running


@pytest.fixture(scope="module")
def viewer(demo):
    return zeep.Client(demo.gateway.wsdl_url, wsse=UsernameToken("demo-viewer", "demo-viewer")).service


def post(url: str, body: bytes, content_type: str) -> requests.Response:
    return requests.post(url, data=body, headers={"Content-Type": content_type}, timeout=15)


# --- reading a request: the rules, unit by unit ---------------------------------------------


@pytest.mark.parametrize("charset", CHARSETS)
@pytest.mark.parametrize("label", LABELS)
def test_request_as_utf8_reads_every_labelling(charset, label):
    text = CHINESE + (EXTENSION_B if charset != "GBK" else "")
    body, content_type = labelled(f"<a>{text}</a>", charset, label)
    header_charset = content_type.partition("charset=")[2] or None
    utf8 = request_as_utf8(body, header_charset)
    assert etree.fromstring(utf8).text == text
    assert declared_encoding(utf8) in (None, "UTF-8")


def test_declaration_beats_a_library_default_header():
    # an HTTP library's default charset=utf-8 header over a document that declares GBK
    body = f'<?xml version="1.0" encoding="GBK"?><a>{CHINESE}</a>'.encode("gbk")
    assert etree.fromstring(request_as_utf8(body, "utf-8")).text == CHINESE


def test_header_is_used_when_the_declaration_does_not_fit_the_bytes():
    body = f"<?xml version='1.0' encoding='UTF-8'?><a>{CHINESE}</a>".encode("gb18030")
    assert etree.fromstring(request_as_utf8(body, "GB18030")).text == CHINESE


def test_bytes_in_no_named_charset_are_refused_with_the_offset():
    body = f"<a>{CHINESE}</a>".encode("gbk")
    with pytest.raises(ValidationFailed) as caught:
        request_as_utf8(body, "utf-8")
    assert "not valid UTF-8" in caught.value.message and "offset 3" in caught.value.message
    assert caught.value.issues[0].rule == "charset"


@pytest.mark.parametrize("label", ["big5", "latin-1", "utf-16"])
def test_unknown_charsets_are_refused_by_name(label):
    with pytest.raises(ValidationFailed, match=f"unknown charset '{label}' in the Content-Type header"):
        request_as_utf8(b"<a/>", label)


def test_common_aliases_and_a_bom():
    assert [canonical(x) for x in ("gb2312", "CP936", "utf8", "GB18030", "ascii")] == [
        "GBK", "GBK", "UTF-8", "GB18030", None]
    body = "\ufeff<a>报</a>".encode("utf-8")
    assert etree.fromstring(request_as_utf8(body, "gbk")).text == "报"


# --- the gateway, over HTTP -----------------------------------------------------------------


@pytest.mark.parametrize("charset", CHARSETS)
@pytest.mark.parametrize("label", LABELS)
def test_soap11_requests_keep_chinese_text_into_the_archive(demo, viewer, charset, label):
    text = CHINESE + (EXTENSION_B if charset != "GBK" else "")
    source_id = f"ENC-11-{charset}-{label}"
    body, content_type = labelled(envelope(archive_document_call(source_id, text), "demo-archivist"), charset, label)
    answer = post(demo.gateway.url, body, content_type)
    assert answer.status_code == 200, answer.text
    archive_id = etree.fromstring(answer.content).findtext(f".//{{{GW}}}archiveId")
    stored = viewer.GetAttachment(attachmentId=f"{archive_id}-1")
    assert stored.fileName == f"{text}.txt" and stored.content == text.encode("utf-8")


@pytest.mark.parametrize("charset", CHARSETS)
def test_soap11_query_keyword_in_each_charset_finds_the_same_vouchers(demo, viewer, charset):
    expected = viewer.QueryVouchers(keyword="工资", page=1, pageSize=500).total
    assert expected > 0
    call = "<g:QueryVouchers><g:keyword>工资</g:keyword><g:page>1</g:page><g:pageSize>500</g:pageSize></g:QueryVouchers>"
    body, content_type = labelled(envelope(call, "demo-viewer"), charset, "both")
    answer = post(demo.gateway.url, body, content_type)
    assert int(etree.fromstring(answer.content).findtext(f".//{{{GW}}}total")) == expected


@pytest.mark.parametrize("charset", CHARSETS)
@pytest.mark.parametrize("label", LABELS)
def test_soap12_requests_keep_chinese_text(demo, viewer, charset, label):
    text = CHINESE + (EXTENSION_B if charset != "GBK" else "")
    xml = envelope(archive_document_call(f"ENC-12-{charset}-{label}", text), "demo-archivist", env=SOAP12)
    body, content_type = labelled(xml, charset, label, media_type="application/soap+xml")
    answer = post(demo.gateway.base_url + "/soap12/archive", body, content_type)
    assert answer.status_code == 200, answer.text
    archive_id = etree.fromstring(answer.content).findtext(f".//{{{GW}}}archiveId")
    assert viewer.GetAttachment(attachmentId=f"{archive_id}-1").fileName == f"{text}.txt"


def test_gbk_bytes_labelled_utf8_are_a_validation_fault(demo):
    body = envelope("<g:GetVoucher><g:voucherId>报销</g:voucherId></g:GetVoucher>", "demo-viewer").encode("gbk")
    answer = post(demo.gateway.url, body, "text/xml; charset=utf-8")
    assert answer.status_code == 500
    detail = etree.fromstring(answer.content).find(f".//{{{GW}}}GatewayFault")
    assert detail.findtext(f"{{{GW}}}code") == "Validation"
    assert "not valid UTF-8" in detail.findtext(f"{{{GW}}}message")


# --- answers in the deployment's charset ----------------------------------------------------


def charset_labels(answer: requests.Response) -> tuple[str, str]:
    header = answer.headers["Content-Type"].partition("charset=")[2].lower()
    declared = re.match(rb"<\?xml[^>]*encoding=['\"]([^'\"]+)", answer.content).group(1).decode().lower()
    return header, declared


@pytest.fixture(scope="module", params=["GBK", "GB18030"])
def legacy_gateway(request, demo):
    with second_gateway(demo, response_encoding=request.param) as handle:
        yield request.param, handle


def test_answers_carry_the_configured_charset_in_header_and_declaration(legacy_gateway):
    charset, handle = legacy_gateway
    call = "<g:GetVoucher><g:voucherId>HD01-202609-0001</g:voucherId></g:GetVoucher>"
    answers = {
        "answer": post(handle.url, envelope(call, "demo-viewer").encode(), "text/xml; charset=utf-8"),
        "operation fault": post(handle.url, envelope(call.replace("HD01", "不存在"), "demo-viewer").encode(),
                                "text/xml"),
        "intake fault": post(handle.url, "<不是SOAP/>".encode(), "text/xml"),
        "soap12 answer": post(handle.base_url + "/soap12/archive", envelope(call, "demo-viewer", SOAP12).encode(),
                              "application/soap+xml"),
        "soap12 intake fault": post(handle.base_url + "/soap12/archive", b"<x/>", "application/soap+xml"),
    }
    for name, answer in answers.items():
        assert charset_labels(answer) == (charset.lower(), charset.lower()), name
        text = answer.content.decode(charset)  # strict: the bytes are in that charset
        assert ("华东制造" in text) if name.endswith("answer") else ("GatewayFault" in text), name
    assert "华东制造".encode(charset) in answers["answer"].content
    assert "不存在".encode(charset) in answers["operation fault"].content


def test_zeep_reads_legacy_answers_including_characters_outside_gbk(demo, legacy_gateway):
    charset, handle = legacy_gateway
    archivist = zeep.Client(handle.wsdl_url, wsse=UsernameToken("demo-archivist", "demo-archivist")).service
    name = f"{CHINESE}{EXTENSION_B}"
    result = archivist.ArchiveDocument(
        sourceSystem="编码测试", sourceId=f"ENC-OUT-{charset}", docType="OTHER", orgCode="HD01", period="2026-10",
        title=name, attachments={"attachment": [{"fileName": f"{name}.txt", "mimeType": "text/plain",
                                                 "content": b"x"}]},
    )
    raw = post(handle.url, envelope(f"<g:GetAttachment><g:attachmentId>{result.archiveId}-1</g:attachmentId>"
                                    "</g:GetAttachment>", "demo-viewer").encode(), "text/xml")
    # GBK has no 𠀀: it travels as a character reference; GB18030 writes its four bytes
    expected = b"&#131072;" if charset == "GBK" else EXTENSION_B.encode("gb18030")
    assert expected in raw.content
    viewer = zeep.Client(handle.wsdl_url, wsse=UsernameToken("demo-viewer", "demo-viewer")).service
    assert viewer.GetAttachment(attachmentId=f"{result.archiveId}-1").fileName == f"{name}.txt"
    assert viewer.GetVoucher(voucherId="HD01-202609-0001").orgName == "华东制造"


def test_an_unsupported_response_encoding_is_a_configuration_error(demo):
    settings = demo.settings.replace(gateway={"response_encoding": "big5"})
    with pytest.raises(ConfigurationError, match=r"\[gateway\] response_encoding = 'big5'.*UTF-8, GBK or GB18030"):
        GatewayApp(settings, services=None)
    assert response_charset("gb2312") == "GBK" and response_charset("utf8") == "UTF-8"


# --- the OA side: the adapter's zeep client and the simulator -------------------------------


@pytest.fixture(params=["gbk", "gb18030"])
def legacy_oa(request, tmp_path):
    handle = start_simulator(SimulatorConfig(encoding=request.param, decide_after=0.1, reject_above="10"), tmp_path)
    yield request.param, handle
    handle.stop()


def test_oa_client_keeps_chinese_text_both_ways(legacy_oa):
    charset, sim = legacy_oa
    title = f"华南贸易 付字第8号 支付货款（鑫源）{EXTENSION_B}"
    document = f"""<WorkflowRequest xmlns="urn:archive-oa:oa-workflow:1">
      <workflowCode>FIN_VOUCHER_APPROVAL</workflowCode><title>{title}</title><creator>档案系统</creator>
      <level>0</level><externalKey>键-{charset}</externalKey>
      <mainFields><field><name>je</name><value>1200.00</value></field>
        <field><name>zy</name><value>支付货款</value></field></mainFields>
    </WorkflowRequest>""".encode("utf-8")
    with OaClient(OaSettings(url=sim.url, connect_timeout=1.0, timeout=5.0, pool_size=1)) as client:
        request_id = client.create_request(document)
        assert list(client.find_requests(f"键-{charset}")) == [request_id]
        deadline = time.monotonic() + 10
        while not (decided := client.get_request(request_id)).status.decided:
            assert time.monotonic() < deadline, "the simulator did not decide in time"
            time.sleep(0.05)
    stored = sim.db.get(request_id).form
    assert (stored.title, stored.creator, stored.main_value("zy")) == (title, "档案系统", "支付货款")
    assert decided.external_key == f"键-{charset}"
    assert decided.logs[-1].comment == "金额 1200.00 超出授权 10，驳回"


@pytest.mark.parametrize("charset", CHARSETS)
@pytest.mark.parametrize("label", [*LABELS, "default-header"])
def test_simulator_reads_requests_in_every_charset(legacy_oa, charset, label):
    answer_charset, sim = legacy_oa
    text = CHINESE + (EXTENSION_B if charset != "GBK" else "")
    call = (
        f'<w:CreateWorkflowRequest xmlns:w="urn:legacy-oa:workflow:1"><w:request>'
        f"<w:workflowCode>FIN</w:workflowCode><w:title>{text}</w:title><w:creator>档案系统</w:creator>"
        f"<w:mainFields><w:field><w:name>zy</w:name><w:value>{text}</w:value></w:field></w:mainFields>"
        "</w:request></w:CreateWorkflowRequest>"
    )
    xml = envelope(call).replace("<s:Body>", f"<s:Header>{_token('archive-oa')}</s:Header><s:Body>")
    if label == "default-header":  # the declaration names the charset, the header a library default
        body, content_type = labelled(xml, charset, "declaration")
        content_type = "text/xml; charset=utf-8"
    else:
        body, content_type = labelled(xml, charset, label)
    answer = post(sim.url, body, content_type)
    assert answer.status_code == 200, answer.content.decode(answer_charset)
    assert charset_labels(answer) == (answer_charset, answer_charset)
    request_id = int(etree.fromstring(answer.content).findtext(".//{urn:legacy-oa:workflow:1}requestId"))
    form = sim.db.get(request_id).form
    assert (form.title, form.creator, form.main_value("zy")) == (text, "档案系统", text)
