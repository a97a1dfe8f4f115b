"""How ``sync`` and ``dead-letters list`` print: a table for people, ``--json`` for scripts, same facts."""

from __future__ import annotations

import json

from ..services.sync import SyncJobStatus, TriggerResult
from ..store.outbox import Delivery
from ..sync.failures import failure_class_of
from ..sync.worker import DeliveryCounts
from .output import table

def sync_dict(job: TriggerResult, status: SyncJobStatus, counts: DeliveryCounts) -> dict:
    """The run as one object; every count is of vouchers, except ``attempts``."""
    return {
        "job": status.job_id,
        "state": status.state,
        "vouchers": status.queued,
        "delivered": status.delivered,
        "retrying": status.failed,
        "dead": status.dead,
        "waiting": status.waiting,
        "queued_now": job.queued - job.taken_over,
        "already_waiting": job.taken_over,
        "dead_letters_not_resent": job.dead_letters,
        "left_to_other_jobs": job.elsewhere,
        "failures": [
            {"class": g.failure.value, "vouchers": g.vouchers, "last_error": g.last_error} for g in status.failures
        ],
        "attempts": counts.claimed,
        "anomalies": counts.anomalies,
    }


def sync_text(job: TriggerResult, status: SyncJobStatus, counts: DeliveryCounts, as_json: bool) -> str:
    if as_json:
        return json.dumps(sync_dict(job, status, counts), ensure_ascii=False)
    text = table(["job", "state", "vouchers", "delivered", "retrying", "dead", "waiting"],
                 [[status.job_id, status.state, status.queued, status.delivered, status.failed, status.dead,
                   status.waiting]])
    for group in status.failures:  # a line each: the last error is long and says what to fix
        text += f"\n{group.failure.value}: {group.vouchers} vouchers; last error: {group.last_error}"
    return text


def dead_letter_dict(delivery: Delivery) -> dict:
    return {
        "id": delivery.id,
        "voucher": delivery.voucher_id,
        "version": delivery.version,
        "attempts": delivery.attempts,
        "updated": delivery.updated_at.isoformat(),
        "failure": failure_class_of(delivery.last_error).value,
        "last_error": delivery.last_error or "",
    }


def dead_letters_text(dead: list[Delivery], as_json: bool) -> str:
    if as_json:
        return json.dumps([dead_letter_dict(d) for d in dead], ensure_ascii=False)
    return table(["id", "voucher", "version", "attempts", "updated", "failure", "last error"],
                 [[d.id, d.voucher_id, d.version, d.attempts, d.updated_at.strftime("%Y-%m-%d %H:%M:%S"),
                   failure_class_of(d.last_error).value, (d.last_error or "")[:80]] for d in dead])
