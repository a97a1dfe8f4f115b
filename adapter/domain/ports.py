"""The small interfaces between layers.  Adapters implement them; tests fake them."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Protocol, Sequence

from .model import Approval, WorkflowState


@dataclass(frozen=True)
class OaRequest:
    """A workflow request as the OA reports it."""

    request_id: int
    external_key: str | None
    status: WorkflowState  # SUBMITTED while IN_PROGRESS on the OA side
    finished_at: dt.datetime | None
    logs: tuple[Approval, ...]


@dataclass(frozen=True)
class CompletedItem:
    """One entry of the OA's completed-requests queue."""

    cursor: int
    request_id: int
    external_key: str | None
    status: WorkflowState
    finished_at: dt.datetime
    logs: tuple[Approval, ...]


@dataclass(frozen=True)
class CompletedBatch:
    items: tuple[CompletedItem, ...]
    next_cursor: int


class OaWorkflowPort(Protocol):
    """The OA's workflow service (wsdl/legacy-oa-workflow.wsdl).

    Methods raise the ``OaError`` subclasses of ``archive_oa.errors``.
    """

    def create_request(self, workflow_xml: bytes) -> int:
        """Send a WorkflowRequest document (oa-workflow.xsd); returns the OA request id.

        Not idempotent on the OA side.
        """

    def find_requests(self, external_key: str) -> Sequence[int]: ...

    def get_request(self, request_id: int) -> OaRequest: ...

    def fetch_completed(self, after_cursor: int, max_items: int) -> CompletedBatch: ...

    def acknowledge(self, up_to_cursor: int) -> None: ...
