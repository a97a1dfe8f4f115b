"""Vouchers (会计凭证) and their parts, as the archive knows them.

Plain frozen dataclasses: no ORM, no XML.  Amounts are ``Decimal`` end to end.
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass, field
from decimal import Decimal


class WorkflowState(str, enum.Enum):
    NONE = "NONE"  # never sent for approval
    QUEUED = "QUEUED"  # waiting in the outbox
    SUBMITTED = "SUBMITTED"  # an OA request exists, no decision yet
    APPROVED = "APPROVED"  # approvers accepted (审批通过)
    REJECTED = "REJECTED"  # approvers refused (驳回)
    WITHDRAWN = "WITHDRAWN"  # the requester withdrew it (撤回)

    @property
    def decided(self) -> bool:
        return self in (WorkflowState.APPROVED, WorkflowState.REJECTED, WorkflowState.WITHDRAWN)


class AttachmentKind(str, enum.Enum):
    INVOICE = "INVOICE"  # 发票
    BANK_RECEIPT = "BANK_RECEIPT"  # 银行回单
    CONTRACT = "CONTRACT"  # 合同
    REPORT = "REPORT"  # 报表
    OTHER = "OTHER"


class Retention(str, enum.Enum):
    """保管期限 per 《会计档案管理办法》 (财政部 国家档案局令第79号)."""

    PERMANENT = "PERMANENT"  # 永久
    Y30 = "Y30"
    Y10 = "Y10"
    Y5 = "Y5"


class DocType(str, enum.Enum):
    EXPENSE_CLAIM = "EXPENSE_CLAIM"  # 报销单
    PAYMENT = "PAYMENT"  # 付款单
    CONTRACT = "CONTRACT"  # 合同
    REPORT = "REPORT"  # 报表
    OTHER = "OTHER"


@dataclass(frozen=True)
class AuxiliaryItem:
    """辅助核算 item of an entry."""

    type: str  # dept, project, customer, supplier, employee, other
    code: str
    name: str


@dataclass(frozen=True)
class Entry:
    """One line (分录) of a voucher."""

    line_no: int
    summary: str  # 摘要
    account_code: str  # 科目编码
    account_name: str  # 科目名称
    debit: Decimal = Decimal("0")
    credit: Decimal = Decimal("0")
    currency: str | None = None
    exchange_rate: Decimal | None = None
    original_amount: Decimal | None = None
    auxiliary: tuple[AuxiliaryItem, ...] = ()


@dataclass(frozen=True)
class AttachmentMeta:
    attachment_id: str
    file_name: str
    mime_type: str
    size: int
    sha256: str
    kind: AttachmentKind = AttachmentKind.OTHER
    invoice_number: str | None = None


@dataclass(frozen=True)
class ArchiveInfo:
    archival_code: str | None = None  # 档号
    category: str | None = None  # 会计凭证 / 会计账簿 / 财务会计报告 / 其他
    retention: Retention | None = None
    archived_at: dt.datetime | None = None


@dataclass(frozen=True)
class Approval:
    """One step of the approval trail (审批记录)."""

    step: int
    approver: str
    action: str  # APPROVE, REJECT, WITHDRAW, COMMENT …
    comment: str | None
    time: dt.datetime


@dataclass(frozen=True)
class WorkflowInfo:
    state: WorkflowState = WorkflowState.NONE
    oa_request_id: str | None = None
    decided_at: dt.datetime | None = None
    approvals: tuple[Approval, ...] = ()


@dataclass(frozen=True)
class Voucher:
    """会计凭证."""

    voucher_id: str
    org_code: str
    org_name: str
    fonds_code: str  # 全宗号
    fiscal_year: int
    period: str  # YYYY-MM
    voucher_word: str  # 凭证字: 记/收/付/转 …
    voucher_no: int
    date: dt.date
    preparer: str  # 制单
    entries: tuple[Entry, ...]
    currency: str = "CNY"
    attachment_count: int = 0  # 附件张数
    reviewer: str | None = None  # 审核
    bookkeeper: str | None = None  # 记账
    cashier: str | None = None  # 出纳
    summary: str | None = None
    attachments: tuple[AttachmentMeta, ...] = ()
    archive: ArchiveInfo | None = None
    workflow: WorkflowInfo | None = None

    @property
    def total_amount(self) -> Decimal:
        """Total of the debit side (equal to the credit side in a balanced voucher)."""
        return sum((entry.debit for entry in self.entries), Decimal("0"))

    @property
    def state(self) -> WorkflowState:
        return self.workflow.state if self.workflow else WorkflowState.NONE


@dataclass(frozen=True)
class AttachmentContent:
    """An attachment's metadata with its bytes, as imported or archived."""

    meta: AttachmentMeta
    content: bytes


@dataclass(frozen=True)
class VoucherSummary:
    voucher_id: str
    org_code: str
    period: str
    voucher_word: str
    voucher_no: int
    date: dt.date
    summary: str | None
    total_amount: Decimal
    attachment_count: int
    state: WorkflowState
    archival_code: str | None


@dataclass(frozen=True)
class VoucherQuery:
    """Filters of QueryVouchers; ``org_codes`` is the caller's scope (None = all)."""

    org_code: str | None = None
    period_from: str | None = None
    period_to: str | None = None
    voucher_word: str | None = None
    voucher_no_from: int | None = None
    voucher_no_to: int | None = None
    state: WorkflowState | None = None
    keyword: str | None = None
    amount_min: Decimal | None = None
    amount_max: Decimal | None = None
    page: int = 1
    page_size: int = 50
    org_codes: frozenset[str] | None = None


@dataclass(frozen=True)
class Page:
    total: int
    page: int
    page_size: int
    items: tuple = field(default_factory=tuple)


@dataclass(frozen=True)
class WorkflowOutcome:
    """A decision coming back from the OA, by polling or by callback."""

    state: WorkflowState
    finished_at: dt.datetime
    approvals: tuple[Approval, ...] = ()
    oa_request_id: str | None = None
    external_key: str | None = None
