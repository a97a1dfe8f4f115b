"""The audit record of one gateway call, committed with the change the call makes.

A ``CallAudit`` is installed as the store's write hook for the duration of a call
(``with audit.watching(): …``): every write transaction the call opens appends the
call's record just before it commits, so the change and its record commit or roll
back together.  A call that changed nothing (a read, a denial, a failure) gets its
record when it ends (``succeeded`` / ``failed``) through the store's ``GroupWriter``:
the records of calls ending at the same time are appended in one write transaction,
and each call waits until that transaction has committed its record.
One mechanism for every operation: the operations themselves know nothing of it.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import logging
import threading
import time
import weakref
from contextlib import AbstractContextManager
from typing import Any, Callable, Iterable, Mapping

from ..errors import InternalError
from ..store.engine import write_hook
from . import audit

log = logging.getLogger(__name__)

#: WSGI environ key of the caller's address as resolved by the gateway (trusted proxies);
#: REMOTE_ADDR when not set.
CLIENT_ADDRESS_KEY = "archive_oa.client_address"
#: WSGI environ key of ``time.monotonic()`` when the request arrived: durations count from
#: there (reading and parsing a large body included), else from the call wrapper.
STARTED_KEY = "archive_oa.started"


def client_address(environ: Mapping[str, Any]) -> str | None:
    return environ.get(CLIENT_ADDRESS_KEY) or environ.get("REMOTE_ADDR") or None


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


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
        clock: Callable[[], dt.datetime] = _utc_now,
        started: float | None = None,  # time.monotonic() when the request arrived
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
        if self.committed:
            return
        group_writer(self.store).write(self._fields(audit.OK))

    def failed(self, code: str) -> None:
        """Record a denied or failed call; never raises (the caller's fault must still go out)."""
        self._pending = None  # a record appended to a rolled-back transaction is gone with it
        extra = {"after_committed": list(self.committed)} if self.committed else {}
        try:
            group_writer(self.store).write(self._fields(code, extra))
        except Exception:  # noqa: BLE001 - logged; the original fault matters more to the caller
            log.exception("audit record of %s [%s] (outcome %s) could not be written",
                          self.operation, self.correlation_id, code)

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


class _Waiting:
    """One record handed to a ``GroupWriter``, and what became of it."""

    __slots__ = ("fields", "seq", "error", "done")

    def __init__(self, fields: Mapping[str, Any]) -> None:
        self.fields = fields
        self.seq: int | None = None
        self.error: BaseException | None = None
        self.done = False


class GroupWriter:
    """Group commit of audit records: one write transaction for the records of every
    call that ends while another transaction of records is being written.

    Nothing is written behind a caller's back: ``write`` returns only once the caller's
    record is committed, or raises ``AuditNotWritten`` when it could not be (a batch that
    fails is written again record by record, so only the records that fail alone fail).  No thread of its own: the first
    caller that finds no batch being written becomes the writer (leader) and takes
    every record waiting at that moment, its own included; the others (followers) wait
    for it.  So with one call at a time nothing waits longer than before, and under load
    SQLite's write lock is taken once per batch instead of once per call.

    The chain head is read inside that transaction (``audit.record_many``), as for a
    single record, so several processes or instances may share the database.
    """

    def __init__(self, store) -> None:
        self._store = weakref.ref(store)  # the registry below must not keep the store alive
        self._changed = threading.Condition()
        self._queue: list[_Waiting] = []
        self._writing = False

    def write(self, fields: Mapping[str, Any]) -> int:
        """Append one record (``audit.record``'s keyword arguments); its sequence number once committed."""
        entry = _Waiting(fields)
        with self._changed:
            self._queue.append(entry)
            while self._writing and not entry.done:
                self._changed.wait()
            if not entry.done:  # nobody writing: this caller writes what is waiting
                self._writing = True
                # At most one record per waiting thread: the batch is bounded by the server's threads.
                batch, self._queue = self._queue, []
        if not entry.done:
            self._lead(batch)
        if entry.error is not None:
            raise AuditNotWritten(
                f"the audit record of {fields.get('operation')} [{fields.get('correlation_id')}] "
                f"(outcome {fields.get('outcome')}) was not committed: {entry.error!r}"
            ) from entry.error
        return entry.seq

    def _lead(self, batch: list[_Waiting]) -> None:
        fatal: BaseException | None = None
        try:
            # A fresh context: the records carry no write hook of the leader's own call.
            self._write_batch(batch)
        except BaseException as exc:  # noqa: BLE001 - KeyboardInterrupt, SystemExit
            fatal = exc
            for entry in batch:
                if entry.seq is None and entry.error is None:
                    entry.error = exc
        with self._changed:
            for entry in batch:
                entry.done = True
            self._writing = False
            self._changed.notify_all()
        if fatal is not None:
            raise fatal  # not for the callers to swallow

    def _write_batch(self, batch: list[_Waiting]) -> None:
        """Commit ``batch`` in one transaction; if that fails, each record in its own, so
        one record the database refuses (or a failure of the moment) costs only its own
        caller, not the batch mates that happened to end at the same time."""
        try:
            seqs = contextvars.Context().run(self._commit, [entry.fields for entry in batch])
        except Exception as exc:  # noqa: BLE001 - handed to the callers below
            if len(batch) == 1:
                batch[0].error = exc
                return
            for entry in batch:
                try:
                    [entry.seq] = contextvars.Context().run(self._commit, [entry.fields])
                except Exception as own:  # noqa: BLE001 - handed to this caller
                    entry.error = own
            return
        for entry, seq in zip(batch, seqs):
            entry.seq = seq

    def _commit(self, records: list[Mapping[str, Any]]) -> list[int]:
        with self._store().transaction(immediate=True) as conn:
            return audit.record_many(conn, records)


_group_writers: "weakref.WeakKeyDictionary[Any, GroupWriter]" = weakref.WeakKeyDictionary()
_group_writers_lock = threading.Lock()


def group_writer(store) -> GroupWriter:
    """The one ``GroupWriter`` of ``store`` in this process (gone with the store)."""
    with _group_writers_lock:
        writer = _group_writers.get(store)
        if writer is None:
            writer = _group_writers[store] = GroupWriter(store)
        return writer


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
