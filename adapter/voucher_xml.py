"""The codec between canonical voucher XML (voucher.xsd) and the domain ``Voucher``.

Amounts are ``Decimal`` both ways, never float; nothing is rounded on the way out, so a
value the schema would refuse is written as it is and refused by validation, not hidden.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Mapping

from lxml import etree

from .domain.delivery import content_hash, idempotency_key
from .domain.model import (
    Approval,
    ArchiveInfo,
    AttachmentKind,
    AttachmentMeta,
    AuxiliaryItem,
    Entry,
    Retention,
    Voucher,
    WorkflowInfo,
    WorkflowState,
)
from .errors import Issue, ValidationFailed
from .safexml import parse_bytes
from .transforms.pipeline import VOUCHER_NS, element_path

_NS = f"{{{VOUCHER_NS}}}"
_CENT = Decimal("0.01")


@dataclass(frozen=True)
class ParsedVoucher:
    voucher: Voucher
    embedded: dict[str, bytes] = field(default_factory=dict)  # attachment id -> bytes
    line: int | None = None  # where the Voucher element starts in its file
    place: str = "/Voucher"  # its path in the document, e.g. /Vouchers/Voucher[3]


# --- XML → domain ---------------------------------------------------------------------


def parse_vouchers(data: bytes, source: str, transforms) -> list[ParsedVoucher]:
    """Validate a ``Voucher`` or ``Vouchers`` document and decode every voucher in it.

    All or nothing: any failing place refuses the whole document (``ValidationFailed``).
    Embedded attachment content must match its declared size and sha256.
    """
    root = parse_bytes(data, source=source).getroot()
    transforms.validate_voucher(root, source=source)
    batch = root.tag != _NS + "Voucher"
    elements = list(root.iterchildren(_NS + "Voucher")) if batch else [root]
    parsed, issues, seen_attachments = [], [], {}
    for index, element in enumerate(elements, start=1):
        # element_path would say the same, at the cost of a sibling scan per voucher of a batch
        place = "/Voucher"
        if batch:
            place = f"/Vouchers/Voucher[{index}]" if len(elements) > 1 else "/Vouchers/Voucher"
        voucher, embedded = voucher_from_element(element)
        issues.extend(_check_embedded(element, voucher, embedded, source))
        for meta in voucher.attachments:
            if meta.attachment_id in seen_attachments:
                issues.append(Issue(
                    element_path(element), "unique-attachment-id",
                    f"attachmentId {meta.attachment_id!r} of voucher {voucher.voucher_id} is also used by "
                    f"voucher {seen_attachments[meta.attachment_id]}; give each attachment its own id",
                    element.sourceline, source,
                ))
            seen_attachments[meta.attachment_id] = voucher.voucher_id
        parsed.append(ParsedVoucher(voucher, embedded, element.sourceline, place))
    if issues:
        raise ValidationFailed(f"{source}: {issues[0].place}: {issues[0].message}", issues)
    return parsed


def voucher_from_element(element: etree._Element) -> tuple[Voucher, dict[str, bytes]]:
    """Decode one schema-valid ``Voucher`` element (validate first: this trusts the structure)."""
    parts = _children(element)
    embedded: dict[str, bytes] = {}
    attachments = []
    if "attachments" in parts:
        for node in parts["attachments"]:
            meta, content = _attachment(node)
            attachments.append(meta)
            if content is not None:
                embedded[meta.attachment_id] = content
    voucher = Voucher(
        voucher_id=_text(parts["voucherId"]),
        org_code=_token(parts["orgCode"]),
        org_name=_text(parts["orgName"]),
        fonds_code=_token(parts["fondsCode"]),
        fiscal_year=int(_text(parts["fiscalYear"])),
        period=_text(parts["period"]),
        voucher_word=_token(parts["voucherWord"]),
        voucher_no=int(_text(parts["voucherNo"])),
        date=_date(_text(parts["date"])),
        currency=_optional(parts, "currency") or "CNY",
        attachment_count=int(_text(parts["attachmentCount"])),
        preparer=_token(parts["preparer"]),
        reviewer=_optional(parts, "reviewer", _token),
        bookkeeper=_optional(parts, "bookkeeper", _token),
        cashier=_optional(parts, "cashier", _token),
        summary=_optional(parts, "summary"),
        entries=tuple(_entry(node) for node in parts["entries"]),
        attachments=tuple(attachments),
        archive=_archive(parts["archive"]) if "archive" in parts else None,
        workflow=_workflow(parts["workflow"]) if "workflow" in parts else None,
    )
    return voucher, embedded


def _children(element: etree._Element) -> dict[str, etree._Element]:
    return {etree.QName(child).localname: child for child in element if isinstance(child.tag, str)}


def _text(element: etree._Element) -> str:
    return (element.text or "").strip()


_XML_SPACE_RUN = re.compile(r"[ \t\r\n]+")


def _collapse(text: str | None) -> str:
    """An xs:token's value: XML whitespace runs become one space, none at the ends.

    The schema measures a token's length after this collapse, so storing the raw text
    could overflow the column the schema was sized for.  Only XML's four whitespace
    characters count: an ideographic space (U+3000) in a name is content."""
    return _XML_SPACE_RUN.sub(" ", text or "").strip(" ")


def _token(element: etree._Element) -> str:
    return _collapse(element.text)


def _optional(parts: dict, name: str, read=_text) -> str | None:
    node = parts.get(name)
    return read(node) if node is not None else None


def _decimal(text: str) -> Decimal:
    try:
        return Decimal(text.strip())
    except InvalidOperation as exc:  # the schema makes this unreachable for valid input
        raise ValueError(f"{text!r} is not a decimal") from exc


def _date(text: str) -> dt.date:
    return dt.date.fromisoformat(text[:10])  # xs:date may carry a zone: the day is what counts


def _datetime(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


def _entry(node: etree._Element) -> Entry:
    parts = _children(node)
    auxiliary = ()
    if "auxiliary" in parts:
        auxiliary = tuple(
            AuxiliaryItem(item.get("type"), _collapse(item.get("code")), _text(item)) for item in parts["auxiliary"]
        )
    rate = _optional(parts, "exchangeRate")
    original = _optional(parts, "originalAmount")
    return Entry(
        line_no=int(_text(parts["lineNo"])),
        summary=_text(parts["summary"]),
        account_code=_text(parts["accountCode"]),
        account_name=_text(parts["accountName"]),
        debit=_decimal(_text(parts["debit"])),
        credit=_decimal(_text(parts["credit"])),
        currency=_optional(parts, "currency"),
        exchange_rate=_decimal(rate) if rate is not None else None,
        original_amount=_decimal(original) if original is not None else None,
        auxiliary=auxiliary,
    )


def _attachment(node: etree._Element) -> tuple[AttachmentMeta, bytes | None]:
    parts = _children(node)
    content = None
    if "content" in parts:
        content = base64.b64decode("".join((parts["content"].text or "").split()))
    meta = AttachmentMeta(
        attachment_id=_text(parts["attachmentId"]),
        file_name=_text(parts["fileName"]),
        mime_type=_text(parts["mimeType"]),
        size=int(_text(parts["size"])),
        sha256=_text(parts["sha256"]),
        kind=AttachmentKind(_text(parts["kind"])),
        invoice_number=_optional(parts, "invoiceNumber", _token),
    )
    return meta, content


def _archive(node: etree._Element) -> ArchiveInfo:
    parts = _children(node)
    retention = _optional(parts, "retention")
    archived = _optional(parts, "archivedAt")
    return ArchiveInfo(
        archival_code=_optional(parts, "archivalCode"),
        category=_optional(parts, "category"),
        retention=Retention(retention) if retention else None,
        archived_at=_datetime(archived) if archived else None,
    )


def _workflow(node: etree._Element) -> WorkflowInfo:
    parts = _children(node)
    decided = _optional(parts, "decidedAt")
    approvals = ()
    if "approvals" in parts:
        approvals = tuple(_approval(item) for item in parts["approvals"])
    return WorkflowInfo(
        state=WorkflowState(_text(parts["state"])),
        oa_request_id=_optional(parts, "oaRequestId", _token),
        decided_at=_datetime(decided) if decided else None,
        approvals=approvals,
    )


def _approval(node: etree._Element) -> Approval:
    parts = _children(node)
    comment = parts.get("comment")
    return Approval(
        step=int(_text(parts["step"])),
        approver=_token(parts["approver"]),
        action=_token(parts["action"]),
        comment=(comment.text or "") if comment is not None else None,
        time=_datetime(_text(parts["time"])),
    )


def _check_embedded(element, voucher: Voucher, embedded: dict[str, bytes], source: str) -> list[Issue]:
    issues = []
    for index, meta in enumerate(voucher.attachments):
        content = embedded.get(meta.attachment_id)
        if content is None:
            continue
        node = element.find(f"{_NS}attachments")[index].find(_NS + "content")
        digest = hashlib.sha256(content).hexdigest()
        if len(content) != meta.size or digest != meta.sha256:
            issues.append(Issue(
                element_path(node), "attachment-integrity",
                f"embedded content of attachment {meta.attachment_id} is {len(content)} bytes with sha256 "
                f"{digest}, but size {meta.size} and sha256 {meta.sha256} are declared; "
                "send the right file or correct size and sha256",
                node.sourceline, source,
            ))
    return issues


# --- domain → XML ---------------------------------------------------------------------


def voucher_to_xml(
    voucher: Voucher,
    contents: Mapping[str, bytes] | None = None,
    *,
    include_workflow: bool = True,
    include_archive: bool = True,
) -> bytes:
    """The canonical XML of one voucher (UTF-8 with declaration), valid against voucher.xsd.

    ``contents`` maps attachment ids to bytes to embed as base64 ``content``.
    """
    element = voucher_to_element(
        voucher, contents, include_workflow=include_workflow, include_archive=include_archive
    )
    return etree.tostring(element, encoding="UTF-8", xml_declaration=True)


def vouchers_to_xml(vouchers, contents: Mapping[str, bytes] | None = None, *, pretty: bool = False) -> bytes:
    """A ``Vouchers`` batch document."""
    root = etree.Element(_NS + "Vouchers", nsmap={None: VOUCHER_NS})
    for voucher in vouchers:
        root.append(voucher_to_element(voucher, contents))
    if pretty:
        etree.indent(root, space="  ")
    return etree.tostring(root, encoding="UTF-8", xml_declaration=True)


def voucher_to_element(
    voucher: Voucher,
    contents: Mapping[str, bytes] | None = None,
    *,
    include_workflow: bool = True,
    include_archive: bool = True,
) -> etree._Element:
    """Like :func:`voucher_to_xml` but the tree itself (no serialise/parse round trip)."""
    root = etree.Element(_NS + "Voucher", nsmap={None: VOUCHER_NS})
    add = _Adder(root)
    add("voucherId", voucher.voucher_id)
    add("orgCode", voucher.org_code)
    add("orgName", voucher.org_name)
    add("fondsCode", voucher.fonds_code)
    add("fiscalYear", str(voucher.fiscal_year))
    add("period", voucher.period)
    add("voucherWord", voucher.voucher_word)
    add("voucherNo", str(voucher.voucher_no))
    add("date", voucher.date.isoformat())
    add("currency", voucher.currency or "CNY")
    add("attachmentCount", str(voucher.attachment_count))
    add("preparer", voucher.preparer)
    add("reviewer", voucher.reviewer)
    add("bookkeeper", voucher.bookkeeper)
    add("cashier", voucher.cashier)
    add("summary", voucher.summary)
    entries = etree.SubElement(root, _NS + "entries")
    for entry in voucher.entries:
        _add_entry(entries, entry)
    if voucher.attachments:
        attachments = etree.SubElement(root, _NS + "attachments")
        for meta in voucher.attachments:
            content = contents.get(meta.attachment_id) if contents else None
            _add_attachment(attachments, meta, content)
    if include_archive and voucher.archive is not None:
        _add_archive(root, voucher.archive)
    if include_workflow and voucher.workflow is not None:
        _add_workflow(root, voucher.workflow)
    return root


class _Adder:
    """Appends ``<name>text</name>`` children, skipping absent optional values."""

    def __init__(self, parent: etree._Element) -> None:
        self.parent = parent

    def __call__(self, name: str, value: str | None) -> etree._Element | None:
        if value is None:
            return None
        child = etree.SubElement(self.parent, _NS + name)
        child.text = value
        return child


def amount_text(value: Decimal) -> str:
    """``Decimal`` → ``123.40``: two places when that is exact, else every digit it has."""
    if isinstance(value, float) or not isinstance(value, (Decimal, int)):
        raise TypeError(f"amounts must be Decimal, not {type(value).__name__} ({value!r})")
    value = Decimal(value)
    cents = value.quantize(_CENT) if value.as_tuple().exponent >= -2 or value == value.quantize(_CENT) else value
    return format(cents, "f")


def _decimal_text(value: Decimal) -> str:
    if isinstance(value, float) or not isinstance(value, (Decimal, int)):
        raise TypeError(f"rates must be Decimal, not {type(value).__name__} ({value!r})")
    return format(Decimal(value), "f")


def _add_entry(parent: etree._Element, entry: Entry) -> None:
    node = etree.SubElement(parent, _NS + "entry")
    add = _Adder(node)
    add("lineNo", str(entry.line_no))
    add("summary", entry.summary)
    add("accountCode", entry.account_code)
    add("accountName", entry.account_name)
    add("debit", amount_text(entry.debit))
    add("credit", amount_text(entry.credit))
    add("currency", entry.currency)
    add("exchangeRate", _decimal_text(entry.exchange_rate) if entry.exchange_rate is not None else None)
    add("originalAmount", amount_text(entry.original_amount) if entry.original_amount is not None else None)
    if entry.auxiliary:
        auxiliary = etree.SubElement(node, _NS + "auxiliary")
        for item in entry.auxiliary:
            child = etree.SubElement(auxiliary, _NS + "item", type=item.type, code=item.code)
            child.text = item.name


def _add_attachment(parent: etree._Element, meta: AttachmentMeta, content: bytes | None) -> None:
    node = etree.SubElement(parent, _NS + "attachment")
    add = _Adder(node)
    add("attachmentId", meta.attachment_id)
    add("fileName", meta.file_name)
    add("mimeType", meta.mime_type)
    add("size", str(meta.size))
    add("sha256", meta.sha256)
    add("kind", AttachmentKind(meta.kind).value)
    add("invoiceNumber", meta.invoice_number)
    if content is not None:
        add("content", base64.b64encode(content).decode("ascii"))


def _add_archive(parent: etree._Element, archive: ArchiveInfo) -> None:
    node = etree.SubElement(parent, _NS + "archive")
    add = _Adder(node)
    add("archivalCode", archive.archival_code)
    add("category", archive.category)
    add("retention", Retention(archive.retention).value if archive.retention else None)
    add("archivedAt", archive.archived_at.isoformat() if archive.archived_at else None)


def _add_workflow(parent: etree._Element, workflow: WorkflowInfo) -> None:
    node = etree.SubElement(parent, _NS + "workflow")
    add = _Adder(node)
    add("state", WorkflowState(workflow.state).value)
    add("oaRequestId", workflow.oa_request_id)
    add("decidedAt", workflow.decided_at.isoformat() if workflow.decided_at else None)
    if workflow.approvals:
        approvals = etree.SubElement(node, _NS + "approvals")
        for approval in workflow.approvals:
            item = etree.SubElement(approvals, _NS + "approval")
            add_item = _Adder(item)
            add_item("step", str(approval.step))
            add_item("approver", approval.approver)
            add_item("action", approval.action)
            add_item("comment", approval.comment)
            add_item("time", approval.time.isoformat())


# --- content identity -----------------------------------------------------------------


def canonical_hash(voucher: Voucher) -> str:
    """sha256 (hex) of the C14N form of the voucher's content.

    The archive and workflow parts are left out: approval and archiving change state,
    not content.  Attachments count through their sha256, not their embedded bytes.
    Two vouchers with equal hashes carry the same accounting content.
    """
    element = voucher_to_element(voucher, None, include_workflow=False, include_archive=False)
    return content_hash(etree.tostring(element, method="c14n"))


def voucher_idempotency_key(voucher: Voucher) -> str:
    """The externalKey the sync engine sends for this content of the voucher."""
    return idempotency_key(voucher.voucher_id, canonical_hash(voucher))


def element_idempotency_key(element: etree._Element) -> str:
    voucher, _ = voucher_from_element(element)
    return voucher_idempotency_key(voucher)


__all__ = [
    "ParsedVoucher",
    "amount_text",
    "canonical_hash",
    "element_idempotency_key",
    "parse_vouchers",
    "voucher_from_element",
    "voucher_idempotency_key",
    "voucher_to_element",
    "voucher_to_xml",
    "vouchers_to_xml",
]
