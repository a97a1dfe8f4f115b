"""The simulator calling the adapter back: ``SubmitWorkflowResult`` on the gateway.

Real OA platforms push outcomes to a registered URL after a decision; this mirrors it
with zeep over the checked-in ``wsdl/archive-gateway.wsdl`` and HTTP Basic auth.
Calls run on a small pool so a slow gateway never holds up the approvers, and each is
tried a few times; the polling queue remains the safety net for anything lost here.
"""

from __future__ import annotations

import importlib.resources
import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Callable

import requests
import zeep
from zeep.transports import Transport

from ...errors import ConfigurationError
from .config import SimulatorConfig
from .db import CompletedEntry

log = logging.getLogger(__name__)

GATEWAY_WSDL = "archive-gateway.wsdl"
GATEWAY_NAMESPACE = "urn:archive-oa:gateway:1"
ATTEMPTS = 3


class GatewayCallback:
    """``on_decided`` hook: sends each decided request to the gateway."""

    def __init__(self, url: str, user: str | None, password: str | None, timeout: float = 10.0) -> None:
        resource = importlib.resources.files("archive_oa.wsdl") / GATEWAY_WSDL
        if not resource.is_file():
            raise ConfigurationError(
                f"--callback-url needs the gateway WSDL {GATEWAY_WSDL} in the installed package; it is missing"
            )
        session = requests.Session()
        if user:
            session.auth = requests.auth.HTTPBasicAuth(user, password or "")
        transport = Transport(session=session, operation_timeout=(5.0, timeout))
        settings = zeep.Settings(strict=True, forbid_dtd=True, forbid_entities=True, forbid_external=True)
        with importlib.resources.as_file(resource) as path:
            client = zeep.Client(str(path), transport=transport, settings=settings)
        binding = next(
            (name for name in client.wsdl.bindings if name.startswith(f"{{{GATEWAY_NAMESPACE}}}")),
            next(iter(client.wsdl.bindings)),
        )
        self._client = client
        self._service = client.create_service(binding, url)
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="oa-sim-callback")
        self._pending: set[Future] = set()
        self._lock = threading.Lock()
        self.url = url
        self.sent = 0  # callbacks the gateway accepted
        self.failed = 0  # callbacks given up after ATTEMPTS tries

    def __call__(self, entry: CompletedEntry) -> None:
        future = self._pool.submit(self._send, entry)
        with self._lock:
            self._pending.add(future)
        future.add_done_callback(self._forget)

    def drain(self, timeout: float = 30.0) -> bool:
        """Wait for every callback submitted so far; False if some are still running."""
        with self._lock:
            pending = set(self._pending)
        _done, not_done = wait(pending, timeout)
        return not not_done

    def _forget(self, future: Future) -> None:
        with self._lock:
            self._pending.discard(future)

    def send_now(self, entry: CompletedEntry) -> object:
        """One synchronous call (tests and the demo's checks)."""
        return self._service.SubmitWorkflowResult(
            oaRequestId=str(entry.request_id),
            externalKey=entry.external_key,
            state=entry.status,
            finishedAt=entry.finished_at,
            approvals={
                "approval": [
                    {"step": e.step, "approver": e.approver, "action": e.action, "comment": e.comment, "time": e.time}
                    for e in entry.logs
                ]
            },
        )

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _send(self, entry: CompletedEntry) -> None:
        for attempt in range(1, ATTEMPTS + 1):
            try:
                self.send_now(entry)
                with self._lock:
                    self.sent += 1
                return
            except Exception as exc:  # best effort; polling carries the outcome anyway
                log.warning(
                    "callback of OA request %s to %s failed (attempt %d/%d): %s",
                    entry.request_id, self.url, attempt, ATTEMPTS, exc,
                )
                if attempt < ATTEMPTS:
                    time.sleep(0.5 * attempt)
        with self._lock:
            self.failed += 1


def gateway_callback(config: SimulatorConfig) -> Callable[[CompletedEntry], None]:
    return GatewayCallback(config.callback_url, config.callback_user, config.callback_password)
