"""The SoapUI project ``wsdl/soapui/archive-oa-gateway-soapui-project.xml``: how it is made.

SoapUI 5.x project format (``con:soapui-project``): the gateway's SOAP 1.1 interface with
its WSDL embedded (the project opens without a running gateway), one request per
operation — the envelope of ``wsdl/examples/<Operation>.xml`` — pointed at the demo
(``archive-oa demo --keep-running --port 8080``), and a test suite running the same
requests in order with three assertions each: SOAP Response, Not SOAP Fault and an XPath
Match on the answer.  Regenerate after changing an example or the WSDL::

    python -m archive_oa.devtools.soapui_project            # writes the project file
    python -m archive_oa.devtools.soapui_project --check    # exit 1 when it drifted

Ids are derived from names (uuid5), so regenerating changes nothing that did not change.
"""

from __future__ import annotations

import argparse
import importlib.resources
import re
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

from lxml import etree

from .wsdl_file import CHECKED_IN_PUBLIC_URL, FILE_NAME

CON = "http://eviware.com/soapui/config"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
GATEWAY_NS = "urn:archive-oa:gateway:1"
PROJECT_FILE = "soapui/archive-oa-gateway-soapui-project.xml"
ENDPOINT = CHECKED_IN_PUBLIC_URL + "/soap/archive"
INTERFACE = "ArchiveGateway"
_IDS = uuid.UUID("5f0c4a52-8a3e-4a8e-9d0c-61726368766f")  # namespace of the project's ids


@dataclass(frozen=True)
class Check:
    """The XPath Match of one operation: an XPath 1.0 expression on the answer (prefix
    ``arc`` = the gateway namespace) and the text it must give."""

    xpath: str
    expected: str


#: The operations in the order the test suite runs them: TriggerSync before GetSyncStatus,
#: whose example asks for the latest job.
CHECKS: dict[str, Check] = {
    "Ping": Check("boolean(//arc:PingResponse/arc:version)", "true"),
    "QueryVouchers": Check("//arc:QueryVouchersResponse/arc:items/arc:voucher[1]/arc:voucherId", "HD01-202609-0001"),
    "GetVoucher": Check("//arc:GetVoucherResponse/arc:voucher/arc:orgName", "华东制造"),
    "GetVoucherDocument": Check(
        "contains(//arc:GetVoucherDocumentResponse/arc:document, '<voucherId>HD01-202609-0001</voucherId>')", "true"
    ),
    "GetAttachment": Check("//arc:GetAttachmentResponse/arc:fileName", "HD01-202609-0027-invoice-1.txt"),
    "ArchiveDocument": Check("starts-with(//arc:ArchiveDocumentResponse/arc:archivalCode, 'HD01-2026-')", "true"),
    "SubmitWorkflowResult": Check("//arc:SubmitWorkflowResultResponse/arc:accepted", "true"),
    "TriggerSync": Check("string-length(//arc:TriggerSyncResponse/arc:jobId) > 0", "true"),
    "GetSyncStatus": Check(
        "//arc:GetSyncStatusResponse/arc:state = 'RUNNING' or //arc:GetSyncStatusResponse/arc:state = 'FINISHED'",
        "true",
    ),
    "ReconcilePeriod": Check("//arc:ReconcilePeriodResponse/arc:period", "2026-09"),
}
XPATH_PROLOGUE = f"declare namespace arc='{GATEWAY_NS}';\n"
_ENVELOPE_START = re.compile(r"<soapenv:Envelope\b")


def _wsdl_resources():
    return importlib.resources.files("archive_oa.wsdl")


def project_path() -> Path:
    return Path(str(_wsdl_resources() / PROJECT_FILE))


def example_envelope(operation: str) -> str:
    """``wsdl/examples/<operation>.xml`` without its XML declaration and comment."""
    text = (_wsdl_resources() / "examples" / f"{operation}.xml").read_text(encoding="utf-8")
    start = _ENVELOPE_START.search(text)
    if start is None:
        raise ValueError(f"wsdl/examples/{operation}.xml has no soapenv:Envelope")
    return text[start.start():].strip() + "\n"


def _id(*names: str) -> str:
    return str(uuid.uuid5(_IDS, "/".join(names)))


def _c(parent, tag: str, text: str | None = None, **attributes) -> etree._Element:
    """A ``con:`` element (attribute names as given, in order)."""
    element = etree.SubElement(parent, f"{{{CON}}}{tag}", attributes)
    if text is not None:
        element.text = text
    return element


def _request_settings(parent, endpoint: str, body: str) -> None:
    _c(parent, "settings")
    _c(parent, "encoding", "UTF-8")
    _c(parent, "endpoint", endpoint)
    _c(parent, "request").text = etree.CDATA(body)


