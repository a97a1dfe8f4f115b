"""The audit record of one gateway call, committed with the change the call makes.

A ``CallAudit`` is installed as the store's write hook for the duration of a call
(``with audit.watching(): …``): every write transaction the call opens appends the
call's record just before it commits, so the change and its record commit or roll
back together.  A call that changed nothing (a read, a denial, a failure) gets its
record when it ends (``succeeded`` / ``failed``) through the store's group commit:
the records of calls ending at the same time are appended in one write transaction,
and each call waits until that transaction has committed its record.
One mechanism for every operation: the operations themselves know nothing of it.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import time
from contextlib import AbstractContextManager
from typing import Any, Callable, Iterable, Mapping

from ..domain.clock import utc_now
from ..errors import InternalError
from ..store.engine import write_hook
from ..wsgi_keys import CLIENT_ADDRESS_KEY, STARTED_KEY  # noqa: F401 (STARTED_KEY: read by callers)
from . import audit

log = logging.getLogger(__name__)



def client_address(environ: Mapping[str, Any]) -> str | None:
    return environ.get(CLIENT_ADDRESS_KEY) or environ.get("REMOTE_ADDR") or None


class CallAudit:
    """Who called which operation on which ids; recorded once per call (see module doc)."""

    def __init__(
        self,
        store,
        *,
        operation: str,
        source: str | None,
        correlation_id: str | None,
        targets: Iterable[str] = (),
        actor: str = "anonymous",
        clock: Callable[[], dt.datetime] = utc_now,
        started: float | None = None,  # time.monotonic() when the request arrived
        metrics=None,  # archive_oa.metrics.Metrics: the call is counted there by operation and outcome
    ) -> None:
        self.store = store
        self.operation = operation
        self.source = source
        self.correlation_id = correlation_id
        self.targets = tuple(targets)
        self.actor = actor
        self.details: dict[str, Any] = {}  # e.g. {"authenticated": False}
        self.clock = clock
        self.committed: list[int] = []  # sequence numbers committed with the call's changes
        self._started = time.monotonic() if started is None else started
        self._pending: int | None = None
        self._metrics = metrics

    def watching(self) -> AbstractContextManager[None]:
        """Inside, the call's write transactions carry its audit record."""
        return write_hook(self)

    # --- the store's write hook --------------------------------------------------

    def before_commit(self, conn) -> None:
        extra = {"write": len(self.committed) + 1} if self.committed else {}
        self._pending = self._append(conn, audit.OK, extra)

    def after_commit(self) -> None:
        if self._pending is not None:
            self.committed.append(self._pending)
            self._pending = None

    # --- the end of the call -----------------------------------------------------

    def succeeded(self) -> None:
        """A call that changed nothing is recorded now; returns once the record is
        committed, raises when it cannot be (fail closed)."""
        if not self.committed:
            commit_record(self.store, self._fields(audit.OK))
        self._count(audit.OK)

    def failed(self, code: str) -> None:
        """Record a denied or failed call; never raises (the caller's fault must still go out)."""
        self._pending = None  # a record appended to a rolled-back transaction is gone with it
        self._count(code)
        extra = {"after_committed": list(self.committed)} if self.committed else {}
        try:
            commit_record(self.store, self._fields(code, extra))
        except Exception:  # noqa: BLE001 - logged; the original fault matters more to the caller
            log.exception("audit record of %s [%s] (outcome %s) could not be written",
                          self.operation, self.correlation_id, code)

    def _count(self, outcome: str) -> None:
        if self._metrics is not None:
            self._metrics.gateway_call(self.operation, outcome)

    def _append(self, conn, outcome: str, extra: Mapping[str, Any] = {}) -> int:  # noqa: B006 - read only
        return audit.record(conn, **self._fields(outcome, extra))

    def _fields(self, outcome: str, extra: Mapping[str, Any] = {}) -> dict[str, Any]:  # noqa: B006 - read only
        return dict(
            actor=self.actor,
            source=self.source,
            operation=self.operation,
            targets=self.targets,
            outcome=outcome,
            duration_ms=round((time.monotonic() - self._started) * 1000),
            correlation_id=self.correlation_id,
            details={**self.details, **extra} or None,
            now=self.clock(),
        )


class AuditNotWritten(InternalError):
    """The transaction that was to commit a call's audit record failed (the cause is chained)."""


def commit_record(store, fields: Mapping[str, Any]) -> int:
    """Append one record (``audit.record``'s keyword arguments) through the store's group
    commit (``store.group_commit``): the records of calls ending at the same time share one
    write transaction.  Returns its sequence number once committed; raises
    ``AuditNotWritten`` when it could not be."""
    try:
        return store.group_commit.run(functools.partial(audit.record, **fields))
    except Exception as exc:
        raise AuditNotWritten(
            f"the audit record of {fields.get('operation')} [{fields.get('correlation_id')}] "
            f"(outcome {fields.get('outcome')}) was not committed: {exc!r}"
        ) from exc


def record_rejected_request(
    store,
    *,
    environ: Mapping[str, Any],
    code: str,
    correlation_id: str | None,
    operation: str | None = None,
    started: float | None = None,
    details: Mapping[str, Any] | None = None,
) -> None:
    """A request refused before it reached an operation (too large, not XML, a DTD, no
    Body, unknown operation, schema): recorded on its own; never raises."""
    call = CallAudit(store, operation=operation or "-", source=client_address(environ),
                     correlation_id=correlation_id, started=started)
    call.details.update(details or {})
    call.failed(code)
