"""The simulated approvers (审批人) and the thread that lets them decide.

A request walks three steps — department manager, finance manager, finance director —
and stops at the first rejection:
- an account listed in ``reject_accounts`` in any detail row: the finance manager rejects;
- an amount above ``reject_above``: the finance director rejects;
- otherwise everyone approves.
With ``withdraw_rate`` the requester withdraws (撤回) some requests before anyone acts.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import threading
import time
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Callable

from .config import SimulatorConfig
from .db import CompletedEntry, LogEntry, RequestForm, SimulatorDb, now

log = logging.getLogger(__name__)

DEPARTMENT_MANAGER = "张伟(部门经理)"
FINANCE_MANAGER = "王芳(财务经理)"
FINANCE_DIRECTOR = "李娜(财务总监)"


@dataclass(frozen=True)
class Decision:
    status: str  # APPROVED, REJECTED, WITHDRAWN
    logs: tuple[LogEntry, ...]


def decide(form: RequestForm, config: SimulatorConfig, rng: random.Random, at: dt.datetime) -> Decision:
    if config.withdraw_rate and rng.random() < config.withdraw_rate:
        return Decision("WITHDRAWN", (LogEntry(1, form.creator, "WITHDRAW", "申请人撤回", at),))

    logs = [LogEntry(1, DEPARTMENT_MANAGER, "APPROVE", "同意", at)]

    blocked = sorted(set(form.detail_values(config.account_field)) & set(config.reject_accounts))
    if blocked:
        comment = f"科目 {', '.join(blocked)} 不允许通过本流程报销，驳回"
        logs.append(LogEntry(2, FINANCE_MANAGER, "REJECT", comment, at))
        return Decision("REJECTED", tuple(logs))
    logs.append(LogEntry(2, FINANCE_MANAGER, "APPROVE", "单据齐全，同意", at))

    amount_problem = _amount_problem(form, config)
    if amount_problem:
        logs.append(LogEntry(3, FINANCE_DIRECTOR, "REJECT", amount_problem, at))
        return Decision("REJECTED", tuple(logs))
    logs.append(LogEntry(3, FINANCE_DIRECTOR, "APPROVE", "同意", at))
    return Decision("APPROVED", tuple(logs))


def _amount_problem(form: RequestForm, config: SimulatorConfig) -> str | None:
    """The director's reason to reject on amount, or None."""
    if config.reject_above is None:
        return None
    raw = form.main_value(config.amount_field)
    if raw is None or not raw.strip():
        return None  # a form without the amount field is not the director's business
    try:
        amount = Decimal(raw.strip().replace(",", ""))
    except InvalidOperation:
        return f"金额字段 {config.amount_field} 的值 {raw!r} 无法识别，驳回"
    if amount > config.reject_above:
        return f"金额 {amount} 超出授权 {config.reject_above}，驳回"
    return None


class Decider:
    """Background thread: decides every request whose ``decide_after`` delay has passed.

    ``on_decided`` (the callback to the adapter) runs after the decision is committed;
    its failure is logged and the polling queue still carries the outcome.
    """

    def __init__(
        self,
        db: SimulatorDb,
        config_source: Callable[[], SimulatorConfig],
        on_decided: Callable[[CompletedEntry], None] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._db = db
        self._config = config_source
        self._on_decided = on_decided
        self._rng = rng or random.Random()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="oa-sim-decider", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def decide_due(self) -> int:
        """One pass: decide what is due now; returns how many were decided."""
        config = self._config()
        decided = 0
        for request in self._db.due(time.time()):
            decision = decide(request.form, config, self._rng, now())
            entry = self._db.record_decision(request.request_id, decision.status, now(), decision.logs)
            if entry is None:
                continue
            decided += 1
            if self._on_decided is not None:
                try:
                    self._on_decided(entry)
                except Exception:  # the callback is best effort; polling still has it
                    log.warning("callback for OA request %s failed", entry.request_id, exc_info=True)
        return decided

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.decide_due()
            except Exception:  # keep deciding after a transient database error
                log.exception("OA simulator decider pass failed")
            interval = min(0.2, max(0.02, self._config().decide_after / 4))
            self._stop.wait(interval)
