"""The spyne service implementing wsdl/legacy-oa-workflow.wsdl.

Each ``@rpc`` method turns wire objects into a ``RequestForm`` or a query, calls the
simulator database, and maps the records back.  Authentication (WS-Security
UsernameToken, PasswordText) is checked once per call by a ``method_call`` listener,
which also hands every method its per-request context (``ctx.udc``).
"""

from __future__ import annotations

import hmac
import time
from dataclasses import dataclass
from typing import Callable

from ... import compat  # noqa: F401  (before any spyne import)

from spyne import Application, Fault, Integer32, Long, ServiceBase, Unicode, rpc
from spyne.protocol.soap import Soap11

from .config import SimulatorConfig
from .db import AttachmentInfo, CompletedEntry, LogEntry, RequestForm, SimulatorDb, StoredRequest
from .wire import (
    NAMESPACE,
    ApprovalLog,
    ApprovalLogList,
    CompletedItem,
    CompletedItemList,
    DetailRow,
    DetailTable,
    DetailTableList,
    Field,
    FieldList,
    RequestIdList,
    WorkflowRequest,
    WorkflowRequestRecord,
)

WSSE_NS = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
PASSWORD_TEXT = (
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0#PasswordText"
)
MAX_FETCH = 1000


class AuthenticationFault(Fault):
    def __init__(self, message: str) -> None:
        super().__init__(faultcode="Client.Authentication", faultstring=message)


class NotFoundFault(Fault):
    def __init__(self, message: str) -> None:
        super().__init__(faultcode="Client.NotFound", faultstring=message)


class InvalidArgumentFault(Fault):
    def __init__(self, message: str) -> None:
        super().__init__(faultcode="Client.InvalidArgument", faultstring=message)


@dataclass(frozen=True)
class ServiceContext:
    """What every call needs: the database and the current switches."""

    db: SimulatorDb
    config: Callable[[], SimulatorConfig]


class WorkflowService(ServiceBase):
    @rpc(WorkflowRequest.customize(min_occurs=1, nillable=False), _returns=Long, _out_variable_name="requestId")
    def CreateWorkflowRequest(ctx, request):
        if request.level not in (None, 0, 1, 2):
            raise InvalidArgumentFault(f"level = {request.level}: use 0 (normal), 1 (important) or 2 (urgent)")
        form = _form_from_wire(request)
        decide_at = time.time() + ctx.udc.config().decide_after
        return ctx.udc.db.create(form, decide_at)

    @rpc(Long(min_occurs=1, nillable=False), _returns=WorkflowRequestRecord, _out_variable_name="request")
    def GetWorkflowRequest(ctx, requestId):
        stored = ctx.udc.db.get(requestId)
        if stored is None:
            raise NotFoundFault(f"workflow request {requestId} does not exist; check requestId")
        return _record_to_wire(stored)

    @rpc(Unicode(min_occurs=1, nillable=False), _returns=RequestIdList, _out_variable_name="requestIds")
    def FindWorkflowRequests(ctx, externalKey):
        return RequestIdList(requestId=ctx.udc.db.find(externalKey))

    @rpc(
        Long(min_occurs=1, nillable=False),
        Integer32(min_occurs=1, nillable=False),
        _returns=(CompletedItemList, Long),
        _out_variable_names=("items", "nextCursor"),
    )
    def FetchCompletedRequests(ctx, afterCursor, maxItems):
        if not 1 <= maxItems <= MAX_FETCH:
            raise InvalidArgumentFault(f"maxItems = {maxItems}: use a value from 1 to {MAX_FETCH}")
        entries = ctx.udc.db.fetch_completed(afterCursor, maxItems)
        next_cursor = entries[-1].cursor if entries else afterCursor
        return CompletedItemList(item=[_completed_to_wire(e) for e in entries]), next_cursor

    @rpc(Long(min_occurs=1, nillable=False), _returns=Integer32, _out_variable_name="acknowledged")
    def AcknowledgeCompleted(ctx, upToCursor):
        return ctx.udc.db.acknowledge(upToCursor)


