"""The gateway's SOAP operations (PRODUCT.md §4).

Each operation is one method, declared with its wire types, and answered one way,
declared beside it: ``@written`` operations (all of them, reads and writes) are read,
called and answered by the gateway itself (``answers.py``, its writer driven by these
declarations).  A method only translates: wire arguments → a domain command, one
service call, the result as the declared out message — complex values as dicts by wire
name, which the gateway's writer writes.  Its first argument is the ``GatewayCall``:
authentication, the role check, the organisation scope of the caller and the mapping of
errors to faults happen once, in ``perform_call``.
Argument names are the wire names (camelCase).
"""

from __future__ import annotations

import functools
import uuid
from typing import Callable, TypeVar

from .. import compat  # noqa: F401  (before any spyne import)

from spyne import Array, Boolean, ByteArray, DateTime, Integer, Long, Service, Unicode, rpc  # noqa: E402

from ..domain.model import VoucherQuery, WorkflowOutcome, WorkflowState  # noqa: E402
from ..errors import Unavailable  # noqa: E402
from ..services import audit as audit_service  # noqa: E402
from ..services.archive import ArchiveDocumentCommand  # noqa: E402
from ..services.call_audit import STARTED_KEY, CallAudit, client_address  # noqa: E402
from . import mapping  # noqa: E402
from . import types as wire  # noqa: E402
from .auth import authenticate_call, authorize, claim_from  # noqa: E402
from .context import CORRELATION_KEY, GatewayCall  # noqa: E402
from .faults import fault_from_error  # noqa: E402
from .streamed import FileContent  # noqa: E402

T = TypeVar("T")

#: Every operation declares the one fault it can answer with (WS-I: faults in the WSDL).
rpc = functools.partial(rpc, _throws=[wire.FaultDetail])  # noqa: F811
#: An operation answered by the gateway's own writer (``answers.py``) whatever the
#: request's shape; spyne's object model never touches its answer.
written = functools.partial(rpc, _udd={"written": True})


def is_written(descriptor) -> bool:
    """Whether the operation of ``descriptor`` (spyne's, from ``public_methods``) is ``@written``."""
    return bool(descriptor.udd.get("written"))


Opt = Unicode(min_occurs=0)
Req = wire.Required
IdList = Array(Unicode, member_name="id")
SummaryList = Array(wire.VoucherSummary, member_name="voucher")

#: The request arguments each operation's audit record names as its targets.
AUDIT_TARGETS = {
    "QueryVouchers": ("orgCode", "periodFrom", "periodTo"),
    "GetVoucher": ("voucherId",),
    "GetVoucherDocument": ("voucherId",),
    "GetAttachment": ("attachmentId",),
    "ArchiveDocument": ("orgCode", "sourceSystem", "sourceId", "oaRequestId"),
    "SubmitWorkflowResult": ("oaRequestId", "externalKey"),
    "TriggerSync": ("orgCode", "periodFrom", "periodTo", "voucherIds"),
    "GetSyncStatus": ("jobId",),
    "ReconcilePeriod": ("orgCode", "period"),
}


