"""The OA driver ``generic``: zeep over wsdl/legacy-oa-workflow.wsdl.

Implements ``archive_oa.domain.ports.OaWorkflowPort``, registered under the entry-point
group ``archive_oa.oa_drivers`` as a third party's driver would be.  It only translates: a
WorkflowRequest document (oa-workflow.xsd) into the OA's wire type, the OA's answers
into domain objects, and every failure into the adapter's ``OaError`` tree, chosen by
what the failure says about the request's fate:

- nothing reached the OA (connection refused, DNS, connect timeout) → ``OaUnreachable``;
- it may have taken effect (read timeout, connection dropped mid-call, garbled or
  undecodable answer) → ``OaAmbiguous``;
- a soap:Server fault → ``OaServerFault``; a soap:Client fault → ``OaRejected``, or
  ``OaAuthenticationFailed`` when the credentials were refused.

The WSDL is parsed once per process; each client holds one pooled HTTP session with
explicit (connect, read) timeouts on every call — zeep has none by default.
An OA that differs is another driver (``archive_oa.oa.drivers``), not a subclass of this.
"""

from __future__ import annotations

import base64
import binascii
import importlib.resources
import logging
import threading
import time
from typing import Any, Sequence

import requests
import zeep
import zeep.exceptions
from lxml import etree
from requests.adapters import HTTPAdapter
from urllib3.exceptions import NewConnectionError
from zeep.transports import Transport
from zeep.wsdl import Document
from zeep.wsse.username import UsernameToken

from ..domain.model import Approval, WorkflowState
from ..domain.ports import CompletedBatch, CompletedItem, OaRequest
from ..errors import (
    Issue,
    OaAmbiguous,
    OaAuthenticationFailed,
    OaError,
    OaRejected,
    OaServerFault,
    OaUnreachable,
    ValidationFailed,
)
from ..settings import OaSettings

log = logging.getLogger(__name__)

WSDL_PACKAGE = "archive_oa.wsdl"
WSDL_NAME = "legacy-oa-workflow.wsdl"
OA_NAMESPACE = "urn:legacy-oa:workflow:1"
BINDING = f"{{{OA_NAMESPACE}}}WorkflowServiceSoapBinding"
WORKFLOW_NAMESPACE = "urn:archive-oa:oa-workflow:1"  # the adapter's WorkflowRequest document

_STATES = {
    "IN_PROGRESS": WorkflowState.SUBMITTED,
    "APPROVED": WorkflowState.APPROVED,
    "REJECTED": WorkflowState.REJECTED,
    "WITHDRAWN": WorkflowState.WITHDRAWN,
}
#: faultcodes (last dotted part, or WS-Security's own) that mean "your credentials"
_AUTH_FAULTS = {"Authentication", "AuthenticationFailed", "FailedAuthentication", "InvalidSecurity", "InvalidSecurityToken"}
#: For the WorkflowRequest document only: our own stylesheet's output (validated against
#: oa-workflow.xsd), so no cap on text size — libxml2's default stops a text node at 10 MB,
#: i.e. an attachment of 7.5 MB as base64, far below what the OA reads.  Still no DTD,
#: entities or network.  The OA's answers are untrusted and keep zeep's caps (_zeep_settings).
_DOCUMENT_PARSER = etree.XMLParser(
    resolve_entities=False, no_network=True, load_dtd=False, remove_blank_text=True, huge_tree=True
)

_documents: dict[str, Document] = {}
_documents_lock = threading.Lock()


def _zeep_settings() -> zeep.Settings:
    return zeep.Settings(strict=True, xml_huge_tree=False, forbid_dtd=True, forbid_entities=True, forbid_external=True)


def load_wsdl(name: str = WSDL_NAME) -> Document:
    """The parsed WSDL from the installed package, parsed once per process."""
    with _documents_lock:
        document = _documents.get(name)
        if document is None:
            resource = importlib.resources.files(WSDL_PACKAGE) / name
            with importlib.resources.as_file(resource) as path:
                # a transport that is never used for network: the WSDL imports nothing
                document = Document(str(path), Transport(), settings=_zeep_settings())
            _documents[name] = document
        return document


