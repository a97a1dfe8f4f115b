"""The simulator's own SQLite file (``<data dir>/oa-sim.db``).

Plain ``sqlite3``: the simulator is a test tool with one process, so one connection
guarded by a lock keeps every call thread-safe (the server answers on many threads,
the decider writes on its own).  The counting methods are what ``archive-oa demo``
reads to prove there are no duplicates and nothing was lost.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import threading
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

DB_FILE_NAME = "oa-sim.db"
#: The OA lives in China Standard Time; its timestamps carry the +08:00 offset.
OA_TIMEZONE = dt.timezone(dt.timedelta(hours=8), "CST")

IN_PROGRESS = "IN_PROGRESS"
DECIDED_STATUSES = ("APPROVED", "REJECTED", "WITHDRAWN")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    external_key  TEXT,
    workflow_code TEXT NOT NULL,
    title         TEXT NOT NULL,
    creator       TEXT NOT NULL,
    level         INTEGER NOT NULL DEFAULT 0,
    remark        TEXT,
    main_fields   TEXT NOT NULL,  -- JSON [[name, value], ...]
    detail_tables TEXT NOT NULL,  -- JSON [[table name, [[[name, value], ...], ...]], ...]
    attachments   TEXT NOT NULL,  -- JSON [{name, mimeType, size, url}, ...]; bytes are not kept
    status        TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    decide_at     REAL NOT NULL,  -- epoch seconds when the simulated approvers act
    finished_at   TEXT
);
CREATE INDEX IF NOT EXISTS ix_requests_external_key ON requests (external_key);
CREATE INDEX IF NOT EXISTS ix_requests_due ON requests (status, decide_at);
CREATE TABLE IF NOT EXISTS logs (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id INTEGER NOT NULL REFERENCES requests (id),
    step       INTEGER NOT NULL,
    approver   TEXT NOT NULL,
    action     TEXT NOT NULL,
    comment    TEXT,
    time       TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS ix_logs_request ON logs (request_id);
CREATE TABLE IF NOT EXISTS completed (
    cursor       INTEGER PRIMARY KEY AUTOINCREMENT,  -- AUTOINCREMENT: never reused
    request_id   INTEGER NOT NULL UNIQUE REFERENCES requests (id),
    acknowledged INTEGER NOT NULL DEFAULT 0
);
"""

Fields = tuple[tuple[str, str | None], ...]


@dataclass(frozen=True)
class AttachmentInfo:
    name: str
    mime_type: str | None
    size: int  # bytes received inline; 0 for a url reference
    url: str | None


@dataclass(frozen=True)
class RequestForm:
    """What a caller submits: the main table, detail tables and attachments."""

    workflow_code: str
    title: str
    creator: str
    level: int = 0
    external_key: str | None = None
    main_fields: Fields = ()
    detail_tables: tuple[tuple[str, tuple[Fields, ...]], ...] = ()
    attachments: tuple[AttachmentInfo, ...] = ()
    remark: str | None = None

    def main_value(self, name: str) -> str | None:
        return next((value for key, value in self.main_fields if key == name), None)

    def detail_values(self, name: str) -> list[str]:
        """Every value of field ``name`` in every row of every detail table."""
        return [
            value
            for _table, rows in self.detail_tables
            for row in rows
            for key, value in row
            if key == name and value is not None
        ]


@dataclass(frozen=True)
class LogEntry:
    step: int
    approver: str
    action: str  # APPROVE, REJECT, WITHDRAW
    comment: str | None
    time: dt.datetime


@dataclass(frozen=True)
class StoredRequest:
    request_id: int
    form: RequestForm
    status: str
    created_at: dt.datetime
    finished_at: dt.datetime | None
    logs: tuple[LogEntry, ...]


@dataclass(frozen=True)
class CompletedEntry:
    cursor: int
    request_id: int
    external_key: str | None
    status: str
    finished_at: dt.datetime
    logs: tuple[LogEntry, ...]


def now() -> dt.datetime:
    return dt.datetime.now(OA_TIMEZONE).replace(microsecond=0)


