"""Apply an approval outcome from the OA to the archive — by poll or by callback.

Idempotent on (request, state, finishedAt): every outcome seen is recorded in
``workflow_results`` under that key, and a repeat returns the first answer with
``duplicate=True`` and changes nothing.  An older outcome arriving after a newer
one is recorded but does not overwrite the voucher's state.

The request is found by its OA id or by its external key; when the worker has not
yet settled its delivery (the OA decided before the adapter learnt the request id,
e.g. after a commit-then-timeout) the outbox row of that key identifies the voucher,
so no outcome is lost to that race.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from ..domain.delivery import DeliveryState
from ..domain.model import WorkflowInfo, WorkflowOutcome, WorkflowState
from ..errors import Issue, NotFound, ValidationFailed
from ..store import outbox
from ..store.sync_tables import deliveries, workflow_results
from .repo import ArchiveRepo, default_repo


@dataclass(frozen=True)
class OutcomeResult:
    accepted: bool
    voucher_id: str | None
    voucher_state: WorkflowState | None
    duplicate: bool
    applied: bool = False  # the voucher changed (False for repeats and stale outcomes)


def outcome_key(request_ref: str, state: WorkflowState, finished_at: dt.datetime) -> str:
    """The idempotency key of an outcome: request, state, finishedAt (UTC, microseconds)."""
    instant = finished_at.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return f"{request_ref}|{state.value}|{instant}"


def apply_outcome(
    conn: sa.Connection,
    outcome: WorkflowOutcome,
    *,
    via: str,
    now: dt.datetime,
    repo: ArchiveRepo | None = None,
) -> OutcomeResult:
    """Write a decided outcome into the voucher's record in the caller's transaction.

    Raises ``ValidationFailed`` for an outcome that is not a decision, ``NotFound``
    when neither the request id nor the external key is one of ours.  Both are
    raised before anything is written.
    """
    repo = repo or default_repo()
    finished_at = _checked(outcome)
    request_id = str(outcome.oa_request_id) if outcome.oa_request_id not in (None, "") else None
    voucher_id, version, key, mapped_id = _resolve(conn, repo, request_id, outcome.external_key)
    request_id = mapped_id or request_id
    if key and conn.dialect.name == "postgresql":
        # Serialise with the worker settling this key's delivery (DeliveryWorker._delivered):
        # the voucher is read after the lock, so neither side overwrites the other.
        conn.execute(sa.select(deliveries.c.id).where(deliveries.c.idempotency_key == key).with_for_update())
    voucher = repo.load_voucher(conn, voucher_id)
    if voucher is None:
        raise NotFound(f"voucher {voucher_id} of OA request {request_id or key} is no longer in the archive")

    okey = outcome_key(request_id or f"key:{key}", outcome.state, finished_at)
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    recorded = conn.execute(
        insert(workflow_results)
        .values(
            outcome_key=okey,
            oa_request_id=request_id,
            external_key=key,
            state=outcome.state.value,
            finished_at=finished_at,
            via=via,
            voucher_id=voucher_id,
            accepted=True,
            applied=False,
            received_at=now,
        )
        .on_conflict_do_nothing(index_elements=["outcome_key"])
        .returning(workflow_results.c.id)  # INSERT rowcount is -1 on psycopg
    ).first()
    if not recorded:
        first = conn.execute(sa.select(workflow_results).where(workflow_results.c.outcome_key == okey)).one()
        state = WorkflowState(first.voucher_state) if first.voucher_state else None
        return OutcomeResult(first.accepted, first.voucher_id, state, duplicate=True)

    current = voucher.workflow or WorkflowInfo()
    if current.state is outcome.state and current.decided_at == finished_at:
        result = OutcomeResult(True, voucher_id, current.state, duplicate=True)  # same decision, other path
    elif current.state.decided and current.decided_at is not None and current.decided_at > finished_at:
        result = OutcomeResult(True, voucher_id, current.state, duplicate=False)  # stale: keep the newer one
    else:
        repo.set_workflow(
            conn,
            voucher_id,
            state=outcome.state,
            oa_request_id=request_id or current.oa_request_id,
            decided_at=finished_at,
            approvals=tuple(outcome.approvals),
        )
        result = OutcomeResult(True, voucher_id, outcome.state, duplicate=False, applied=True)
    if mapped_id is None and request_id and key:  # learnt which request carries the key
        repo.map_request(conn, external_key=key, voucher_id=voucher_id, version=version, oa_request_id=request_id)
        _adopt_delivery(conn, key, request_id, now)
        if not result.applied and current.oa_request_id is None:  # the voucher learns its request id too
            repo.set_workflow(conn, voucher_id, state=current.state, oa_request_id=request_id)

    conn.execute(
        sa.update(workflow_results)
        .where(workflow_results.c.outcome_key == okey)
        .values(accepted=result.accepted, applied=result.applied, voucher_state=result.voucher_state.value)
    )
    return result


def _adopt_delivery(conn, key: str, request_id: str, now: dt.datetime) -> None:
    """The outcome proves the OA holds ``request_id`` for ``key``: settle a waiting delivery.

    Without this a delivery waiting to retry after an ambiguous failure would stay open
    (and its job RUNNING) although its voucher is already decided.
    """
    delivery = outbox.find_by_key(conn, key)
    if delivery is not None and delivery.state in (
        DeliveryState.PENDING, DeliveryState.UNCERTAIN, DeliveryState.DEAD
    ):
        outbox.adopt(conn, delivery, oa_request_id=request_id, now=now)


def outcome_issues(outcome: WorkflowOutcome) -> list[Issue]:
    """What makes ``outcome`` no decision to apply; SubmitWorkflowResult's request check reports the same."""
    issues = []
    if not (outcome.oa_request_id or outcome.external_key):
        issues.append(Issue("oaRequestId", "required", "give oaRequestId or externalKey to name the workflow request"))
    if not outcome.state.decided:
        issues.append(Issue("state", "enum", f"state {outcome.state.value} must be APPROVED, REJECTED or WITHDRAWN"))
    finished = outcome.finished_at
    if finished is None or finished.tzinfo is None or finished.utcoffset() is None:
        issues.append(Issue("finishedAt", "timezone",
                            "finishedAt must carry a time zone, e.g. 2024-03-01T10:00:00+08:00"))
    return issues


def _checked(outcome: WorkflowOutcome) -> dt.datetime:
    issues = outcome_issues(outcome)
    if issues:
        raise ValidationFailed("the workflow outcome is incomplete", issues)
    return outcome.finished_at.astimezone(dt.timezone.utc)


def _resolve(conn, repo: ArchiveRepo, request_id: str | None, key: str | None):
    """(voucher_id, version, external_key, mapped OA request id or None) of an outcome."""
    mapping = repo.lookup_request(conn, oa_request_id=request_id) if request_id else None
    if mapping is None and key:
        mapping = repo.lookup_request(conn, external_key=key)
        if mapping is not None and request_id and str(mapping.oa_request_id) != request_id:
            raise NotFound(
                f"OA request {request_id} carries key {key}, which is mapped to OA request "
                f"{mapping.oa_request_id}: a duplicate request in the OA, not ours to apply"
            )
    if mapping is not None:
        return mapping.voucher_id, mapping.version, mapping.external_key, str(mapping.oa_request_id)
    delivery = outbox.find_by_key(conn, key) if key else None
    if delivery is None:
        ref = f"OA request {request_id}" if request_id else f"external key {key}"
        raise NotFound(f"{ref} is not one of the adapter's requests; check oaRequestId / externalKey")
    return delivery.voucher_id, delivery.version, key, None