class OaClient:
    """``OaWorkflowPort`` over SOAP.  Thread-safe; ``close()`` releases the HTTP pool."""

    def __init__(self, settings: OaSettings, session: requests.Session | None = None) -> None:
        self.settings = settings
        self.url = settings.url
        self._session = session or _pooled_session(settings.pool_size, settings.url)
        transport = _SoapTransport(
            session=self._session,
            timeout=settings.connect_timeout + settings.timeout,  # WSDL loading (not used: file)
            operation_timeout=(settings.connect_timeout, settings.timeout),
        )
        self._client = zeep.Client(
            load_wsdl(WSDL_NAME),
            wsse=UsernameToken(settings.user, settings.password, use_digest=False),
            transport=transport,
            settings=_zeep_settings(),
        )
        self._service = self._client.create_service(BINDING, settings.url)

    @property
    def call_timeout(self) -> float:
        return self.settings.timeout

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> "OaClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- OaWorkflowPort ------------------------------------------------------------

    def create_request(self, workflow_xml: bytes) -> int:
        request = request_from_document(workflow_xml)
        request_id = self._call("CreateWorkflowRequest", request=request)
        if not isinstance(request_id, int) or request_id <= 0:
            raise OaAmbiguous(
                f"the OA at {self.url} answered CreateWorkflowRequest with requestId {request_id!r}, "
                "not a positive number; the request may or may not exist",
                operation="CreateWorkflowRequest",
            )
        return request_id

    def find_requests(self, external_key: str) -> Sequence[int]:
        ids = self._call("FindWorkflowRequests", externalKey=external_key)
        return tuple(int(i) for i in (ids or ()))

    def get_request(self, request_id: int) -> OaRequest:
        record = self._call("GetWorkflowRequest", requestId=request_id)
        return OaRequest(
            request_id=int(record.requestId),
            external_key=record.externalKey,
            status=_state(record.status, "GetWorkflowRequest"),
            finished_at=record.finishedAt,
            logs=_approvals(record.logs),
        )

    def fetch_completed(self, after_cursor: int, max_items: int) -> CompletedBatch:
        answer = self._call("FetchCompletedRequests", afterCursor=after_cursor, maxItems=max_items)
        items = tuple(
            CompletedItem(
                cursor=int(item.cursor),
                request_id=int(item.requestId),
                external_key=item.externalKey,
                status=_state(item.status, "FetchCompletedRequests"),
                finished_at=item.finishedAt,
                logs=_approvals(item.logs),
            )
            for item in ((answer.items.item or ()) if answer.items else ())
        )
        return CompletedBatch(items=items, next_cursor=int(answer.nextCursor))

    def acknowledge(self, up_to_cursor: int) -> None:
        self._call("AcknowledgeCompleted", upToCursor=up_to_cursor)

    # --- the one place calls go out and errors come back -----------------------------

    def _call(self, operation: str, **kwargs):
        started = time.monotonic()
        try:
            return getattr(self._service, operation)(**kwargs)
        except OaError:
            raise
        except Exception as exc:
            mapped = self._map_error(operation, exc)
            if mapped is exc:
                raise
            raise mapped from exc
        finally:
            log.debug("OA %s took %.3fs", operation, time.monotonic() - started)

    def _map_error(self, operation: str, exc: Exception) -> Exception:
        where = f"the OA at {self.url} ({operation})"
        if isinstance(exc, zeep.exceptions.Fault):
            return _map_fault(where, operation, exc)
        if isinstance(exc, requests.ConnectTimeout) or (
            isinstance(exc, requests.ConnectionError) and _caused_by(exc, NewConnectionError)
        ):
            return OaUnreachable(
                f"{where} could not be reached: {_reason(exc)}; check that the OA is up and [oa] url "
                "(ARCHIVE_OA_OA_URL) is right",
                operation=operation,
            )
        if isinstance(exc, requests.ReadTimeout):
            return OaAmbiguous(
                f"{where} did not answer within {self.settings.timeout}s; the call may have taken effect",
                operation=operation,
            )
        if isinstance(exc, requests.RequestException):
            return OaAmbiguous(
                f"{where} dropped the connection mid-call ({_reason(exc)}); the call may have taken effect",
                operation=operation,
            )
        if isinstance(exc, zeep.exceptions.TransportError):
            return _map_http_status(where, operation, exc)
        if isinstance(exc, zeep.exceptions.ValidationError):
            return ValidationFailed(
                f"the workflow request does not fit the OA's WSDL: {exc.message}",
                [Issue(exc.path and "/".join(map(str, exc.path)) or "/", "wsdl", exc.message)],
                operation=operation,
            )
        if isinstance(exc, (zeep.exceptions.Error, etree.LxmlError, UnicodeError, ValueError)):
            return OaAmbiguous(
                f"{where} answered with something unreadable ({exc}); the call may have taken effect",
                operation=operation,
            )
        return exc  # a bug of ours: keep it as it is


