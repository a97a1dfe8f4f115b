"""The SoapUI material: every sample request in wsdl/examples/ (one per gateway operation)
and every request of the SoapUI project, sent to a gateway holding the demo's data and
answered without a fault — the project's own XPath assertions checked on the answers;
the OA simulator's examples in wsdl/examples/oa/ likewise against a running simulator."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import requests
import zeep
from lxml import etree

from archive_oa.gateway.auth import OPERATION_ACCESS
from archive_oa.devtools.soapui_project import CHECKS, CON, XPATH_PROLOGUE, build_project, project_path
from archive_oa.devtools.wsdl_file import checked_in_path
from archive_oa.oa.simulator import SimulatorConfig, start_simulator
from archive_oa.safexml import parse_bytes

from demo_gateway import running_demo

EXAMPLES = Path(str(checked_in_path().parent / "examples"))
SOAP = "http://schemas.xmlsoap.org/soap/envelope/"
WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
OA = "urn:legacy-oa:workflow:1"
#: the least role of each demo user (their password is their name)
DEMO_USERS = {role: f"demo-{role}" for role in ("viewer", "archivist", "operator", "admin")}


@pytest.fixture(scope="module")
def demo():
    with running_demo(deliver_first_batch=True) as running:  # request 1 exists, as in the demo
        yield running


def send(url: str, body: bytes, action: str) -> requests.Response:
    return requests.post(url, data=body, timeout=60,
                         headers={"Content-Type": "text/xml; charset=utf-8", "SOAPAction": f'"{action}"'})


def assert_answered_without_fault(response: requests.Response, operation: str) -> etree._Element:
    assert response.status_code == 200, f"{operation}: {response.text[:2000]}"
    answer = etree.fromstring(response.content)
    assert answer.find(f"{{{SOAP}}}Body/{{{SOAP}}}Fault") is None, f"{operation}: {response.text[:2000]}"
    # the WSDL declares no element nillable (docs/wsdl-shape.md): a missing value is left out
    assert not answer.xpath("//*[@xsi:nil]", namespaces={"xsi": "http://www.w3.org/2001/XMLSchema-instance"})
    return answer


# --- wsdl/examples/<Operation>.xml -------------------------------------------------------------


def test_there_is_one_example_per_operation():
    assert sorted(p.stem for p in EXAMPLES.glob("*.xml")) == sorted(OPERATION_ACCESS)
    assert list(CHECKS) == list(OPERATION_ACCESS)  # the order the suite replays them in


@pytest.mark.parametrize("operation", list(OPERATION_ACCESS))
def test_example_calls_its_operation_as_the_least_demo_user_allowed(operation):
    envelope = parse_bytes((EXAMPLES / f"{operation}.xml").read_bytes()).getroot()
    (call,) = envelope.find(f"{{{SOAP}}}Body")
    assert call.tag == f"{{urn:archive-oa:gateway:1}}{operation}"
    user = envelope.findtext(f"{{{SOAP}}}Header/{{{WSSE}}}Security/{{{WSSE}}}UsernameToken/{{{WSSE}}}Username")
    role = OPERATION_ACCESS[operation].role
    assert user == (DEMO_USERS[role] if role else None)


@pytest.mark.slow
def test_every_example_is_answered_without_fault(demo):
    for operation in OPERATION_ACCESS:  # in order: TriggerSync comes before GetSyncStatus
        body = (EXAMPLES / f"{operation}.xml").read_bytes()
        answer = assert_answered_without_fault(send(demo.gateway.url, body, operation), operation)
        assert answer.find(f".//{{urn:archive-oa:gateway:1}}{operation}Response") is not None


@pytest.mark.slow
def test_examples_are_valid_for_zeep_too(demo):
    """Each example's body matches the WSDL as a generated client reads it."""
    client = zeep.Client(demo.gateway.wsdl_url)
    for operation in OPERATION_ACCESS:
        envelope = parse_bytes((EXAMPLES / f"{operation}.xml").read_bytes()).getroot()
        (call,) = envelope.find(f"{{{SOAP}}}Body")
        element = client.get_element(f"{{urn:archive-oa:gateway:1}}{operation}")
        element.parse(call, client.wsdl.types)


# --- the SoapUI project --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def project():
    return parse_bytes(project_path().read_bytes()).getroot()


def c(name: str) -> str:
    return f"{{{CON}}}{name}"


def test_project_file_is_current():
    assert project_path().read_bytes() == build_project(), (
        "wsdl/soapui/ drifted from wsdl/examples or the WSDL: run python -m archive_oa.devtools.soapui_project")


def test_project_is_a_soapui_project_with_the_gateway_interface(project):
    assert project.tag == c("soapui-project")
    (interface,) = project.findall(c("interface"))
    assert interface.get("{http://www.w3.org/2001/XMLSchema-instance}type") == "con:WsdlInterface"
    assert (interface.get("soapVersion"), interface.get("bindingName")) == (
        "1_1", "{urn:archive-oa:gateway:1}ArchiveGateway")
    assert interface.get("definition") == "http://127.0.0.1:8080/soap/archive?wsdl"
    assert interface.findtext(f"{c('endpoints')}/{c('endpoint')}") == "http://127.0.0.1:8080/soap/archive"
    embedded = interface.findtext(f"{c('definitionCache')}/{c('part')}/{c('content')}")
    assert etree.tostring(etree.fromstring(embedded.encode())) == etree.tostring(
        etree.fromstring(checked_in_path().read_bytes()))


