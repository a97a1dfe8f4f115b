"""In-memory stand-ins the test modules share: a clock the test moves and an OA.

The OA fake implements the OA port (``domain/ports.py``) the sync engine, the poller and
reconciliation use; with no request in it, it is the OA as a gateway test sees it.
"""

from __future__ import annotations

import datetime as dt
import itertools
import threading

from lxml import etree

from archive_oa.domain.model import Approval, WorkflowState
from archive_oa.domain.ports import CompletedBatch, CompletedItem, OaRequest
from archive_oa.errors import OaAmbiguous, OaRejected, OaServerFault, OaUnreachable

WORKFLOW = "urn:archive-oa:oa-workflow:1"


class Clock:
    """A fixed instant the test advances (thread-safe: workers read it from their threads)."""

    def __init__(self, now: dt.datetime) -> None:
        self.now = now
        self.lock = threading.Lock()

    def __call__(self) -> dt.datetime:
        with self.lock:
            return self.now

    def advance(self, seconds: float) -> None:
        with self.lock:
            self.now += dt.timedelta(seconds=seconds)


class FakeOa:
    """An OA that keeps requests in memory and fails as scripted.

    ``create_faults`` is a list of actions consumed per CreateWorkflowRequest call:
    ``ok``, ``unreachable``, ``fault`` (server fault, nothing stored), ``lost`` (times
    out before storing), ``commit-then-timeout`` (stores, then the answer is lost),
    ``rejected``.  ``find_faults`` are exceptions raised by the next lookups.
    """

    def __init__(self, create_faults=(), find_faults=()):
        self.create_faults = list(create_faults)
        self.find_faults = list(find_faults)
        self.requests: dict[int, dict] = {}
        self.ids = itertools.count(1001)
        self.calls: list[str] = []
        self.completed: list[CompletedItem] = []
        self.acked: list[int] = []
        self.lock = threading.Lock()
        self.during_create = None  # hook(request_id) run after storing, before answering

    def create_request(self, workflow_xml: bytes) -> int:
        with self.lock:
            self.calls.append("create")
            action = self.create_faults.pop(0) if self.create_faults else "ok"
        if action == "unreachable":
            raise OaUnreachable("connection refused by 127.0.0.1:9")
        if action == "fault":
            raise OaServerFault("soap:Server: database busy")
        if action == "lost":
            raise OaAmbiguous("read timed out")
        if action == "rejected":
            raise OaRejected("soap:Client: workflowCode unknown")
        key = etree.fromstring(workflow_xml).findtext(f"{{{WORKFLOW}}}externalKey")
        with self.lock:
            request_id = next(self.ids)
            self.requests[request_id] = {"key": key, "xml": workflow_xml, "status": WorkflowState.SUBMITTED}
        if self.during_create:
            self.during_create(request_id)
        if action == "commit-then-timeout":
            raise OaAmbiguous("read timed out after the OA committed")
        return request_id

    def add_request(self, request_id: int, external_key: str, status: WorkflowState = WorkflowState.SUBMITTED):
        """A request the OA holds without this adapter having created it here (set-up of a test)."""
        self.requests[request_id] = {"key": external_key, "xml": b"", "status": status}

    def find_requests(self, external_key):
        with self.lock:
            self.calls.append("find")
            if self.find_faults:
                raise self.find_faults.pop(0)
            return [rid for rid, r in self.requests.items() if r["key"] == external_key]

    def get_request(self, request_id):
        r = self.requests[request_id]
        return OaRequest(request_id, r["key"], r["status"], None, ())

    def fetch_completed(self, after_cursor, max_items):
        items = tuple(i for i in self.completed if i.cursor > after_cursor)[:max_items]
        return CompletedBatch(items, items[-1].cursor if items else after_cursor)

    def acknowledge(self, up_to_cursor):
        self.acked.append(up_to_cursor)

    def per_key(self):
        counts: dict[str, int] = {}
        for r in self.requests.values():
            counts[r["key"]] = counts.get(r["key"], 0) + 1
        return counts

    def decide(self, request_id, state, finished_at, cursor=None):
        r = self.requests[request_id]
        r["status"] = state
        item = CompletedItem(
            cursor=cursor or len(self.completed) + 1,
            request_id=request_id,
            external_key=r["key"],
            status=state,
            finished_at=finished_at,
            logs=(Approval(1, "李总", "APPROVE" if state is WorkflowState.APPROVED else "REJECT", "同意", finished_at),),
        )
        self.completed.append(item)
        return item