def request_from_document(workflow_xml: bytes) -> dict[str, Any]:
    """A WorkflowRequest document (urn:archive-oa:oa-workflow:1) as the OA's wire value."""
    try:
        root = etree.fromstring(workflow_xml, _DOCUMENT_PARSER)
    except etree.XMLSyntaxError as exc:
        raise ValidationFailed(
            "the workflow document is not well-formed XML",
            [Issue("/", "well-formed", str(exc), getattr(exc, "lineno", None))],
        ) from exc
    if root.tag != _w("WorkflowRequest"):
        raise ValidationFailed(
            f"the workflow document's root is {root.tag}, expected {_w('WorkflowRequest')}",
            [Issue(f"/{etree.QName(root).localname}", "root-element", "produce a WorkflowRequest document (oa-workflow.xsd)")],
        )
    request: dict[str, Any] = {
        "workflowCode": _text(root, "workflowCode"),
        "title": _text(root, "title"),
        "creator": _text(root, "creator"),
        "level": int(_text(root, "level") or 0),
        "externalKey": _text(root, "externalKey"),
        "mainFields": {"field": _fields(root.find(_w("mainFields")))},
        "remark": _text(root, "remark"),
    }
    tables = root.find(_w("detailTables"))
    if tables is not None:
        request["detailTables"] = {
            "table": [
                {"name": table.get("name"), "row": [{"field": _fields(row)} for row in table.iterfind(_w("row"))]}
                for table in tables.iterfind(_w("table"))
            ]
        }
    attachments = root.find(_w("attachments"))
    if attachments is not None:
        request["attachments"] = {
            "attachment": [_attachment(a, i) for i, a in enumerate(attachments.iterfind(_w("attachment")), 1)]
        }
    return request

def _state(status: str, operation: str) -> WorkflowState:
    try:
        return _STATES[status]
    except KeyError:
        raise OaAmbiguous(
            f"the OA answered {operation} with unknown status {status!r}; expected one of {', '.join(_STATES)}",
            operation=operation,
        ) from None

def _approvals(logs) -> tuple[Approval, ...]:
    entries = (logs.log or ()) if logs is not None else ()
    return tuple(Approval(int(e.step), e.approver, e.action, e.comment, e.time) for e in entries)


def _map_fault(where: str, operation: str, exc: zeep.exceptions.Fault) -> OaError:
    code = (exc.code or "").strip()
    parts = code.rsplit(":", 1)[-1].split(".")
    message = exc.message or "no fault string"
    data = {"operation": operation, "fault_code": code}
    if any(part in _AUTH_FAULTS for part in parts):
        return OaAuthenticationFailed(
            f"{where} refused the credentials: {message}; fix [oa] user/password "
            "(ARCHIVE_OA_OA_USER, ARCHIVE_OA_OA_PASSWORD)",
            **data,
        )
    if parts[0] == "Client":
        return OaRejected(f"{where} refused the request: {message}", **data)
    if parts[0] == "Server":
        return OaServerFault(f"{where} failed: {message}", **data)
    # an HTTP error page that still parsed as XML, or a faultcode we do not know
    return OaAmbiguous(f"{where} answered with an unexpected fault {code or '(no code)'}: {message}", **data)


