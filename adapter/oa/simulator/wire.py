"""spyne wire types of wsdl/legacy-oa-workflow.wsdl.

Field names, order and namespace follow the hand-written WSDL, because the adapter's
zeep client speaks that WSDL to this service.  ``_type_info`` is a list so the
element order is explicit.  These are wire types only; the database has its own
records (``db.py``).
"""

from __future__ import annotations

from ... import compat  # noqa: F401  (before any spyne import)

from spyne import ByteArray, ComplexModel, DateTime, Integer32, Long, Unicode, XmlAttribute

NAMESPACE = "urn:legacy-oa:workflow:1"

Status = Unicode(
    values=["IN_PROGRESS", "APPROVED", "REJECTED", "WITHDRAWN"], type_name="WorkflowStatus", __namespace__=NAMESPACE
)


class _Wire(ComplexModel):
    __namespace__ = NAMESPACE


class Field(_Wire):
    _type_info = [("name", Unicode(min_occurs=1)), ("value", Unicode)]


class FieldList(_Wire):
    _type_info = [("field", Field.customize(max_occurs="unbounded"))]


class DetailRow(_Wire):
    _type_info = [("field", Field.customize(max_occurs="unbounded"))]


class DetailTable(_Wire):
    _type_info = [
        ("row", DetailRow.customize(max_occurs="unbounded")),
        ("name", XmlAttribute(Unicode(min_occurs=1))),
    ]


class DetailTableList(_Wire):
    _type_info = [("table", DetailTable.customize(max_occurs="unbounded"))]


class Attachment(_Wire):
    _type_info = [
        ("name", Unicode(min_occurs=1)),
        ("mimeType", Unicode),
        ("content", ByteArray),
        ("url", Unicode),
    ]


class AttachmentList(_Wire):
    _type_info = [("attachment", Attachment.customize(max_occurs="unbounded"))]


class WorkflowRequest(_Wire):
    _type_info = [
        ("workflowCode", Unicode(min_occurs=1)),
        ("title", Unicode(min_occurs=1)),
        ("creator", Unicode(min_occurs=1)),
        ("level", Integer32),  # 0..2, checked by the service (a facet would rename the type)
        ("externalKey", Unicode),
        ("mainFields", FieldList.customize(min_occurs=1)),
        ("detailTables", DetailTableList),
        ("attachments", AttachmentList),
        ("remark", Unicode),
    ]


class ApprovalLog(_Wire):
    _type_info = [
        ("step", Integer32(min_occurs=1)),
        ("approver", Unicode(min_occurs=1)),
        ("action", Unicode(min_occurs=1)),
        ("comment", Unicode),
        ("time", DateTime(min_occurs=1)),
    ]


class ApprovalLogList(_Wire):
    _type_info = [("log", ApprovalLog.customize(max_occurs="unbounded"))]


class WorkflowRequestRecord(_Wire):
    _type_info = [
        ("requestId", Long(min_occurs=1)),
        ("workflowCode", Unicode(min_occurs=1)),
        ("title", Unicode(min_occurs=1)),
        ("creator", Unicode(min_occurs=1)),
        ("level", Integer32),
        ("externalKey", Unicode),
        ("mainFields", FieldList),
        ("detailTables", DetailTableList),
        ("remark", Unicode),
        ("status", Status),  # customising would make spyne rename the type
        ("createdAt", DateTime(min_occurs=1)),
        ("finishedAt", DateTime),
        ("logs", ApprovalLogList),
    ]


class RequestIdList(_Wire):
    _type_info = [("requestId", Long(max_occurs="unbounded"))]


class CompletedItem(_Wire):
    _type_info = [
        ("cursor", Long(min_occurs=1)),
        ("requestId", Long(min_occurs=1)),
        ("externalKey", Unicode),
        ("status", Status),  # customising would make spyne rename the type
        ("finishedAt", DateTime(min_occurs=1)),
        ("logs", ApprovalLogList),
    ]


class CompletedItemList(_Wire):
    _type_info = [("item", CompletedItem.customize(max_occurs="unbounded"))]
