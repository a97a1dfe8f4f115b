"""OA reads that ride out a passing fault.

Reading from the OA (FindWorkflowRequests, GetWorkflowRequest, FetchCompletedRequests)
can always be asked again — unlike CreateWorkflowRequest, whose resend could make a
second request, and which therefore never goes through here.  A transient fault (the OA
unreachable, a dropped connection, a timeout, a soap:Server fault) is asked again after a
short backoff, up to the policy's attempts; a refusal is not asked again.
"""

from __future__ import annotations

import logging
import random
import time
from typing import Callable, Sequence, TypeVar

from ..domain.delivery import RetryPolicy
from ..domain.ports import CompletedBatch, OaRequest, OaWorkflowPort
from ..errors import OaError
from ..sync.failures import rule_for

log = logging.getLogger(__name__)

#: Three attempts, about 0.5 s then 1 s apart: an OA that drops one call in a thousand
#: does not end a reconciliation, an OA that is down does within two seconds.
READ_RETRY = RetryPolicy(base_seconds=0.5, max_seconds=2.0, max_attempts=3)

T = TypeVar("T")


class RetryingReads:
    """The read half of ``OaWorkflowPort``, each call retried on a transient fault by ``policy``."""

    def __init__(
        self,
        oa: OaWorkflowPort,
        policy: RetryPolicy = READ_RETRY,
        *,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.oa = oa
        self.policy = policy
        self.sleep = sleep
        self.rng = rng

    def find_requests(self, external_key: str) -> Sequence[int]:
        return self._read(self.oa.find_requests, external_key)

    def get_request(self, request_id: int) -> OaRequest:
        return self._read(self.oa.get_request, request_id)

    def fetch_completed(self, after_cursor: int, max_items: int) -> CompletedBatch:
        return self._read(self.oa.fetch_completed, after_cursor, max_items)

    def _read(self, call: Callable[..., T], *args) -> T:
        attempt = 1
        while True:
            try:
                return call(*args)
            except OaError as exc:
                if not rule_for(exc).passing:  # a refusal: asking again cannot help
                    raise
                if attempt >= self.policy.max_attempts:
                    raise type(exc)(f"gave up after {attempt} attempts: {exc.message}", **exc.data) from exc
                delay = self.policy.delay(attempt, self.rng)
                log.warning("%s; asking again in %.1fs (attempt %d of %d)", exc.log_line(), delay, attempt + 1,
                            self.policy.max_attempts)
                self.sleep(delay)
                attempt += 1
