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
    """An OA driver: everything the worker, the poller, reconciliation and sync ask of an OA.

    The built-in driver ``generic`` speaks wsdl/legacy-oa-workflow.wsdl
    (``archive_oa.oa.client.OaClient``); others are found by ``[oa] driver`` through the
    entry-point group ``archive_oa.oa_drivers`` (``archive_oa.oa.drivers``) and pass the
    same contract test (tests/test_oa_driver_contract.py).

    Every method raises the ``OaError`` subclass that says what the failure means for the
    request's fate (``archive_oa.errors``): ``OaUnreachable`` (nothing reached the OA),
    ``OaAuthenticationFailed`` (our credentials refused), ``OaRejected`` (the OA refused
    this request), ``OaServerFault`` (the OA failed and says nothing was done) and
    ``OaAmbiguous`` (it may have taken effect).  A document the OA cannot be sent is
    ``ValidationFailed``.  Drivers are used from several threads at once.
    """

    #: Seconds a call waits for the OA's answer.  A call given up on may still take
    #: effect about that much later, so the worker waits that long before asking.
    call_timeout: float

    def create_request(self, workflow_xml: bytes) -> int:
        """Send a WorkflowRequest document (oa-workflow.xsd); returns the OA request id.

        Not idempotent on the OA side.
        """

    def find_requests(self, external_key: str) -> Sequence[int]:
        """The ids of the OA requests carrying ``external_key`` (asked before any resend)."""

    def get_request(self, request_id: int) -> OaRequest: ...

    def fetch_completed(self, after_cursor: int, max_items: int) -> CompletedBatch:
        """Decided requests after ``after_cursor``, oldest first (``max_items`` at most)."""

    def acknowledge(self, up_to_cursor: int) -> None:
        """The adapter holds every decision up to ``up_to_cursor``; the OA may drop them."""

    def close(self) -> None:
        """Release connections; the Adapter calls it once, at its close."""
