"""The archive's read and write services behind the gateway.

Every read takes the caller's organisation scope (``org_codes``; None = all): a
voucher, document or attachment outside it is reported exactly like a missing one,
so callers cannot learn what exists in other organisations.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from typing import BinaryIO, Callable

import sqlalchemy.exc

from .. import voucher_xml
from ..domain.clock import utc_now
from ..domain.model import (
    AttachmentContent,
    AttachmentMeta,
    DocType,
    Page,
    Retention,
    Voucher,
    VoucherQuery,
    WorkflowOutcome,
)
from ..errors import AccessDenied, IntegrityError, Issue, NotFound, ValidationFailed
from ..store import documents as document_repo
from ..store import vouchers as voucher_repo
from ..sync import outcomes
from .periods import period_issue

_MAX_AMOUNT = Decimal(10) ** 18  # NUMERIC(20, 2)


@dataclass(frozen=True)
class NewFile:
    file_name: str
    mime_type: str
    content: bytes


@dataclass(frozen=True)
class ArchiveDocumentCommand:
    """ArchiveDocument: an approved business document handed over by the OA."""

    source_system: str
    source_id: str
    doc_type: str  # DocType value
    org_code: str
    period: str  # YYYY-MM
    title: str
    amount: Decimal | None = None
    oa_request_id: str | None = None
    fields: tuple[tuple[str, str | None], ...] = ()
    attachments: tuple[NewFile, ...] = ()
    archived_by: str | None = None


@dataclass(frozen=True)
class ArchiveResult:
    archive_id: str
    archival_code: str  # 档号
    duplicate: bool


@dataclass(frozen=True)
class ArchivalRule:
    """How a document type is filed: category (档案门类), its code in the 档号, retention."""

    category: str
    category_code: str
    retention: Retention


#: Source documents of vouchers (原始凭证) are filed with the vouchers: 30 years; monthly,
#: quarterly and half-year reports 10 years, annual reports permanently (《会计档案管理办法》).
ARCHIVAL_RULES: dict[DocType, ArchivalRule] = {
    DocType.EXPENSE_CLAIM: ArchivalRule("会计凭证", "PZ", Retention.Y30),
    DocType.PAYMENT: ArchivalRule("会计凭证", "PZ", Retention.Y30),
    DocType.CONTRACT: ArchivalRule("其他", "QT", Retention.Y30),
    DocType.REPORT: ArchivalRule("财务会计报告", "BG", Retention.Y10),
    DocType.OTHER: ArchivalRule("其他", "QT", Retention.Y10),
}
#: A REPORT whose field ``reportKind`` says annual (年度) is kept permanently.
ANNUAL_REPORT_VALUES = frozenset({"ANNUAL", "年度", "年报"})


class ArchiveService:
    def __init__(self, store, transforms=None, *, clock: Callable[[], dt.datetime] = utc_now) -> None:
        self._store = store
        self._transforms = transforms
        self._clock = clock

    # --- reads ---------------------------------------------------------------

    def query_vouchers(self, q: VoucherQuery) -> Page:
        check_query(q)
        with self._store.transaction() as conn:
            return voucher_repo.query_vouchers(conn, q)

    def get_voucher(self, voucher_id: str, org_codes: frozenset[str] | None) -> Voucher:
        with self._store.transaction() as conn:
            voucher = voucher_repo.load_voucher(conn, voucher_id)
        if voucher is None or not _in_scope(voucher.org_code, org_codes):
            raise NotFound(f"voucher {voucher_id!r} not found: check the voucherId")
        return voucher

    def get_voucher_document(self, voucher_id: str, org_codes: frozenset[str] | None) -> str:
        """The canonical voucher XML (voucher.xsd) as text."""
        return voucher_xml.voucher_to_xml(self.get_voucher(voucher_id, org_codes)).decode("utf-8")

    def attachment_meta(self, attachment_id: str, org_codes: frozenset[str] | None) -> AttachmentMeta:
        """An attachment's metadata (a voucher's or an archived document's file), its
        bytes left unread; outside ``org_codes`` it is reported like a missing one."""
        with self._store.transaction() as conn:
            found = voucher_repo.find_attachment(conn, attachment_id) or document_repo.find_file(
                conn, attachment_id
            )
        if found is None or not _in_scope(found[2], org_codes):
            raise NotFound(f"attachment {attachment_id!r} not found: check the attachmentId")
        return found[0]

    def get_attachment(self, attachment_id: str, org_codes: frozenset[str] | None) -> AttachmentContent:
        """The attachment's metadata and bytes, the bytes checked against its sha256 and size."""
        meta, file = self.open_attachment(attachment_id, org_codes)
        with file:
            return AttachmentContent(meta, file.read())

    def open_attachment(
        self, attachment_id: str, org_codes: frozenset[str] | None
    ) -> tuple[AttachmentMeta, BinaryIO]:
        """The attachment's metadata and its blob file, checked against its sha256 and size
        and positioned at its start, for streaming; the caller closes the file."""
        meta = self.attachment_meta(attachment_id, org_codes)
        file, size = self._store.blobs.open_verified(meta.sha256)
        if size != meta.size:
            file.close()
            raise IntegrityError(f"attachment {attachment_id}: stored {size} bytes, recorded size {meta.size}")
        return meta, file

    # --- writes --------------------------------------------------------------

    def archive_document(self, cmd: ArchiveDocumentCommand, org_codes: frozenset[str] | None) -> ArchiveResult:
        """Archive a business document; idempotent on (source_system, source_id)."""
        check_document(cmd)
        if not _in_scope(cmd.org_code, org_codes):
            raise AccessDenied(f"orgCode {cmd.org_code!r} is outside your organisation scope")
        with self._store.transaction() as conn:
            first = document_repo.find_by_source(conn, cmd.source_system, cmd.source_id)
        if first is not None:
            return self._duplicate(first, org_codes)
        # Bytes first: content-addressed, so an aborted archive leaves at most an unused blob.
        files = tuple(
            document_repo.DocumentFile(
                attachment_id="",
                file_name=f.file_name,
                mime_type=f.mime_type,
                size=len(f.content),
                sha256=self._store.blobs.put(f.content),
            )
            for f in cmd.attachments
        )
        try:
            with self._store.transaction(immediate=True) as conn:
                first = document_repo.find_by_source(conn, cmd.source_system, cmd.source_id)
                if first is not None:
                    return self._duplicate(first, org_codes)
                doc = self._new_document(conn, cmd, files)
                document_repo.insert_document(conn, doc)
        except sqlalchemy.exc.IntegrityError:
            # Another request archived the same source concurrently: answer with its result.
            with self._store.transaction() as conn:
                first = document_repo.find_by_source(conn, cmd.source_system, cmd.source_id)
            if first is None:
                raise
            return self._duplicate(first, org_codes)
        return ArchiveResult(doc.archive_id, doc.archival_code, duplicate=False)

    def submit_workflow_result(
        self, outcome: WorkflowOutcome, org_codes: frozenset[str] | None
    ) -> outcomes.OutcomeResult:
        """The OA's callback with a decision (the push path; the poller is the pull path)."""
        check_outcome(outcome)
        with self._store.transaction(immediate=True) as conn:
            result = outcomes.apply_outcome(conn, outcome, via="callback", now=self._clock())
            org = voucher_repo.voucher_org(conn, result.voucher_id) if result.voucher_id else None
            if not _in_scope(org, org_codes):
                # Raising rolls the transaction back: nothing of the outcome is kept.
                key = outcome.oa_request_id or outcome.external_key
                raise NotFound(f"no workflow request {key!r} is known: check oaRequestId / externalKey")
            return result

    # --- helpers -------------------------------------------------------------

    def _duplicate(self, first: document_repo.ArchivedDocument, org_codes) -> ArchiveResult:
        if not _in_scope(first.org_code, org_codes):
            raise AccessDenied("this sourceSystem/sourceId was archived for an organisation outside your scope")
        return ArchiveResult(first.archive_id, first.archival_code, duplicate=True)

    def _new_document(self, conn, cmd: ArchiveDocumentCommand, files) -> document_repo.ArchivedDocument:
        rule = archival_rule(cmd)
        prefix = f"{cmd.org_code}-{cmd.period[:4]}-{rule.category_code}-{rule.retention.value}"
        archival_code = f"{prefix}-{document_repo.next_sequence(conn, prefix):04d}"
        archive_id = uuid.uuid4().hex
        return document_repo.ArchivedDocument(
            archive_id=archive_id,
            source_system=cmd.source_system,
            source_id=cmd.source_id,
            doc_type=cmd.doc_type,
            org_code=cmd.org_code,
            period=cmd.period,
            title=cmd.title,
            amount=cmd.amount,
            oa_request_id=cmd.oa_request_id,
            archival_code=archival_code,
            category=rule.category,
            retention=rule.retention.value,
            archived_at=self._clock(),
            archived_by=cmd.archived_by,
            fields=tuple(document_repo.DocumentField(name, value) for name, value in cmd.fields),
            files=tuple(
                document_repo.DocumentFile(f"{archive_id}-{i}", f.file_name, f.mime_type, f.size, f.sha256)
                for i, f in enumerate(files, start=1)
            ),
        )


