"""Why an OA call or a delivery attempt failed: one mapping, and the text and log lines that keep it.

The OA client already sorts every failure into the ``OaError`` tree by what it says about
the request (``adapter/oa/client.py``).  ``rule_for`` is the one place that says, per
error type, what an operator fixes (``FailureClass``), what it means for the next
attempt (``FailureKind``) and how loud it is in the log: the delivery worker, the failure
counts of a sync job, OA reads that ride out a passing fault and the schedulers' log
lines all ask it.  A delivery's ``last_error`` is written by ``error_text`` and read back
by ``failure_class_of``: one format, kept here.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass

from ..domain.delivery import FailureClass, FailureKind
from ..errors import (
    IntegrityError,
    NotFound,
    OaAmbiguous,
    OaAuthenticationFailed,
    OaRejected,
    OaServerFault,
    OaUnreachable,
    ValidationFailed,
)


@dataclass(frozen=True)
class FailureRule:
    """What one kind of failure means."""

    failure: FailureClass  # what went wrong, as an operator fixes it
    retry: FailureKind  # the delivery's next attempt after it failed sending
    passing: bool  # may pass by itself (the OA down, slow, failing); else someone must act

    @property
    def level(self) -> int:
        """The log level of its one line: WARNING while it may pass, ERROR when someone must act."""
        return logging.WARNING if self.passing else logging.ERROR


#: Most specific first: credentials refused is a kind of rejection.  Credentials refused are
#: retried (TRANSIENT): they are the configuration's fault, not the delivery's, and once
#: ``[oa] user``/``password`` are fixed the delivery goes through instead of being a dead letter.
_RULES: tuple[tuple[type[BaseException], FailureRule], ...] = (
    (OaAuthenticationFailed, FailureRule(FailureClass.CREDENTIALS, FailureKind.TRANSIENT, passing=False)),
    (OaRejected, FailureRule(FailureClass.REJECTED, FailureKind.PERMANENT, passing=False)),
    (OaUnreachable, FailureRule(FailureClass.UNREACHABLE, FailureKind.TRANSIENT, passing=True)),
    (OaServerFault, FailureRule(FailureClass.SERVER_FAULT, FailureKind.AMBIGUOUS, passing=True)),
    (OaAmbiguous, FailureRule(FailureClass.AMBIGUOUS, FailureKind.AMBIGUOUS, passing=True)),
    (ValidationFailed, FailureRule(FailureClass.CONTENT, FailureKind.PERMANENT, passing=False)),
    (NotFound, FailureRule(FailureClass.CONTENT, FailureKind.PERMANENT, passing=False)),
    (IntegrityError, FailureRule(FailureClass.CONTENT, FailureKind.PERMANENT, passing=False)),
)
#: Anything else is a bug of the adapter; during sending it may have reached the OA.
_UNEXPECTED = FailureRule(FailureClass.ERROR, FailureKind.AMBIGUOUS, passing=False)
_BY_NAME = {kind.__name__: rule.failure for kind, rule in _RULES}


def rule_for(exc: BaseException) -> FailureRule:
    for kind, rule in _RULES:
        if isinstance(exc, kind):
            return rule
    return _UNEXPECTED


def error_text(phase: str, exc: BaseException, reason: str) -> str:
    """``last_error`` of a failed attempt: ``<phase>: <exception type>: <message> (<reason>)``."""
    return f"{phase}: {type(exc).__name__}: {exc} ({reason})"


def failure_class_of(last_error: str | None) -> FailureClass:
    """The class of the failure ``error_text`` wrote; ERROR for any other text."""
    parts = (last_error or "").split(": ", 2)
    return _BY_NAME.get(parts[1], FailureClass.ERROR) if len(parts) == 3 else FailureClass.ERROR


@dataclass(frozen=True)
class FailedAttempt:
    """One failed delivery attempt, to be logged by its round (``RoundLog``)."""

    rule: FailureRule
    line: str  # the whole log line: delivery, phase, error class, operation, message, what happens next
    exc: BaseException | None = None  # set for a bug only: its traceback goes with the line


class RoundLog:
    """The log of one delivery round: an outage is a few lines, not one per voucher.

    The first failure of each class is logged at its level; the others of that class in
    the same round at DEBUG; ``end`` logs one line with the count per class.
    """

    def __init__(self, logger: logging.Logger) -> None:
        self.log = logger
        self.counts: Counter[FailureClass] = Counter()
        self.levels: dict[FailureClass, int] = {}

    def failed(self, attempt: FailedAttempt) -> None:
        cls = attempt.rule.failure
        first = cls not in self.counts
        self.counts[cls] += 1
        self.levels[cls] = attempt.rule.level
        self.log.log(attempt.rule.level if first else logging.DEBUG, "%s", attempt.line,
                     exc_info=attempt.exc if first else None)

    def end(self, attempts: int) -> None:
        if not self.counts:
            return
        per_class = ", ".join(f"{cls.value}: {n}" for cls, n in self.counts.most_common())
        self.log.log(max(self.levels.values()), "delivery round: %d of %d attempts unsuccessful (%s); "
                     "the first of each class is logged in full, the others at DEBUG",
                     sum(self.counts.values()), attempts, per_class)
