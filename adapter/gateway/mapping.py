"""Domain objects ⇄ wire types.  Pure translation, no decisions."""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Iterable

from .. import compat  # noqa: F401  (before any spyne import)

from ..domain import model  # noqa: E402
from ..services.archive import NewFile  # noqa: E402
from . import types as wire  # noqa: E402

_CENTS = Decimal("0.01")


def amount(value: Decimal | None) -> Decimal | None:
    return None if value is None else Decimal(value).quantize(_CENTS)


def plain(value: Decimal | None) -> Decimal | None:
    """xs:decimal has no exponent: ``Decimal("1E+1")`` must go out as ``10``."""
    return None if value is None else Decimal(format(Decimal(value), "f"))


def summary_fields(s: model.VoucherSummary) -> dict[str, Any]:
    return dict(
        voucherId=s.voucher_id,
        orgCode=s.org_code,
        period=s.period,
        voucherWord=s.voucher_word,
        voucherNo=s.voucher_no,
        date=s.date,
        summary=s.summary,
        totalAmount=amount(s.total_amount),
        attachmentCount=s.attachment_count,
        state=_value(s.state),
        archivalCode=s.archival_code,
    )


def voucher_fields(v: model.Voucher) -> dict[str, Any]:
    """The voucher by wire name (nested parts as dicts and lists of dicts), as the
    ``wire.Voucher`` value of ``GetVoucher``'s answer."""
    return dict(
        voucherId=v.voucher_id,
        orgCode=v.org_code,
        orgName=v.org_name,
        fondsCode=v.fonds_code,
        fiscalYear=v.fiscal_year,
        period=v.period,
        voucherWord=v.voucher_word,
        voucherNo=v.voucher_no,
        date=v.date,
        currency=v.currency,
        attachmentCount=v.attachment_count,
        preparer=v.preparer,
        reviewer=v.reviewer,
        bookkeeper=v.bookkeeper,
        cashier=v.cashier,
        summary=v.summary,
        totalAmount=amount(v.total_amount),
        entries=[_entry(e) for e in v.entries],
        attachments=[_attachment(a) for a in v.attachments],
        archive=_archive(v.archive) if v.archive else None,
        workflow=_workflow(v.workflow) if v.workflow else None,
    )


def _entry(e: model.Entry) -> dict[str, Any]:
    return dict(
        lineNo=e.line_no,
        summary=e.summary,
        accountCode=e.account_code,
        accountName=e.account_name,
        debit=amount(e.debit),
        credit=amount(e.credit),
        currency=e.currency,
        exchangeRate=plain(e.exchange_rate),
        originalAmount=amount(e.original_amount),
        auxiliary=[dict(type=a.type, code=a.code, name=a.name) for a in e.auxiliary] or None,
    )


def _attachment(a: model.AttachmentMeta) -> dict[str, Any]:
    return dict(
        attachmentId=a.attachment_id,
        fileName=a.file_name,
        mimeType=a.mime_type,
        size=a.size,
        sha256=a.sha256,
        kind=_value(a.kind),
        invoiceNumber=a.invoice_number,
    )


def _archive(a: model.ArchiveInfo) -> dict[str, Any]:
    return dict(
        archivalCode=a.archival_code,
        category=a.category,
        retention=_value(a.retention),
        archivedAt=a.archived_at,
    )


def _workflow(w: model.WorkflowInfo) -> dict[str, Any]:
    return dict(
        state=_value(w.state),
        oaRequestId=w.oa_request_id,
        decidedAt=w.decided_at,
        approvals=[_approval(a) for a in w.approvals],
    )


def _approval(a: model.Approval) -> dict[str, Any]:
    return dict(step=a.step, approver=a.approver, action=a.action, comment=a.comment, time=a.time)


def approvals_from_wire(items: Iterable[wire.Approval] | None) -> tuple[model.Approval, ...]:
    return tuple(
        model.Approval(step=a.step, approver=a.approver, action=a.action, comment=a.comment, time=a.time)
        for a in items or ()
    )


def fields_from_wire(items: Iterable[wire.Field] | None) -> tuple[tuple[str, str | None], ...]:
    return tuple((f.name, f.value) for f in items or ())


def files_from_wire(items: Iterable[wire.DocumentAttachment] | None) -> tuple[NewFile, ...]:
    return tuple(NewFile(a.fileName, a.mimeType, binary(a.content)) for a in items or ())


def binary(value) -> bytes:
    """spyne hands xs:base64Binary over as a sequence of byte chunks."""
    if value is None:
        return b""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    return b"".join(value)


def decimal_or_none(value) -> Decimal | None:
    return None if value is None else Decimal(value)


def _value(item) -> str | None:
    return None if item is None else getattr(item, "value", item)