class SimulatorDb:
    def __init__(self, data_dir: str | Path) -> None:
        path = Path(data_dir)
        path.mkdir(parents=True, exist_ok=True)
        self.path = path / DB_FILE_NAME
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA busy_timeout=10000")
        self._conn.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # --- writes -----------------------------------------------------------------

    def create(self, form: RequestForm, decide_at: float) -> int:
        with self._lock, self._transaction():
            cursor = self._conn.execute(
                "INSERT INTO requests (external_key, workflow_code, title, creator, level, remark,"
                " main_fields, detail_tables, attachments, status, created_at, decide_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    form.external_key,
                    form.workflow_code,
                    form.title,
                    form.creator,
                    form.level,
                    form.remark,
                    json.dumps(form.main_fields, ensure_ascii=False),
                    json.dumps(form.detail_tables, ensure_ascii=False),
                    json.dumps([a.__dict__ for a in form.attachments], ensure_ascii=False),
                    IN_PROGRESS,
                    now().isoformat(),
                    decide_at,
                ),
            )
            return int(cursor.lastrowid)

    def record_decision(
        self, request_id: int, status: str, finished_at: dt.datetime, logs: tuple[LogEntry, ...]
    ) -> CompletedEntry | None:
        """Store the outcome and queue it; None when the request was already decided."""
        if status not in DECIDED_STATUSES:
            raise ValueError(f"status {status!r} is not a decision; use one of {DECIDED_STATUSES}")
        with self._lock, self._transaction():
            changed = self._conn.execute(
                "UPDATE requests SET status = ?, finished_at = ? WHERE id = ? AND status = ?",
                (status, finished_at.isoformat(), request_id, IN_PROGRESS),
            ).rowcount
            if not changed:
                return None
            self._conn.executemany(
                "INSERT INTO logs (request_id, step, approver, action, comment, time)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                [(request_id, e.step, e.approver, e.action, e.comment, e.time.isoformat()) for e in logs],
            )
            cursor = self._conn.execute("INSERT INTO completed (request_id) VALUES (?)", (request_id,))
            external_key = self._conn.execute(
                "SELECT external_key FROM requests WHERE id = ?", (request_id,)
            ).fetchone()[0]
            return CompletedEntry(int(cursor.lastrowid), request_id, external_key, status, finished_at, logs)

    def acknowledge(self, up_to_cursor: int) -> int:
        with self._lock, self._transaction():
            return self._conn.execute(
                "UPDATE completed SET acknowledged = 1 WHERE cursor <= ? AND acknowledged = 0",
                (up_to_cursor,),
            ).rowcount

    # --- reads ------------------------------------------------------------------

    def get(self, request_id: int) -> StoredRequest | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT id, external_key, workflow_code, title, creator, level, remark, main_fields,"
                " detail_tables, attachments, status, created_at, finished_at"
                " FROM requests WHERE id = ?",
                (request_id,),
            ).fetchone()
            if row is None:
                return None
            return self._stored(row, self._logs(request_id))

    def find(self, external_key: str) -> list[int]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT id FROM requests WHERE external_key = ? ORDER BY id", (external_key,)
            ).fetchall()
        return [row[0] for row in rows]

    def due(self, at_epoch: float, limit: int = 100) -> list[StoredRequest]:
        """Requests in progress whose decision time has come, oldest first."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT id, external_key, workflow_code, title, creator, level, remark, main_fields,"
                " detail_tables, attachments, status, created_at, finished_at"
                " FROM requests WHERE status = ? AND decide_at <= ? ORDER BY id LIMIT ?",
                (IN_PROGRESS, at_epoch, limit),
            ).fetchall()
            return [self._stored(row, ()) for row in rows]

    def fetch_completed(
        self, after_cursor: int, max_items: int, include_acknowledged: bool = False
    ) -> list[CompletedEntry]:
        """The queue after ``after_cursor``; acknowledged entries only when asked (for checks)."""
        acknowledged = (0, 1) if include_acknowledged else (0,)
        with self._lock:
            rows = self._conn.execute(
                "SELECT c.cursor, r.id, r.external_key, r.status, r.finished_at"
                " FROM completed c JOIN requests r ON r.id = c.request_id"
                f" WHERE c.cursor > ? AND c.acknowledged IN ({', '.join('?' * len(acknowledged))})"
                " ORDER BY c.cursor LIMIT ?",
                (after_cursor, *acknowledged, max_items),
            ).fetchall()
            return [
                CompletedEntry(
                    cursor, request_id, key, status, dt.datetime.fromisoformat(finished), self._logs(request_id)
                )
                for cursor, request_id, key, status, finished in rows
            ]

    def count_requests(self) -> int:
        with self._lock:
            return self._conn.execute("SELECT count(*) FROM requests").fetchone()[0]

    def requests_per_external_key(self) -> dict[str, int]:
        """How many requests each externalKey produced: any value above 1 is a duplicate."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT external_key, count(*) FROM requests WHERE external_key IS NOT NULL"
                " GROUP BY external_key"
            ).fetchall()
        return dict(rows)

    def status_counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._conn.execute("SELECT status, count(*) FROM requests GROUP BY status").fetchall()
        return dict(rows)

    def decided(self) -> dict[str, int]:
        """Counts of decided requests by status (APPROVED, REJECTED, WITHDRAWN; zeros included)."""
        counts = Counter({status: 0 for status in DECIDED_STATUSES})
        counts.update({k: v for k, v in self.status_counts().items() if k in DECIDED_STATUSES})
        return dict(counts)

    # --- helpers ----------------------------------------------------------------

    def _transaction(self):
        return _Transaction(self._conn)

    def _logs(self, request_id: int) -> tuple[LogEntry, ...]:
        rows = self._conn.execute(
            "SELECT step, approver, action, comment, time FROM logs WHERE request_id = ? ORDER BY step, id",
            (request_id,),
        ).fetchall()
        return tuple(
            LogEntry(step, approver, action, comment, dt.datetime.fromisoformat(time))
            for step, approver, action, comment, time in rows
        )

    @staticmethod
    def _stored(row, logs: tuple[LogEntry, ...]) -> StoredRequest:
        (rid, key, code, title, creator, level, remark, main, details, attachments, status, created, finished) = row
        form = RequestForm(
            workflow_code=code,
            title=title,
            creator=creator,
            level=level,
            external_key=key,
            main_fields=tuple((n, v) for n, v in json.loads(main)),
            detail_tables=tuple(
                (name, tuple(tuple((n, v) for n, v in r) for r in rows)) for name, rows in json.loads(details)
            ),
            attachments=tuple(AttachmentInfo(**a) for a in json.loads(attachments)),
            remark=remark,
        )
        return StoredRequest(
            rid,
            form,
            status,
            dt.datetime.fromisoformat(created),
            dt.datetime.fromisoformat(finished) if finished else None,
            logs,
        )


class _Transaction:
    """BEGIN IMMEDIATE … COMMIT, rolled back on any error (autocommit connection)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def __enter__(self):
        self._conn.execute("BEGIN IMMEDIATE")
        return self._conn

    def __exit__(self, exc_type, exc, tb):
        self._conn.execute("ROLLBACK" if exc_type else "COMMIT")
        return False
