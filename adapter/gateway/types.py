"""Wire types of the gateway (namespace ``urn:archive-oa:gateway:1``).

These are the SOAP contract, kept apart from the domain and the tables: a change here
changes the checked-in WSDL.  Field order is fixed (``_type_info`` as a list) because
the order of elements in an xs:sequence is part of the contract.  Amounts are
xs:decimal with at most 2 fraction digits, carried as ``Decimal`` — never float.
"""

from __future__ import annotations

from .. import compat  # noqa: F401  (before any spyne import)

from spyne.model.fault import Fault  # noqa: E402
from spyne import (  # noqa: E402
    Array,
    Boolean,
    ByteArray,
    ComplexModel,
    Date,
    DateTime,
    Decimal,
    Integer,
    Long,
    Unicode,
)

NAMESPACE = "urn:archive-oa:gateway:1"

# --- simple types with their facets (named, so clients see one definition) -----

def _named(base, type_name: str, **facets):
    """A restricted simple type published once, by name, in the gateway namespace."""
    return base.customize(type_name=type_name, __namespace__=NAMESPACE, **facets)


Period = _named(Unicode, "Period", max_len=7, pattern=r"\d{4}-(0[1-9]|1[0-2])")
#: Money: xs:decimal, at most 18 integer and 2 fraction digits.
Amount = _named(Decimal, "Amount", total_digits=20, fraction_digits=2)
WorkflowStateType = _named(
    Unicode, "WorkflowState", values=["NONE", "QUEUED", "SUBMITTED", "APPROVED", "REJECTED", "WITHDRAWN"]
)
DecisionState = _named(Unicode, "DecisionState", values=["APPROVED", "REJECTED", "WITHDRAWN"])
DocTypeType = _named(Unicode, "DocType", values=["EXPENSE_CLAIM", "PAYMENT", "CONTRACT", "REPORT", "OTHER"])
NonEmptyString = _named(Unicode, "NonEmptyString", min_len=1)


def required(simple_type):
    """The same named simple type as a mandatory element (minOccurs=1, not nillable)."""
    return simple_type.customize(
        min_occurs=1, nillable=False, type_name=simple_type.get_type_name(), __namespace__=NAMESPACE
    )


Required = required(NonEmptyString)


class _Wire(ComplexModel):
    __namespace__ = NAMESPACE


# --- QueryVouchers --------------------------------------------------------------


class VoucherSummary(_Wire):
    _type_info = [
        ("voucherId", Unicode),
        ("orgCode", Unicode),
        ("period", Period),
        ("voucherWord", Unicode),
        ("voucherNo", Integer),
        ("date", Date),
        ("summary", Unicode),
        ("totalAmount", Amount),
        ("attachmentCount", Integer),
        ("state", WorkflowStateType),
        ("archivalCode", Unicode),
    ]


# --- GetVoucher -------------------------------------------------------------------


class AuxiliaryItem(_Wire):
    """辅助核算: type is dept, project, customer, supplier, employee or other."""

    _type_info = [("type", Unicode), ("code", Unicode), ("name", Unicode)]


class Entry(_Wire):
    """One line (分录) of a voucher."""

    _type_info = [
        ("lineNo", Integer),
        ("summary", Unicode),
        ("accountCode", Unicode),
        ("accountName", Unicode),
        ("debit", Amount),
        ("credit", Amount),
        ("currency", Unicode),
        ("exchangeRate", Decimal),
        ("originalAmount", Amount),
        ("auxiliary", Array(AuxiliaryItem, member_name="item")),
    ]


class AttachmentInfo(_Wire):
    _type_info = [
        ("attachmentId", Unicode),
        ("fileName", Unicode),
        ("mimeType", Unicode),
        ("size", Long),
        ("sha256", Unicode),
        ("kind", Unicode),
        ("invoiceNumber", Unicode),
    ]


class ArchiveInfo(_Wire):
    """档号, category (会计凭证 / 会计账簿 / 财务会计报告 / 其他), retention (保管期限)."""

    _type_info = [
        ("archivalCode", Unicode),
        ("category", Unicode),
        ("retention", Unicode),
        ("archivedAt", DateTime),
    ]


class Approval(_Wire):
    """One step of the approval trail (审批记录)."""

    _type_info = [
        ("step", Integer(min_occurs=1, nillable=False)),
        ("approver", Required),
        ("action", Required),
        ("comment", Unicode),
        ("time", DateTime(min_occurs=1, nillable=False)),
    ]


class WorkflowInfo(_Wire):
    _type_info = [
        ("state", WorkflowStateType),
        ("oaRequestId", Unicode),
        ("decidedAt", DateTime),
        ("approvals", Array(Approval, member_name="approval")),
    ]


class Voucher(_Wire):
    """会计凭证: header, entries, attachment metadata, archive and workflow parts."""

    _type_info = [
        ("voucherId", Unicode),
        ("orgCode", Unicode),
        ("orgName", Unicode),
        ("fondsCode", Unicode),
        ("fiscalYear", Integer),
        ("period", Period),
        ("voucherWord", Unicode),
        ("voucherNo", Integer),
        ("date", Date),
        ("currency", Unicode),
        ("attachmentCount", Integer),
        ("preparer", Unicode),
        ("reviewer", Unicode),
        ("bookkeeper", Unicode),
        ("cashier", Unicode),
        ("summary", Unicode),
        ("totalAmount", Amount),
        ("entries", Array(Entry, member_name="entry")),
        ("attachments", Array(AttachmentInfo, member_name="attachment")),
        ("archive", ArchiveInfo),
        ("workflow", WorkflowInfo),
    ]


# --- ArchiveDocument --------------------------------------------------------------


class Field(_Wire):
    """A name/value field of the OA form (表单字段)."""

    _type_info = [("name", Required), ("value", Unicode)]


class DocumentAttachment(_Wire):
    _type_info = [
        ("fileName", Required),
        ("mimeType", Required),
        ("content", ByteArray(min_occurs=1, nillable=False)),
    ]


# --- ReconcilePeriod ---------------------------------------------------------------


class StateMismatch(_Wire):
    _type_info = [
        ("voucherId", Unicode),
        ("archiveState", Unicode),
        ("oaState", Unicode),
        ("oaRequestId", Unicode),
    ]


# --- faults (documentation of soap:Fault/detail; raised as faults.GatewayFault) ------------


class FaultIssue(_Wire):
    """One failing place of a Validation fault."""

    _type_info = [("place", Unicode), ("rule", Unicode), ("message", Unicode), ("line", Integer)]


class FaultDetail(Fault):
    """What every fault of the gateway carries in soap:Fault/detail: a stable ``code``
    (Authentication, AccessDenied, Validation, NotFound, Conflict, RequestTooLarge,
    Unavailable, Internal), a ``message`` saying what to fix, the ``correlationId``
    and, for Validation, the ``issues`` with their place."""

    __namespace__ = NAMESPACE
    __type_name__ = "GatewayFault"
    _type_info = [
        ("code", Unicode),
        ("message", Unicode),
        ("correlationId", Unicode),
        ("issues", Array(FaultIssue, member_name="issue")),
    ]


__all__ = [
    "NAMESPACE",
    "Amount",
    "Approval",
    "ArchiveInfo",
    "AttachmentInfo",
    "AuxiliaryItem",
    "Boolean",
    "DecisionState",
    "DocTypeType",
    "DocumentAttachment",
    "Entry",
    "FaultDetail",
    "FaultIssue",
    "Field",
    "Period",
    "Required",
    "StateMismatch",
    "Voucher",
    "VoucherSummary",
    "WorkflowInfo",
    "WorkflowStateType",
]