class GatewayService(Service):
    """Archive gateway for OA platforms / 会计电子档案对接 OA 平台的网关服务."""

    __service_name__ = "ArchiveGateway"

    @written(_returns=(Unicode, DateTime), _out_variable_names=("version", "serverTime"))
    def Ping(call):  # noqa: N802,N805
        """Liveness check, no credentials needed / 连通性检查，无需认证."""
        return call.services.version, call.services.clock()

    @written(
        Opt, wire.Period, wire.Period, Opt, Integer, Integer, wire.WorkflowStateType, Opt,
        wire.Amount, wire.Amount, Integer(min_occurs=1, nillable=False), Integer(min_occurs=1, nillable=False),
        _returns=(Long, Integer, Integer, SummaryList),
        _out_variable_names=("total", "page", "pageSize", "items"),
    )
    def QueryVouchers(call, orgCode, periodFrom, periodTo, voucherWord, voucherNoFrom, voucherNoTo,  # noqa: N802,N803,N805
                      state, keyword, amountMin, amountMax, page, pageSize):
        """Query vouchers in your organisation scope, page by page (pageSize 1-500)
        / 按条件分页查询凭证（仅限授权组织，每页 1-500 条）."""
        q = voucher_query(
            call.scope, orgCode=orgCode, periodFrom=periodFrom, periodTo=periodTo, voucherWord=voucherWord,
            voucherNoFrom=voucherNoFrom, voucherNoTo=voucherNoTo, state=state, keyword=keyword,
            amountMin=amountMin, amountMax=amountMax, page=page, pageSize=pageSize,
        )
        result = call.services.archive.query_vouchers(q)
        return result.total, result.page, result.page_size, [mapping.summary_fields(s) for s in result.items]

    @written(Req, _returns=wire.Voucher, _out_variable_name="voucher")
    def GetVoucher(call, voucherId):  # noqa: N802,N803,N805
        """A voucher with entries, attachment metadata, archive and workflow parts
        / 获取凭证：分录、附件信息、归档与审批信息."""
        return mapping.voucher_fields(call.services.archive.get_voucher(voucherId, call.scope))

    @written(Req, _returns=Unicode, _out_variable_name="document")
    def GetVoucherDocument(call, voucherId):  # noqa: N802,N803,N805
        """The canonical voucher XML (voucher.xsd, urn:archive-oa:voucher:1) as a string
        / 以字符串返回标准凭证 XML（符合 voucher.xsd）."""
        return call.services.archive.get_voucher_document(voucherId, call.scope)

    @written(
        Req,
        _returns=(Unicode, Unicode, Unicode, Long, Unicode, ByteArray),
        _out_variable_names=("attachmentId", "fileName", "mimeType", "size", "sha256", "content"),
    )
    def GetAttachment(call, attachmentId):  # noqa: N802,N803,N805
        """An attachment's bytes (base64Binary), checked against its sha256
        / 下载附件内容（base64Binary，已校验 sha256）."""
        # the blob checked and open, not read: the answer streams it (``streamed.py``)
        meta, file = call.services.archive.open_attachment(attachmentId, call.scope)
        return meta.attachment_id, meta.file_name, meta.mime_type, meta.size, meta.sha256, FileContent(file, meta.size)

    @written(
        Req, Req, wire.required(wire.DocTypeType), Req,
        wire.required(wire.Period), Req, wire.Amount, Opt,
        Array(wire.Field, member_name="field"), Array(wire.DocumentAttachment, member_name="attachment"),
        _returns=(Unicode, Unicode, Boolean),
        _out_variable_names=("archiveId", "archivalCode", "duplicate"),
    )
    def ArchiveDocument(call, sourceSystem, sourceId, docType, orgCode, period, title, amount,  # noqa: N802,N803,N805
                        oaRequestId, fields, attachments):
        """Archive an approved business document (报销单, 付款单, 合同, 报表) with its files;
        a repeat of (sourceSystem, sourceId) returns the first result with duplicate=true
        / 归档 OA 已审批单据及附件；同一来源单据重复提交返回首次结果（duplicate=true）."""
        cmd = ArchiveDocumentCommand(
            source_system=sourceSystem, source_id=sourceId, doc_type=docType, org_code=orgCode,
            period=period, title=title, amount=amount, oa_request_id=oaRequestId,
            fields=mapping.fields_from_wire(fields), attachments=mapping.files_from_wire(attachments),
            archived_by=call.principal.username,
        )
        result = call.services.archive.archive_document(cmd, call.scope)
        return result.archive_id, result.archival_code, result.duplicate

    @written(
        Opt, Opt, wire.required(wire.DecisionState),
        DateTime(min_occurs=1, nillable=False), Array(wire.Approval, member_name="approval"),
        _returns=(Boolean, Unicode, wire.WorkflowStateType, Boolean),
        _out_variable_names=("accepted", "voucherId", "voucherState", "duplicate"),
    )
    def SubmitWorkflowResult(call, oaRequestId, externalKey, state, finishedAt, approvals):  # noqa: N802,N803,N805
        """The OA reports a decision (APPROVED / REJECTED / WITHDRAWN) with its approval
        trail; name the request by oaRequestId or externalKey; repeats change nothing
        / OA 回写审批结果及审批记录；重复提交不产生变化."""
        outcome = WorkflowOutcome(
            state=WorkflowState(state), finished_at=finishedAt,
            approvals=mapping.approvals_from_wire(approvals),
            oa_request_id=oaRequestId, external_key=externalKey,
        )
        result = call.services.archive.submit_workflow_result(outcome, call.scope)
        state_out = result.voucher_state.value if result.voucher_state else None
        return result.accepted, result.voucher_id, state_out, result.duplicate

    @written(Opt, wire.Period, wire.Period, IdList, _returns=(Unicode, Integer), _out_variable_names=("jobId", "queued"))
    def TriggerSync(call, orgCode, periodFrom, periodTo, voucherIds):  # noqa: N802,N803,N805
        """Queue vouchers for delivery to the OA now (manual sync)
        / 手动触发同步：将凭证加入待推送队列."""
        result = _sync(call).trigger(
            org_code=orgCode, period_from=periodFrom, period_to=periodTo,
            voucher_ids=list(voucherIds) if voucherIds else None, org_codes=call.scope,
        )
        return result.job_id, result.queued

    @written(
        Opt,
        _returns=(Unicode, Unicode, Integer, Integer, Integer, Integer, DateTime, DateTime),
        _out_variable_names=("jobId", "state", "queued", "delivered", "failed", "dead", "startedAt", "finishedAt"),
    )
    def GetSyncStatus(call, jobId):  # noqa: N802,N803,N805
        """Progress of a sync job (the latest when jobId is empty)
        / 查询同步任务进度（不填 jobId 则为最近一次）."""
        s = _sync(call).status(jobId or None, org_codes=call.scope)
        state = getattr(s.state, "value", s.state)
        return s.job_id, state, s.queued, s.delivered, s.failed, s.dead, s.started_at, s.finished_at

    @written(
        Req, wire.required(wire.Period),
        _returns=(Unicode, Unicode, Integer, Integer, Integer, IdList, IdList,
                  Array(wire.StateMismatch, member_name="mismatch")),
        _out_variable_names=("orgCode", "period", "missingCount", "orphanedCount", "mismatchCount",
                             "missingInOa", "orphanedInOa", "stateMismatches"),
    )
    def ReconcilePeriod(call, orgCode, period):  # noqa: N802,N803,N805
        """Compare archive and OA for one organisation and period
        / 对账：比较档案系统与 OA 中某组织某期间的凭证."""
        r = _sync(call).reconcile(orgCode, period, org_codes=call.scope)
        mismatches = [
            dict(voucherId=m.voucher_id, archiveState=getattr(m.archive_state, "value", m.archive_state),
                 oaState=getattr(m.oa_state, "value", m.oa_state), oaRequestId=m.oa_request_id)
            for m in r.state_mismatches
        ]
        return (orgCode, period, len(r.missing_in_oa), len(r.orphaned_in_oa), len(mismatches),
                list(r.missing_in_oa), list(r.orphaned_in_oa), mismatches)


