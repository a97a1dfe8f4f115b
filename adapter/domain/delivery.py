"""Outbox delivery rules: the states a delivery moves through and the retry policy.

Exactly-once in effect: after any failure that may have reached the OA, the next
attempt asks the OA for the idempotency key (``FindWorkflowRequests``) before it
sends again, so a request the OA already holds is adopted, not duplicated.
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import random
from dataclasses import dataclass


class DeliveryState(str, enum.Enum):
    PENDING = "PENDING"  # waiting for its first or next attempt (at next_attempt_at)
    IN_FLIGHT = "IN_FLIGHT"  # claimed by a worker until lease_until
    UNCERTAIN = "UNCERTAIN"  # the last attempt may have reached the OA: ask before resending
    DELIVERED = "DELIVERED"  # the OA holds exactly one request for the key
    DEAD = "DEAD"  # permanently failed or out of attempts: an operator decides (dead letters)


#: Which state may follow which.  Anything else is a bug and raises.
#: PENDING / UNCERTAIN / DEAD → DELIVERED is *adoption*: an outcome from the OA named the
#: request that carries the key (e.g. the OA decided a request whose creation timed out),
#: so the request exists and must never be sent again.
TRANSITIONS: dict[DeliveryState, frozenset[DeliveryState]] = {
    DeliveryState.PENDING: frozenset({DeliveryState.IN_FLIGHT, DeliveryState.DEAD, DeliveryState.DELIVERED}),
    DeliveryState.UNCERTAIN: frozenset({DeliveryState.IN_FLIGHT, DeliveryState.DEAD, DeliveryState.DELIVERED}),
    DeliveryState.IN_FLIGHT: frozenset(
        {DeliveryState.PENDING, DeliveryState.UNCERTAIN, DeliveryState.DELIVERED, DeliveryState.DEAD}
    ),
    DeliveryState.DELIVERED: frozenset(),
    DeliveryState.DEAD: frozenset({DeliveryState.PENDING, DeliveryState.UNCERTAIN, DeliveryState.DELIVERED}),
}


class IllegalTransition(Exception):
    pass


def check_transition(current: DeliveryState, new: DeliveryState) -> None:
    if new not in TRANSITIONS[current]:
        raise IllegalTransition(f"delivery cannot go from {current.value} to {new.value}")


def idempotency_key(voucher_id: str, content_sha256: str) -> str:
    """The key sent to the OA as externalKey: voucher id + content hash (short)."""
    return f"{voucher_id}:{content_sha256[:16]}"


def content_hash(canonical_bytes: bytes) -> str:
    return hashlib.sha256(canonical_bytes).hexdigest()


class FailureKind(str, enum.Enum):
    TRANSIENT = "TRANSIENT"  # nothing reached the OA, or it failed before acting
    AMBIGUOUS = "AMBIGUOUS"  # may have reached the OA: ask before resending
    PERMANENT = "PERMANENT"  # resending cannot help


class FailureClass(str, enum.Enum):
    """What went wrong, as an operator fixes it (``FailureKind`` says what it means for a retry)."""

    UNREACHABLE = "unreachable"  # nothing reached the OA: it is down, or [oa] url is wrong
    CREDENTIALS = "credentials refused"  # the OA refused [oa] user/password
    REJECTED = "rejected by the OA"  # the OA refused this request (a client fault)
    SERVER_FAULT = "server fault"  # the OA failed while handling the call
    AMBIGUOUS = "ambiguous"  # no clear answer (timeout, dropped connection): may have arrived
    CONTENT = "content"  # the voucher cannot be made into a request (invalid, bytes missing or damaged)
    ERROR = "unexpected error"  # a bug of the adapter: see its log

    @property
    def outage(self) -> bool:
        """The OA as a whole is unusable: every other delivery would fail the same way now."""
        return self in (FailureClass.UNREACHABLE, FailureClass.CREDENTIALS)


@dataclass(frozen=True)
class RetryDecision:
    dead: bool
    next_attempt_at: dt.datetime | None
    reason: str


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter, capped; dead after ``max_attempts``."""

    base_seconds: float = 2.0
    max_seconds: float = 300.0
    max_attempts: int = 12
    jitter: float = 0.5  # fraction of the delay that is randomised

    def delay(self, attempts: int, rng: random.Random | None = None) -> float:
        """Delay before attempt ``attempts + 1`` (``attempts`` >= 1 already made)."""
        raw = min(self.max_seconds, self.base_seconds * (2 ** max(0, attempts - 1)))
        spread = raw * self.jitter
        return raw - spread + (rng or random).random() * spread

    def decide(
        self, kind: FailureKind, attempts: int, now: dt.datetime, rng: random.Random | None = None
    ) -> RetryDecision:
        if kind is FailureKind.PERMANENT:
            return RetryDecision(True, None, "permanent failure")
        if attempts >= self.max_attempts:
            return RetryDecision(True, None, f"gave up after {attempts} attempts")
        when = now + dt.timedelta(seconds=self.delay(attempts, rng))
        return RetryDecision(False, when, f"retry {attempts + 1} of {self.max_attempts}")
