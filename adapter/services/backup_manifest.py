"""What a backup folder holds and how it is checked: the manifest, table digests, blob files.

Everything here reads SQLite files read-only (a snapshot in a backup folder, or a
restored database) and never the live store through the adapter's engine.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from sqlalchemy import NullPool, create_engine

from ..errors import IntegrityError
from ..security.secrets import KEY_FILE_NAME, missing_key_ids
from . import audit_verify

FORMAT = "archive-oa-backup/1"
MANIFEST = "manifest.json"
DATABASE = "archive-oa.db"
BLOBS = "blobs"
CHECKPOINT = "audit-checkpoint.json"
KEY = KEY_FILE_NAME
#: Columns holding the sha256 of a blob in the blob folder.
BLOB_REFERENCES = (("attachments", "sha256"), ("archived_document_files", "sha256"))
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class TableState:
    rows: int
    sha256: str  # over every row in rowid order


@dataclass(frozen=True)
class KeyState:
    """The key that decrypts the stored PasswordDigest secrets: is it in the backup, and which ids
    do the backed-up secrets need."""

    included: bool  # the backup holds KEY
    key_ids: tuple[str, ...]  # of the keys in KEY (included), else of the keys the source used
    needed: dict[str, int]  # key id -> stored secrets encrypted with it, in the backed-up database
    source: str  # where the source's keys were: the key file, or the setting
    reason: str | None = None  # why not included: "--without-key", "setting", "absent"
    sha256: str | None = None  # of KEY, when included

    @property
    def missing(self) -> list[str]:
        """Key ids the backed-up secrets need that none of the source's keys has."""
        return missing_key_ids(self.needed, self.key_ids)

    @property
    def note(self) -> str:
        if self.included:
            return f"included as {KEY} (mode 0600): restore puts it back"
        if self.reason == "setting":
            return f"NOT included: the keys come from {self.source}; keep that setting to restore"
        if self.reason == "absent":
            return f"NOT included: there was no key file at {self.source}"
        return (f"NOT included (backup --without-key): copy {self.source} by hand and keep it with this backup "
                f"(into this folder as {KEY} is fine: restore uses it when it holds the key the secrets need)")

    def to_json(self) -> dict:
        return {"included": self.included, "note": self.note, "file": KEY if self.included else None,
                "sha256": self.sha256, "key_ids": list(self.key_ids), "needed_key_ids": dict(sorted(self.needed.items())),
                "source": self.source, "reason": self.reason}

    @classmethod
    def from_json(cls, body: dict) -> "KeyState":
        return cls(included=bool(body["included"]), key_ids=tuple(body["key_ids"]),
                   needed={key: int(count) for key, count in body["needed_key_ids"].items()},
                   source=body["source"], reason=body.get("reason"), sha256=body.get("sha256"))


