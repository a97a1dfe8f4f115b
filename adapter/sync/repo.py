"""The archive functions the sync engine uses, as one small interface.

The implementation is the module ``archive_oa.store.vouchers``.  There is no in-memory
fake: each caller also writes the outbox and the outcome tables in the same transaction
(``conn``), so a fake would have to be a whole store; their tests use a fresh real store
instead, on SQLite and on PostgreSQL (tests/conftest.py).
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Protocol, Sequence

from ..domain.model import Approval, Page, Voucher, VoucherQuery, WorkflowState


class ArchiveRepo(Protocol):
    def load_voucher(self, conn: Any, voucher_id: str, *, version: int | None = None) -> Voucher | None: ...

    def set_workflow(
        self,
        conn: Any,
        voucher_id: str,
        *,
        state: WorkflowState,
        oa_request_id: str | None = None,
        decided_at: dt.datetime | None = None,
        approvals: Sequence[Approval] | None = None,
    ) -> None: ...

    def mark_submitted(self, conn: Any, voucher_id: str, *, version: int, oa_request_id: str) -> bool: ...

    def map_request(self, conn: Any, *, external_key: str, voucher_id: str, version: int, oa_request_id: str) -> None: ...

    def lookup_request(self, conn: Any, *, oa_request_id: str | None = None, external_key: str | None = None): ...

    def select_for_sync(
        self,
        conn: Any,
        *,
        org_code: str | None = None,
        period_from: str | None = None,
        period_to: str | None = None,
        voucher_ids: Sequence[str] | None = None,
        states: Sequence[WorkflowState] = (WorkflowState.NONE,),
    ) -> list[tuple[str, int, str]]: ...

    def voucher_org(self, conn: Any, voucher_id: str) -> str | None: ...

    def org_codes(self, conn: Any) -> list[str]: ...

    def query_vouchers(self, conn: Any, q: VoucherQuery) -> Page: ...

    def latest_version(self, conn: Any, voucher_id: str) -> tuple[int, str] | None: ...


def default_repo() -> ArchiveRepo:
    from ..store import vouchers  # imported late: the store module pulls in SQLAlchemy tables

    return vouchers  # type: ignore[return-value]