def _map_http_status(where: str, operation: str, exc: zeep.exceptions.TransportError) -> OaError:
    status = exc.status_code
    data = {"operation": operation, "http_status": status}
    if status in (401, 403):
        return OaAuthenticationFailed(f"{where} answered HTTP {status}: check [oa] user and password", **data)
    if status in (404, 503):
        # the request reached no OA service: wrong path, or the service is not running
        return OaUnreachable(f"{where} answered HTTP {status}: check [oa] url and that the OA service runs", **data)
    return OaAmbiguous(f"{where} answered HTTP {status} with content that is not a SOAP answer", **data)


class _SoapTransport(Transport):
    """zeep's transport, refusing HTTP answers that cannot be SOAP answers.

    SOAP 1.1 answers with 200 or, for a fault, 500.  zeep reads any other status as
    an "unknown fault" once the body parses as XML (an HTML error page often does),
    losing the status that tells what happened; this keeps it.
    """

    def post(self, address, message, headers):
        response = super().post(address, message, headers)
        if response.status_code not in (200, 202, 400, 500):
            raise zeep.exceptions.TransportError(
                f"HTTP {response.status_code}", status_code=response.status_code, content=response.content
            )
        return response


def _pooled_session(pool_size: int, url: str) -> requests.Session:
    session = requests.Session()
    # no automatic retries: a resent CreateWorkflowRequest would make a second request
    adapter = HTTPAdapter(pool_connections=1, pool_maxsize=max(1, pool_size), max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    # What requests reads from the environment on every call (proxies and NO_PROXY, ~/.netrc,
    # REQUESTS_CA_BUNDLE), read once for the one URL this session talks to: a quarter of
    # the HTTP client's time per call went to scanning os.environ and statting ~/.netrc.
    settings = session.merge_environment_settings(url, {}, None, None, None)  # requests' own rules
    session.auth = requests.utils.get_netrc_auth(url)
    session.trust_env = False
    session.proxies.update(settings["proxies"])
    session.verify = settings["verify"]
    return session


def _caused_by(exc: BaseException, kind: type) -> bool:
    seen = set()
    pending = [exc]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, kind):
            return True
        pending.extend([current.__cause__, current.__context__, getattr(current, "reason", None)])
        pending.extend(arg for arg in getattr(current, "args", ()) if isinstance(arg, BaseException))
    return False


def _reason(exc: BaseException) -> str:
    text = str(exc)
    return text if len(text) <= 300 else text[:300] + "…"


def _w(name: str) -> str:
    return f"{{{WORKFLOW_NAMESPACE}}}{name}"


def _text(element, name: str) -> str | None:
    child = element.find(_w(name))
    return child.text if child is not None else None


def _fields(container) -> list[dict[str, str | None]]:
    if container is None:
        return []
    return [{"name": _text(f, "name"), "value": _text(f, "value")} for f in container.iterfind(_w("field"))]


def _attachment(element, position: int) -> dict[str, Any]:
    value: dict[str, Any] = {"name": _text(element, "name"), "mimeType": _text(element, "mimeType")}
    content = _text(element, "content")
    if content is not None:
        try:
            value["content"] = base64.b64decode("".join(content.split()), validate=True)
        except binascii.Error as exc:
            raise ValidationFailed(
                f"attachment {position} ({value['name']}): content is not valid base64",
                [Issue(f"/WorkflowRequest/attachments/attachment[{position}]/content", "base64Binary", str(exc))],
            ) from exc
    url = _text(element, "url")
    if url is not None:
        value["url"] = url
    return value