def archival_rule(cmd: ArchiveDocumentCommand) -> ArchivalRule:
    rule = ARCHIVAL_RULES[DocType(cmd.doc_type)]
    if DocType(cmd.doc_type) is DocType.REPORT:
        kinds = {(value or "").strip().upper() for name, value in cmd.fields if name == "reportKind"}
        if kinds & {v.upper() for v in ANNUAL_REPORT_VALUES}:
            return ArchivalRule(rule.category, rule.category_code, Retention.PERMANENT)
    return rule


def _in_scope(org_code: str | None, org_codes: frozenset[str] | None) -> bool:
    return org_codes is None or (org_code is not None and org_code in org_codes)


# --- input checks: each names the field, the value and what to fix ------------------


@dataclass
class _Checks:
    issues: list[Issue] = field(default_factory=list)

    def fail(self, place: str, rule: str, message: str) -> None:
        self.issues.append(Issue(place=place, rule=rule, message=message, source="request"))

    def period(self, place: str, value: str | None, required: bool = False) -> None:
        if value is None:
            if required:
                self.fail(place, "required", f"{place} is required (YYYY-MM, e.g. 2024-03)")
        elif issue := period_issue(place, value):
            self.fail(issue.place, issue.rule, issue.message)

    def amount(self, place: str, value: Decimal | None) -> None:
        if value is None:
            return
        if not value.is_finite():
            self.fail(place, "amount", f"{place} {value} must be a finite number")
        elif abs(value) >= _MAX_AMOUNT:
            self.fail(place, "amount", f"{place} {value} is too large: at most 18 digits before the point")
        elif value.as_tuple().exponent < -2 and value != value.quantize(Decimal("0.01")):
            self.fail(place, "amount", f"{place} {value} has more than 2 decimal places; round it to cents")
        elif value < 0:
            self.fail(place, "amount", f"{place} {value} must not be negative")

    def text(self, place: str, value: str | None, max_len: int) -> None:
        if value is None or not value.strip():
            self.fail(place, "required", f"{place} is required and must not be blank")
        elif len(value) > max_len:
            self.fail(place, "length", f"{place} is {len(value)} characters long; at most {max_len} are allowed")

    def file_name(self, place: str, value: str | None) -> None:
        # A name, never a path: clients save attachments under it (as the importer requires).
        if value and (value.strip() in (".", "..") or any(ch in value for ch in "/\\\0") or ":" in value):
            self.fail(place, "attachment-file-name",
                      f"{place} {value!r} must be a plain file name: no folder, no '/', '\\', ':' or NUL")

    def raise_if_any(self, what: str) -> None:
        if self.issues:
            raise ValidationFailed(f"{what}: {len(self.issues)} field(s) to fix", self.issues)


