"""Outbox state machine and retry policy, as plain units (no database, no OA)."""

from __future__ import annotations

import datetime as dt
import logging
import random

import pytest

from archive_oa.domain.delivery import (
    TRANSITIONS,
    DeliveryState,
    FailureClass,
    FailureKind,
    IllegalTransition,
    RetryPolicy,
    check_transition,
    idempotency_key,
)
from archive_oa.errors import (
    IntegrityError,
    NotFound,
    OaAmbiguous,
    OaAuthenticationFailed,
    OaRejected,
    OaServerFault,
    OaUnreachable,
    ValidationFailed,
)
from archive_oa.services.oa_reads import RetryingReads
from archive_oa.sync.failures import error_text, failure_class_of, rule_for
from archive_oa.sync.worker import classify

S = DeliveryState
NOW = dt.datetime(2024, 3, 1, 2, 0, tzinfo=dt.timezone.utc)


@pytest.mark.parametrize(
    "current,new",
    [
        (S.PENDING, S.IN_FLIGHT),
        (S.UNCERTAIN, S.IN_FLIGHT),
        (S.IN_FLIGHT, S.DELIVERED),
        (S.IN_FLIGHT, S.PENDING),
        (S.IN_FLIGHT, S.UNCERTAIN),
        (S.IN_FLIGHT, S.DEAD),
        (S.PENDING, S.DEAD),
        (S.DEAD, S.PENDING),
        (S.DEAD, S.UNCERTAIN),
        # adoption: an OA outcome named the request carrying the key
        (S.PENDING, S.DELIVERED),
        (S.UNCERTAIN, S.DELIVERED),
        (S.DEAD, S.DELIVERED),
    ],
)
def test_allowed_transitions(current, new):
    check_transition(current, new)


@pytest.mark.parametrize(
    "current,new",
    [
        (S.DELIVERED, S.PENDING),  # delivered is final: never sent twice
        (S.DELIVERED, S.IN_FLIGHT),
        (S.UNCERTAIN, S.PENDING),  # doubt is only resolved by asking the OA
        (S.PENDING, S.UNCERTAIN),
        (S.DEAD, S.IN_FLIGHT),  # dead letters come back only through retry
        (S.IN_FLIGHT, S.IN_FLIGHT),
    ],
)
def test_forbidden_transitions(current, new):
    with pytest.raises(IllegalTransition, match=f"{current.value} to {new.value}"):
        check_transition(current, new)


def test_every_state_has_a_rule_and_delivered_is_final():
    assert set(TRANSITIONS) == set(S)
    assert TRANSITIONS[S.DELIVERED] == frozenset()


def test_idempotency_key_is_voucher_and_content():
    key = idempotency_key("HD01-2024-03-记-0001", "ab" * 32)
    assert key == "HD01-2024-03-记-0001:" + "ab" * 8
    assert idempotency_key("V", "cd" * 32) != idempotency_key("V", "ab" * 32)


def test_backoff_grows_monotonically_until_the_cap():
    policy = RetryPolicy(base_seconds=2, max_seconds=60, max_attempts=20, jitter=0.0)
    delays = [policy.delay(n) for n in range(1, 12)]
    assert delays[:6] == [2, 4, 8, 16, 32, 60]
    assert all(a <= b for a, b in zip(delays, delays[1:]))
    assert max(delays) == 60


def test_jitter_stays_within_its_bounds():
    policy = RetryPolicy(base_seconds=2, max_seconds=300, max_attempts=20, jitter=0.5)
    rng = random.Random(7)
    for attempts in range(1, 15):
        raw = min(300, 2 * 2 ** (attempts - 1))
        samples = [policy.delay(attempts, rng) for _ in range(200)]
        assert all(raw * 0.5 <= s <= raw for s in samples)
        assert len(set(samples)) > 1  # actually randomised


def test_decide_retries_then_gives_up_after_max_attempts():
    policy = RetryPolicy(base_seconds=1, max_seconds=10, max_attempts=3, jitter=0.0)
    first = policy.decide(FailureKind.TRANSIENT, 1, NOW)
    assert not first.dead and first.next_attempt_at == NOW + dt.timedelta(seconds=1)
    assert policy.decide(FailureKind.AMBIGUOUS, 2, NOW).next_attempt_at == NOW + dt.timedelta(seconds=2)
    last = policy.decide(FailureKind.TRANSIENT, 3, NOW)
    assert last.dead and last.next_attempt_at is None and "3 attempts" in last.reason


def test_permanent_failure_is_dead_at_once():
    decision = RetryPolicy().decide(FailureKind.PERMANENT, 1, NOW)
    assert decision.dead and decision.next_attempt_at is None


@pytest.mark.parametrize(
    "exc,phase,kind",
    [
        (OaUnreachable("refused"), "send", FailureKind.TRANSIENT),
        (OaAmbiguous("timeout"), "send", FailureKind.AMBIGUOUS),
        (OaServerFault("soap:Server"), "send", FailureKind.AMBIGUOUS),
        (OaRejected("soap:Client"), "send", FailureKind.PERMANENT),
        (ValidationFailed("bad"), "render", FailureKind.PERMANENT),
        (NotFound("gone"), "render", FailureKind.PERMANENT),
        (OaAuthenticationFailed("bad password"), "send", FailureKind.TRANSIENT),  # config, not the delivery
        (RuntimeError("bug"), "render", FailureKind.TRANSIENT),  # never left the process
        (RuntimeError("bug"), "send", FailureKind.AMBIGUOUS),  # may have reached the OA
        (OaUnreachable("refused"), "find", FailureKind.AMBIGUOUS),  # doubt not resolved yet
    ],
)
def test_failure_classification(exc, phase, kind):
    assert classify(exc, phase) is kind


C, K = FailureClass, FailureKind


@pytest.mark.parametrize(
    "exc,cls,kind,level",
    [
        (OaUnreachable("refused"), C.UNREACHABLE, K.TRANSIENT, logging.WARNING),
        (OaAmbiguous("timeout"), C.AMBIGUOUS, K.AMBIGUOUS, logging.WARNING),
        (OaServerFault("soap:Server"), C.SERVER_FAULT, K.AMBIGUOUS, logging.WARNING),
        (OaRejected("soap:Client"), C.REJECTED, K.PERMANENT, logging.ERROR),
        # someone must fix [oa] user/password (ERROR), yet a delivery retries meanwhile instead of dying
        (OaAuthenticationFailed("bad password"), C.CREDENTIALS, K.TRANSIENT, logging.ERROR),
        (ValidationFailed("bad"), C.CONTENT, K.PERMANENT, logging.ERROR),
        (NotFound("gone"), C.CONTENT, K.PERMANENT, logging.ERROR),
        (IntegrityError("sha256 differs"), C.CONTENT, K.PERMANENT, logging.ERROR),
        (RuntimeError("bug"), C.ERROR, K.AMBIGUOUS, logging.ERROR),
    ],
)
def test_one_rule_per_failure_gives_its_class_retry_and_log_level_to_every_caller(exc, cls, kind, level):
    rule = rule_for(exc)
    assert (rule.failure, rule.retry, rule.level) == (cls, kind, level)
    assert classify(exc, "send") is kind  # the delivery worker
    assert failure_class_of(error_text("send", exc, "retry 2 of 12")) is cls  # a job's failure counts
    calls = []

    def read():  # OA reads ask again only what may pass by itself
        calls.append(1)
        raise exc

    reads = RetryingReads(object(), sleep=lambda _: None)
    with pytest.raises(type(exc)):
        reads._read(read)
    assert len(calls) == (reads.policy.max_attempts if rule.passing else 1)
