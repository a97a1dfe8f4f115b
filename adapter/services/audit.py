"""The audit log: who did what, from where, to which ids, with what outcome.

``record`` appends one record in the caller's transaction, so the record commits or
rolls back with the change it describes.  Records form a hash chain: each record's
``hash`` is SHA-256 over a canonical serialisation of its fields and the previous
record's hash, and sequence numbers have no gaps; ``audit_verify`` walks the chain.

Concurrent writers are serialised while they append: on SQLite the caller's
transaction must be a write transaction (``store.transaction(immediate=True)``, which
holds the database's write lock), on PostgreSQL ``record`` takes a transaction-scoped
advisory lock.  Either way two records can never claim the same place in the chain.

Nothing secret goes in: callers pass ids and codes, never passwords, tokens or file
bytes, and ``details`` keys that look like secrets are redacted as a last line of defence.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Mapping

from sqlalchemy import Connection, insert, select, text

from ..domain.clock import utc_now
from ..errors import InternalError
from ..store.audit_tables import audit_log
from ..store.engine import holds_write_lock

OK = "OK"
#: ``prev_hash`` of record 1.
GENESIS_HASH = "0" * 64
#: Names the serialisation, so a future format can coexist with old records.
_FORMAT = "archive-oa-audit/1"
#: Any 64-bit key, the same in every instance: ``pg_advisory_xact_lock`` serialises appends.
_PG_LOCK_KEY = 0x61756469745F6C67  # "audit_lg"

_MAX_TARGETS = 100
_MAX_TEXT = {"actor": 128, "source": 128, "operation": 64, "outcome": 32, "correlation_id": 64}
_MAX_TARGET_CHARS = 200
_MAX_DETAIL_CHARS = 500
_SECRET_KEY = re.compile(r"pass|secret|token|nonce|credential|authori[sz]ation|content|bytes", re.I)
REDACTED = "[redacted]"


@dataclass(frozen=True)
class AuditRecord:
    seq: int
    at: dt.datetime
    actor: str
    source: str | None
    operation: str
    targets: tuple[str, ...]
    outcome: str
    duration_ms: int | None
    correlation_id: str | None
    details: Mapping[str, Any] | None
    prev_hash: str
    hash: str

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-friendly fields (export)."""
        return {
            "seq": self.seq,
            "at": format_instant(self.at),
            "actor": self.actor,
            "source": self.source,
            "operation": self.operation,
            "targets": list(self.targets),
            "outcome": self.outcome,
            "duration_ms": self.duration_ms,
            "correlation_id": self.correlation_id,
            "details": dict(self.details) if self.details is not None else None,
            "prev_hash": self.prev_hash,
            "hash": self.hash,
        }


def record(
    conn: Connection,
    *,
    actor: str,
    source: str | None,
    operation: str,
    targets: Iterable[str] = (),
    outcome: str,
    duration_ms: int | None = None,
    correlation_id: str | None = None,
    details: Mapping[str, Any] | None = None,
    now: dt.datetime | None = None,
) -> int:
    """Append one record in the caller's (write) transaction; returns its sequence number."""
    _require_write_transaction(conn)
    at = (now or utc_now()).astimezone(dt.timezone.utc)
    row = {
        "at": at,
        "actor": _clip(actor or "anonymous", "actor"),
        "source": None if source is None else _clip(source, "source"),
        "operation": _clip(operation, "operation"),
        "targets": _targets_json(targets),
        "outcome": _clip(outcome, "outcome"),
        "duration_ms": None if duration_ms is None else int(duration_ms),
        "correlation_id": None if correlation_id is None else _clip(correlation_id, "correlation_id"),
        "details": _details_json(details),
    }
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
    seq, prev_hash = _head(conn)
    row["seq"] = seq + 1
    row["prev_hash"] = prev_hash
    row["hash"] = record_hash(row)
    conn.execute(_insert_statement(), row)
    return row["seq"]