@dataclass
class Manifest:
    created_at: str
    adapter_version: str
    revision: str | None  # Alembic revision of the database
    database_sha256: str
    database_size: int
    tables: dict[str, TableState]
    blobs: dict[str, int]  # sha256 → size
    missing_blobs: list[str] = field(default_factory=list)  # referenced but absent in the source
    audit: dict | None = None  # head_seq, head_hash, first_hash, chain_ok, problem, checkpoint
    key: KeyState | None = None  # None: a backup written before the key was backed up

    def to_json(self) -> str:
        body = {
            "format": FORMAT,
            "created_at": self.created_at,
            "adapter_version": self.adapter_version,
            "database": {"file": DATABASE, "sha256": self.database_sha256, "size": self.database_size,
                         "revision": self.revision},
            "tables": {name: {"rows": t.rows, "sha256": t.sha256} for name, t in sorted(self.tables.items())},
            "blobs": {"count": len(self.blobs), "bytes": sum(self.blobs.values()),
                      "files": dict(sorted(self.blobs.items()))},
            "missing_blobs": sorted(self.missing_blobs),
            "audit": self.audit,
            "key": self.key.to_json() if self.key else None,
        }
        return json.dumps(body, indent=2, ensure_ascii=False) + "\n"

    @classmethod
    def from_json(cls, text: str, where: Path) -> "Manifest":
        try:
            body = json.loads(text)
            if body.get("format") != FORMAT:
                raise ValueError(f"format {body.get('format')!r}, expected {FORMAT!r}")
            db = body["database"]
            return cls(
                created_at=body["created_at"],
                adapter_version=body["adapter_version"],
                revision=db["revision"],
                database_sha256=db["sha256"],
                database_size=int(db["size"]),
                tables={name: TableState(int(t["rows"]), t["sha256"]) for name, t in body["tables"].items()},
                blobs={sha: int(size) for sha, size in body["blobs"]["files"].items()},
                missing_blobs=list(body.get("missing_blobs", [])),
                audit=body.get("audit"),
                key=KeyState.from_json(body["key"]) if body.get("key") else None,
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise IntegrityError(f"{where} is not an archive-oa backup manifest ({exc}); "
                                 "pass the folder `archive-oa backup` wrote") from exc

    @property
    def blob_bytes(self) -> int:
        return sum(self.blobs.values())


def table_states(database: Path) -> dict[str, TableState]:
    """Rows and a digest of every table: equal states mean equal contents, row by row."""
    states = {}
    with read_only(database) as conn:
        for name in table_names(conn):
            digest, rows = hashlib.sha256(), 0
            for row in conn.execute(f'SELECT * FROM "{name}" ORDER BY rowid'):
                digest.update(repr(row).encode("utf-8") + b"\n")
                rows += 1
            states[name] = TableState(rows, digest.hexdigest())
    return states


def row_counts(database: Path) -> dict[str, int]:
    with read_only(database) as conn:
        return {name: conn.execute(f'SELECT count(*) FROM "{name}"').fetchone()[0] for name in table_names(conn)}


def referenced_blobs(database: Path) -> set[str]:
    """Every sha256 the database names in a blob column."""
    with read_only(database) as conn:
        tables = set(table_names(conn))
        return {row[0] for table, column in BLOB_REFERENCES if table in tables
                for row in conn.execute(f'SELECT DISTINCT "{column}" FROM "{table}"')}


def secret_key_ids(database: Path) -> dict[str, int]:
    """Key id -> how many stored secrets (PasswordDigest) were encrypted with it."""
    with read_only(database) as conn:
        if "user_secrets" not in table_names(conn):
            return {}
        return dict(conn.execute("SELECT key_id, count(*) FROM user_secrets GROUP BY key_id").fetchall())


def read_only(database: Path) -> contextlib.closing[sqlite3.Connection]:
    return contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True))


def table_names(conn: sqlite3.Connection) -> list[str]:
    return [row[0] for row in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")]


def compare_tables(actual: dict[str, TableState], expected: dict[str, TableState], what: str) -> None:
    if actual == expected:
        return
    differing = sorted(name for name in actual.keys() | expected.keys() if actual.get(name) != expected.get(name))
    details = ", ".join(
        f"{name} ({actual[name].rows if name in actual else 'absent'} rows, manifest "
        f"{expected[name].rows if name in expected else 'absent'})" for name in differing[:5])
    raise IntegrityError(f"{what} differs from the manifest in {len(differing)} tables: {details}")


def audit_head(database: Path, checkpoint_file: Path | None) -> dict | None:
    """The audit chain's head in ``database``, verified (against the checkpoint when there is one);
    None when the database predates the audit log."""
    engine = create_engine(f"sqlite:///file:{database}?mode=ro&uri=true", poolclass=NullPool)
    try:
        with engine.connect() as conn:
            if not engine.dialect.has_table(conn, "audit_log"):
                return None
            checkpoint = audit_verify.read_checkpoint(checkpoint_file) if checkpoint_file else None
            result = audit_verify.verify_chain(conn, checkpoint)
    finally:
        engine.dispose()
    return {"head_seq": result.head_seq, "head_hash": result.head_hash, "first_hash": result.first_hash,
            "chain_ok": result.ok, "problem": str(result.first_break) if result.first_break else None,
            "checkpoint": CHECKPOINT if checkpoint_file else None}


def blob_files(root: Path) -> Iterator[tuple[str, Path]]:
    """(sha256, path) of every blob under ``root`` (``ab/cd/abcd…``); temporary files are skipped."""
    if not root.is_dir():
        return
    for path in root.glob("??/??/*"):
        name = path.name
        if _SHA256.match(name) and path.parent.name == name[2:4] and path.parent.parent.name == name[:2]:
            yield name, path


def revision_of(database: Path) -> str | None:
    with read_only(database) as conn:
        try:
            row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
        except sqlite3.OperationalError:
            return None
    return row[0] if row else None


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