def test_project_has_a_request_for_every_operation_of_the_wsdl(project):
    wsdl = etree.fromstring(checked_in_path().read_bytes())
    in_wsdl = {op.get("name") for op in wsdl.iterfind("{http://schemas.xmlsoap.org/wsdl/}binding/"
                                                       "{http://schemas.xmlsoap.org/wsdl/}operation")}
    operations = project.findall(f"{c('interface')}/{c('operation')}")
    assert {op.get("name") for op in operations} == in_wsdl == set(OPERATION_ACCESS)
    for op in operations:
        (call,) = op.findall(c("call"))
        assert call.findtext(c("endpoint")) == "http://127.0.0.1:8080/soap/archive"
        assert call.findtext(c("request")).lstrip().startswith("<soapenv:Envelope")


def steps(project) -> list[etree._Element]:
    return project.findall(f"{c('testSuite')}/{c('testCase')}/{c('testStep')}")


def test_every_test_step_has_the_three_assertions(project):
    assert [s.get("name") for s in steps(project)] == list(OPERATION_ACCESS)
    for step in steps(project):
        request = step.find(f"{c('config')}/{c('request')}")
        assertions = {(a.get("type"), a.get("name")) for a in request.findall(c("assertion"))}
        assert assertions == {("SOAP Response", "SOAP Response"), ("SOAP Fault Assertion", "Not SOAP Fault"),
                              ("XPath Match", "XPath Match")}, step.get("name")


def xpath_assertion(request: etree._Element) -> tuple[str, dict[str, str], str]:
    """(expression, namespaces, expected) of a step's XPath Match, as SoapUI reads it."""
    (assertion,) = [a for a in request.findall(c("assertion")) if a.get("type") == "XPath Match"]
    path = assertion.findtext(f"{c('configuration')}/path")
    namespaces = dict(re.findall(r"declare namespace (\w+)='([^']+)';", path))
    expression = re.sub(r"declare namespace \w+='[^']+';\s*", "", path)
    assert path.startswith(XPATH_PROLOGUE)
    return expression, namespaces, assertion.findtext(f"{c('configuration')}/content")


def evaluate(answer: etree._Element, expression: str, namespaces: dict[str, str]) -> str:
    value = answer.xpath(expression, namespaces=namespaces)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        assert value, f"{expression} selects nothing"
        value = value[0].text if isinstance(value[0], etree._Element) else value[0]
    return str(value)


@pytest.mark.slow
def test_every_test_step_is_answered_without_fault_and_passes_its_xpath(demo, project):
    for step in steps(project):
        operation = step.get("name")
        request = step.find(f"{c('config')}/{c('request')}")
        body = request.findtext(c("request")).encode("utf-8")
        url = request.findtext(c("endpoint")).replace("http://127.0.0.1:8080", demo.gateway.base_url)
        answer = assert_answered_without_fault(send(url, body, operation), operation)
        expression, namespaces, expected = xpath_assertion(request)
        assert evaluate(answer, expression, namespaces) == expected, operation


def test_xpath_assertions_can_fail(demo, project):
    """The assertions check the answer, not merely that there is one."""
    step = steps(project)[2]  # GetVoucher
    request = step.find(f"{c('config')}/{c('request')}")
    body = request.findtext(c("request")).replace("HD01-202609-0001", "HD01-202609-0002").encode("utf-8")
    answer = assert_answered_without_fault(send(demo.gateway.url, body, "GetVoucher"), "GetVoucher")
    expression, namespaces, expected = xpath_assertion(request)
    assert evaluate(answer, expression, namespaces) == expected  # same organisation: 华东制造
    other = body.replace(b"HD01-202609-0002", b"XB03-202609-0001")
    answer = assert_answered_without_fault(send(demo.gateway.url, other, "GetVoucher"), "GetVoucher")
    assert evaluate(answer, expression, namespaces) != expected


# --- wsdl/examples/oa/: the OA simulator's examples ----------------------------------------------

OA_ORDER = ("CreateWorkflowRequest", "GetWorkflowRequest", "FindWorkflowRequests", "FetchCompletedRequests",
            "AcknowledgeCompleted")


def test_there_is_one_simulator_example_per_oa_operation():
    wsdl = etree.fromstring(checked_in_path("legacy-oa-workflow.wsdl").read_bytes())
    operations = {op.get("name") for op in wsdl.iterfind("{http://schemas.xmlsoap.org/wsdl/}portType/"
                                                          "{http://schemas.xmlsoap.org/wsdl/}operation")}
    assert sorted(p.stem for p in (EXAMPLES / "oa").glob("*.xml")) == sorted(operations) == sorted(OA_ORDER)


@pytest.mark.parametrize("encoding", ["utf-8", "gbk"])
def test_simulator_examples_are_answered_without_fault(tmp_path, encoding):
    sim = start_simulator(SimulatorConfig(decide_after=0.0, encoding=encoding), tmp_path)
    try:
        for operation in OA_ORDER:
            body = (EXAMPLES / "oa" / f"{operation}.xml").read_bytes()
            answer = assert_answered_without_fault(send(sim.url, body, f"{OA}#{operation}"), operation)
            assert answer.find(f".//{{{OA}}}{operation}Response") is not None
        assert sim.db.get(1).form.title == "华东制造 2026-09 付字第1号 发放8月工资"
    finally:
        sim.stop()