def _request_tail(parent, operation: str) -> None:
    credentials = _c(parent, "credentials")
    # the UsernameToken travels in the request's own soapenv:Header
    _c(credentials, "authType", "No Authorization")
    _c(parent, "jmsConfig", JMSDeliveryMode="PERSISTENT")
    _c(parent, "jmsPropertyConfig")
    _c(parent, "wsaConfig", mustUnderstand="NONE", version="200508", action=operation)
    _c(parent, "wsrmConfig", version="1.2")


def _assertions(parent, operation: str) -> None:
    _c(parent, "assertion", type="SOAP Response", id=_id(operation, "soap-response"), name="SOAP Response")
    # SoapUI's ids are crossed: "SOAP Fault Assertion" is the *Not* SOAP Fault check
    _c(parent, "assertion", type="SOAP Fault Assertion", id=_id(operation, "not-fault"), name="Not SOAP Fault")
    check = CHECKS[operation]
    xpath = _c(parent, "assertion", type="XPath Match", id=_id(operation, "xpath"), name="XPath Match")
    configuration = _c(xpath, "configuration")
    for name, value in (
        ("path", XPATH_PROLOGUE + check.xpath),
        ("content", check.expected),
        ("allowWildcards", "false"),
        ("ignoreNamspaceDifferences", "false"),  # sic: SoapUI's spelling
        ("ignoreComments", "false"),
    ):
        etree.SubElement(configuration, name).text = value


def build_project(endpoint: str = ENDPOINT) -> bytes:
    wsdl_url = endpoint + "?wsdl"
    wsdl_text = (_wsdl_resources() / FILE_NAME).read_text(encoding="utf-8")
    wsdl_text = wsdl_text.split("?>", 1)[1].lstrip() if wsdl_text.startswith("<?xml") else wsdl_text

    root = etree.Element(f"{{{CON}}}soapui-project", nsmap={"con": CON})
    for name, value in (("id", _id("project")), ("activeEnvironment", "Default"),
                        ("name", "archive-oa gateway (demo)"), ("resourceRoot", ""), ("soapui-version", "5.7.2"),
                        ("abortOnError", "false"), ("runType", "SEQUENTIAL")):
        root.set(name, value)
    _c(root, "settings")

    interface = _c(root, "interface", id=_id("interface"), wsaVersion="NONE", name=INTERFACE, type="wsdl",
                   bindingName=f"{{{GATEWAY_NS}}}{INTERFACE}", soapVersion="1_1", anonymous="optional",
                   definition=wsdl_url)
    interface.set(f"{{{XSI}}}type", "con:WsdlInterface")
    _c(interface, "settings")
    cache = _c(interface, "definitionCache", type="TEXT", rootPart=wsdl_url)
    part = _c(cache, "part")
    _c(part, "url", wsdl_url)
    _c(part, "content").text = etree.CDATA(wsdl_text)
    _c(part, "type", "http://schemas.xmlsoap.org/wsdl/")
    _c(_c(interface, "endpoints"), "endpoint", endpoint)
    for operation in CHECKS:
        op = _c(interface, "operation", id=_id("operation", operation), isOneWay="false", action=operation,
                name=operation, bindingOperationName=operation, type="Request-Response",
                outputName=f"{operation}Response", inputName=operation, receivesAttachments="false",
                sendsAttachments="false", anonymous="optional")
        _c(op, "settings")
        call = _c(op, "call", id=_id("call", operation), name=f"{operation} (demo)")
        _request_settings(call, endpoint, example_envelope(operation))
        _request_tail(call, operation)

    suite = _c(root, "testSuite", id=_id("suite"), name="Every operation against the demo")
    _c(suite, "settings")
    _c(suite, "runType", "SEQUENTIAL")
    case = _c(suite, "testCase", id=_id("case"), failOnError="true", failTestCaseOnErrors="true",
              keepSession="false", maxResults="0", name="Examples answer without fault", searchProperties="true")
    _c(case, "settings")
    for operation in CHECKS:
        step = _c(case, "testStep", type="request", name=operation, id=_id("step", operation))
        _c(step, "settings")
        config = _c(step, "config")
        config.set(f"{{{XSI}}}type", "con:RequestStep")
        _c(config, "interface", INTERFACE)
        _c(config, "operation", operation)
        request = _c(config, "request", name=operation, id=_id("step-request", operation))
        _request_settings(request, endpoint, example_envelope(operation))
        _assertions(request, operation)
        _request_tail(request, operation)
    _c(case, "properties")
    _c(suite, "properties")
    _c(root, "properties")
    _c(root, "wssContainer")
    _c(root, "oAuth2ProfileContainer")
    _c(root, "oAuth1ProfileContainer")
    etree.indent(root, space="  ")
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 on drift")
    args = parser.parse_args(argv)
    target = project_path()
    expected = build_project()
    if args.check:
        if not target.is_file() or target.read_bytes() != expected:
            print(f"{target} drifted from the examples or the WSDL: regenerate it", file=sys.stderr)
            return 1
        return 0
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(expected)
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