def record_hash(fields: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of the canonical serialisation of a record's stored fields.

    The serialisation is a JSON array in a fixed order (UTF-8, no spaces); ``targets``
    and ``details`` enter as the exact JSON text stored, and ``at`` as UTC ISO 8601 with
    microseconds, so the hash is recomputed from a row without any re-encoding doubt.
    """
    canonical = [
        _FORMAT,
        fields["seq"],
        format_instant(fields["at"]),
        fields["actor"],
        fields["source"],
        fields["operation"],
        fields["targets"],
        fields["outcome"],
        fields["duration_ms"],
        fields["correlation_id"],
        fields["details"],
        fields["prev_hash"],
    ]
    data = json.dumps(canonical, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return hashlib.sha256(data).hexdigest()


def format_instant(at: dt.datetime) -> str:
    return at.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# --- reading -------------------------------------------------------------------------


def head(conn: Connection) -> tuple[int, str]:
    """(sequence, hash) of the last record; (0, GENESIS_HASH) for an empty log."""
    return _head(conn)


def rows_from(conn: Connection, after_seq: int = 0, *, where=(), batch: int = 1000) -> Iterator[Mapping[str, Any]]:
    """Stored rows in sequence order, read in batches (the verifier's and the export's view)."""
    while True:
        rows = conn.execute(
            select(audit_log).where(audit_log.c.seq > after_seq, *where).order_by(audit_log.c.seq).limit(batch)
        ).mappings().all()
        yield from rows
        if len(rows) < batch:
            return
        after_seq = rows[-1]["seq"]


def find_records(
    conn: Connection,
    *,
    user: str | None = None,
    operation: str | None = None,
    since: dt.datetime | None = None,
    limit: int | None = None,
) -> list[AuditRecord]:
    """Matching records, oldest first; with ``limit`` only the newest ``limit`` of them."""
    where = _filters(user, operation, since)
    if limit is None:
        return list(iter_records(conn, user=user, operation=operation, since=since))
    newest = select(audit_log).where(*where).order_by(audit_log.c.seq.desc()).limit(limit)
    return [to_record(row) for row in reversed(conn.execute(newest).mappings().all())]


def iter_records(
    conn: Connection, *, user: str | None = None, operation: str | None = None, since: dt.datetime | None = None
) -> Iterator[AuditRecord]:
    """Matching records, oldest first, read in batches while ``conn``'s transaction is open
    (an export of millions of records stays small)."""
    return (to_record(row) for row in rows_from(conn, where=_filters(user, operation, since)))


def _filters(user: str | None, operation: str | None, since: dt.datetime | None) -> list:
    where = []
    if user is not None:
        where.append(audit_log.c.actor == user)
    if operation is not None:
        where.append(audit_log.c.operation == operation)
    if since is not None:
        where.append(audit_log.c.at >= since)
    return where


def to_record(row: Mapping[str, Any]) -> AuditRecord:
    return AuditRecord(
        seq=row["seq"],
        at=row["at"],
        actor=row["actor"],
        source=row["source"],
        operation=row["operation"],
        targets=tuple(json.loads(row["targets"])),
        outcome=row["outcome"],
        duration_ms=row["duration_ms"],
        correlation_id=row["correlation_id"],
        details=None if row["details"] is None else json.loads(row["details"]),
        prev_hash=row["prev_hash"],
        hash=row["hash"],
    )


# --- helpers -------------------------------------------------------------------------


def _head(conn: Connection) -> tuple[int, str]:
    last = conn.execute(_head_query()).first()
    return (last.seq, last.hash) if last else (0, GENESIS_HASH)


@functools.cache
def _head_query():
    # Built once: read by every append (composing a statement costs more than running it).
    return select(audit_log.c.seq, audit_log.c.hash).order_by(audit_log.c.seq.desc()).limit(1)


@functools.cache
def _insert_statement():
    # Built once: every gateway call appends, and composing the INSERT (with its cache key)
    # costs about as much Python time as SQLite takes to run it.
    return insert(audit_log)


def _require_write_transaction(conn: Connection) -> None:
    # A deferred SQLite transaction could read the head, lose the write lock to another
    # appender and then fail on insert: appends must hold the lock from the start.
    if not holds_write_lock(conn):
        raise InternalError(
            "audit.record must run in a write transaction: use store.transaction(immediate=True)"
        )


def _clip(value: str, field: str) -> str:
    return _clip_text(str(value), _MAX_TEXT[field])


def _clip_text(value: str, limit: int) -> str:
    # PostgreSQL text cannot hold NUL, and a claimed user name is the client's to choose:
    # written out, it cannot make the record (or, group-committed, its batch) fail.
    value = value.replace("\x00", "\\x00")
    return value if len(value) <= limit else value[: limit - 1] + "…"


def _targets_json(targets: Iterable[str]) -> str:
    items = [_clip_text(str(t), _MAX_TARGET_CHARS) for t in targets if t is not None and str(t) != ""]
    if len(items) > _MAX_TARGETS:
        items = items[: _MAX_TARGETS - 1] + [f"… {len(items) - _MAX_TARGETS + 1} more"]
    return _json(items)


def _details_json(details: Mapping[str, Any] | None) -> str | None:
    if not details:
        return None
    return _json({str(key): _detail_value(str(key), value) for key, value in details.items()})


def _detail_value(key: str, value: Any) -> Any:
    if _SECRET_KEY.search(key):
        return REDACTED
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, (list, tuple)):
        return [_detail_value(key + "[]", v) for v in value][:_MAX_TARGETS]
    return _clip_text(str(value), _MAX_DETAIL_CHARS)


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def targets_from(arguments, names: Sequence[str]) -> list[str]:
    """``name=value`` for each named argument that is set (``arguments.get(name)``);
    a list gives one entry per item."""
    found = []
    for name in names:
        value = arguments.get(name)
        if value is None or value == "":
            continue
        values = value if isinstance(value, (list, tuple)) else [value]
        found += [f"{name}={v}" for v in values if v is not None and v != ""]
    return found