def perform_call(services, environ, operation: str, arguments, header_elements,
                 run: Callable[[GatewayCall], T]) -> T:
    """One operation call with everything around it: authentication, the role and scope
    check, the call's audit record (committed with any change ``run`` makes) and every
    error turned into a ``GatewayFault`` (raised).  The gateway's answers
    (``answers.py``) call it for every operation, so the rules live once.

    ``arguments`` answers ``get(wire_name)``; ``header_elements`` are the SOAP Header's
    children (None without a Header), where a UsernameToken would be."""
    correlation_id = environ.get(CORRELATION_KEY) or uuid.uuid4().hex
    claim = claim_from(environ, header_elements)  # read once: the audit's actor, then authentication
    audit = CallAudit(
        services.store, operation=operation, source=client_address(environ), correlation_id=correlation_id,
        targets=audit_service.targets_from(arguments, AUDIT_TARGETS.get(operation, ())),
        actor=claim.username, clock=services.clock,
        started=environ.get(STARTED_KEY), metrics=services.metrics,
    )
    audit.details["authenticated"] = False  # until proven: the actor is only the name claimed
    try:
        principal = authenticate_call(operation, services.authenticator, environ, claim)
        audit.actor = principal.username
        del audit.details["authenticated"]
        authorize(operation, principal, arguments)
        with audit.watching():  # a change the call makes commits with its audit record
            result = run(GatewayCall(operation, principal, services, correlation_id))
        audit.succeeded()
        return result
    except Exception as exc:  # every error leaves as a fault with a stable code
        fault = fault_from_error(exc, correlation_id)
        audit.failed(fault.gateway_code)
        raise fault from None


def voucher_query(scope: frozenset[str] | None, *, orgCode=None, periodFrom=None, periodTo=None,  # noqa: N803
                  voucherWord=None, voucherNoFrom=None, voucherNoTo=None, state=None, keyword=None,
                  amountMin=None, amountMax=None, page=None, pageSize=None) -> VoucherQuery:
    """QueryVouchers' arguments (wire names) as the domain's query within ``scope``."""
    return VoucherQuery(
        org_code=orgCode, period_from=periodFrom, period_to=periodTo, voucher_word=voucherWord,
        voucher_no_from=voucherNoFrom, voucher_no_to=voucherNoTo,
        state=WorkflowState(state) if state else None, keyword=keyword,
        amount_min=amountMin, amount_max=amountMax, page=page, page_size=pageSize,
        org_codes=scope,
    )


def _sync(call):
    sync = call.services.sync
    if sync is None:
        raise Unavailable("the sync engine is not running in this gateway; use archive-oa serve")
    return sync