def check_query(q: VoucherQuery) -> None:
    c = _Checks()
    for issue in voucher_repo.paging_issues(q):
        c.fail(issue.place, issue.rule, issue.message)
    c.period("periodFrom", q.period_from)
    c.period("periodTo", q.period_to)
    if q.period_from and q.period_to and not c.issues and q.period_from > q.period_to:
        c.fail("periodFrom", "range", f"periodFrom {q.period_from} is after periodTo {q.period_to}")
    c.amount("amountMin", q.amount_min)
    c.amount("amountMax", q.amount_max)
    if q.amount_min is not None and q.amount_max is not None and q.amount_min > q.amount_max:
        c.fail("amountMin", "range", f"amountMin {q.amount_min} is greater than amountMax {q.amount_max}")
    for place, value in (("voucherNoFrom", q.voucher_no_from), ("voucherNoTo", q.voucher_no_to)):
        if value is not None and value < 1:
            c.fail(place, "range", f"{place} {value} must be a positive voucher number")
    if q.voucher_no_from and q.voucher_no_to and q.voucher_no_from > q.voucher_no_to:
        c.fail("voucherNoFrom", "range", f"voucherNoFrom {q.voucher_no_from} is greater than voucherNoTo {q.voucher_no_to}")
    c.raise_if_any("QueryVouchers request is invalid")


def check_document(cmd: ArchiveDocumentCommand) -> None:
    c = _Checks()
    c.text("sourceSystem", cmd.source_system, 64)
    c.text("sourceId", cmd.source_id, 128)
    c.text("orgCode", cmd.org_code, 64)
    c.text("title", cmd.title, 500)
    if cmd.doc_type not in DocType.__members__:
        c.fail("docType", "enum", f"docType {cmd.doc_type!r} must be one of {', '.join(DocType.__members__)}")
    c.period("period", cmd.period, required=True)
    c.amount("amount", cmd.amount)
    for i, (name, _value) in enumerate(cmd.fields, start=1):
        c.text(f"fields/field[{i}]/name", name, 200)
    for i, f in enumerate(cmd.attachments, start=1):
        c.text(f"attachments/attachment[{i}]/fileName", f.file_name, 255)
        c.file_name(f"attachments/attachment[{i}]/fileName", f.file_name)
        c.text(f"attachments/attachment[{i}]/mimeType", f.mime_type, 127)
        if not f.content:
            c.fail(f"attachments/attachment[{i}]/content", "required", "content is empty: send the file bytes (base64)")
    c.raise_if_any("ArchiveDocument request is invalid")


def check_outcome(outcome: WorkflowOutcome) -> None:
    c = _Checks()
    for issue in outcomes.outcome_issues(outcome):
        c.fail(issue.place, issue.rule, issue.message)
    for i, approval in enumerate(outcome.approvals, start=1):
        if approval.time.tzinfo is None:
            c.fail(f"approvals/approval[{i}]/time", "timezone", "time must carry a time zone, e.g. +08:00")
    c.raise_if_any("SubmitWorkflowResult request is invalid")