def build_application(context: ServiceContext) -> Application:
    application = Application(
        [WorkflowService],
        tns=NAMESPACE,
        name="WorkflowService",
        # huge_tree: libxml2's 10 MB text-node cap would refuse an attachment the OA accepts
        # (bodies up to 20 MiB).  Every request has already passed safexml under the SOAP
        # message policy (faults.py: depth, text size, no DTD), so our own limits still hold.
        in_protocol=Soap11(validator="lxml", huge_tree=True),
        out_protocol=Soap11(),
    )

    def on_method_call(ctx) -> None:
        check_username_token(ctx.in_header_doc, context.config())
        ctx.udc = context

    application.event_manager.add_listener("method_call", on_method_call)
    return application


def check_username_token(header_elements, config: SimulatorConfig) -> None:
    """Raise AuthenticationFault unless the header carries the configured user and password."""
    token = None
    for element in header_elements or ():
        if element.tag == f"{{{WSSE_NS}}}Security":
            token = element.find(f"{{{WSSE_NS}}}UsernameToken")
            break
    if token is None:
        raise AuthenticationFault("WS-Security UsernameToken missing: send wsse:Security with a UsernameToken")
    user = token.findtext(f"{{{WSSE_NS}}}Username") or ""
    password_element = token.find(f"{{{WSSE_NS}}}Password")
    password = password_element.text or "" if password_element is not None else ""
    password_type = password_element.get("Type", PASSWORD_TEXT) if password_element is not None else ""
    if password_type != PASSWORD_TEXT:
        raise AuthenticationFault("only PasswordText UsernameTokens are accepted by this OA")
    # compare both always, in constant time, so the answer does not tell which one was wrong
    user_ok = hmac.compare_digest(user.encode(), config.user.encode())
    password_ok = hmac.compare_digest(password.encode(), config.password.encode())
    if not (user_ok and password_ok):
        raise AuthenticationFault(f"user {user!r} or its password was not accepted; check the OA account")


# --- wire <-> records ----------------------------------------------------------


def _fields(wire_list) -> tuple[tuple[str, str | None], ...]:
    return tuple((f.name, f.value) for f in (getattr(wire_list, "field", None) or ()))


def _form_from_wire(request) -> RequestForm:
    tables = tuple(
        (table.name, tuple(_fields(row) for row in (table.row or ())))
        for table in ((request.detailTables.table or ()) if request.detailTables else ())
    )
    attachments = tuple(
        AttachmentInfo(
            name=a.name,
            mime_type=a.mimeType,
            size=sum(len(chunk) for chunk in (a.content or ())),
            url=a.url,
        )
        for a in ((request.attachments.attachment or ()) if request.attachments else ())
    )
    return RequestForm(
        workflow_code=request.workflowCode,
        title=request.title,
        creator=request.creator,
        level=request.level or 0,
        external_key=request.externalKey,
        main_fields=_fields(request.mainFields),
        detail_tables=tables,
        attachments=attachments,
        remark=request.remark,
    )


def _logs_to_wire(logs: tuple[LogEntry, ...]) -> ApprovalLogList:
    return ApprovalLogList(
        log=[ApprovalLog(step=e.step, approver=e.approver, action=e.action, comment=e.comment, time=e.time) for e in logs]
    )


def _field_list(fields) -> list[Field]:
    return [Field(name=name, value=value) for name, value in fields]


def _record_to_wire(stored: StoredRequest) -> WorkflowRequestRecord:
    form = stored.form
    return WorkflowRequestRecord(
        requestId=stored.request_id,
        workflowCode=form.workflow_code,
        title=form.title,
        creator=form.creator,
        level=form.level,
        externalKey=form.external_key,
        mainFields=FieldList(field=_field_list(form.main_fields)),
        detailTables=DetailTableList(
            table=[
                DetailTable(name=name, row=[DetailRow(field=_field_list(row)) for row in rows])
                for name, rows in form.detail_tables
            ]
        ),
        remark=form.remark,
        status=stored.status,
        createdAt=stored.created_at,
        finishedAt=stored.finished_at,
        logs=_logs_to_wire(stored.logs),
    )


def _completed_to_wire(entry: CompletedEntry) -> CompletedItem:
    return CompletedItem(
        cursor=entry.cursor,
        requestId=entry.request_id,
        externalKey=entry.external_key,
        status=entry.status,
        finishedAt=entry.finished_at,
        logs=_logs_to_wire(entry.logs),
    )
