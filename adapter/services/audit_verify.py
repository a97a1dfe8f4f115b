"""Checking the audit chain, and the checkpoint of its head kept outside the database.

A hash chain alone shows a modified, inserted or deleted record, but not a cut tail:
the remaining records still link up.  So the head (sequence number and hash, plus the
hash of record 1, which names the chain) is written to a file outside the database —
``[security] audit_checkpoint``, default ``<data dir>/audit-checkpoint.json`` — by
``audit verify``, ``audit checkpoint`` and periodically by ``serve``.  A later check
that finds fewer records than the checkpoint, or a different record at its place,
reports the break.  The checkpoint only moves forward, and only over a sound chain.

Whoever can write the database can also append well-formed records at the tail or
rewrite everything after the last checkpoint; copying the checkpoint elsewhere (a
backup, another machine) bounds how much can be rewritten unseen.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from sqlalchemy import Connection, select

from ..domain.clock import utc_now
from ..errors import ConfigurationError
from ..private_files import write_private_file
from ..store.audit_tables import audit_log
from . import audit

log = logging.getLogger(__name__)

CHECKPOINT_FILE_NAME = "audit-checkpoint.json"
_MAX_BREAKS = 20


@dataclass(frozen=True)
class Checkpoint:
    seq: int
    hash: str
    first_hash: str | None  # hash of record 1 (None while the log is empty)
    written_at: str = ""


@dataclass(frozen=True)
class ChainBreak:
    seq: int  # the first sequence number where the chain is wrong
    problem: str

    def __str__(self) -> str:
        return f"record {self.seq}: {self.problem}"


@dataclass(frozen=True)
class VerifyResult:
    checked: int  # records read
    head_seq: int
    head_hash: str
    first_hash: str | None
    breaks: tuple[ChainBreak, ...]

    @property
    def ok(self) -> bool:
        return not self.breaks

    @property
    def first_break(self) -> ChainBreak | None:
        return self.breaks[0] if self.breaks else None

    def checkpoint(self, now: dt.datetime) -> Checkpoint:
        return Checkpoint(self.head_seq, self.head_hash, self.first_hash, audit.format_instant(now))


def verify_chain(conn: Connection, checkpoint: Checkpoint | None = None, *, full: bool = True) -> VerifyResult:
    """Walk the chain (all of it, or only past the checkpoint when ``full`` is false)."""
    breaks: list[ChainBreak] = []
    first_hash = conn.execute(select(audit_log.c.hash).where(audit_log.c.seq == 1)).scalar()
    expected, prev_hash = 1, audit.GENESIS_HASH
    if checkpoint is not None and not full and checkpoint.seq > 0:
        expected, prev_hash = checkpoint.seq + 1, checkpoint.hash
        row = conn.execute(select(audit_log).where(audit_log.c.seq == checkpoint.seq)).mappings().first()
        if row is None:  # the checkpointed record itself is gone
            head_seq, head_hash = audit.head(conn)
            breaks = _check_against_checkpoint(checkpoint, head_seq, first_hash) or [
                ChainBreak(checkpoint.seq, "missing (deleted): the checkpointed record is gone")
            ]
            return VerifyResult(0, head_seq, head_hash, first_hash, tuple(breaks))
        breaks += _check_row(row, row["prev_hash"], checkpoint)
    checked = 0
    last_seq, last_hash = expected - 1, prev_hash
    before_prev = None  # hash of the record two places back: tells an insertion from a change
    for row in audit.rows_from(conn, expected - 1):
        checked += 1
        seq = row["seq"]
        if seq != expected:
            missing = f"{expected}" if seq == expected + 1 else f"{expected} to {seq - 1}"
            breaks.append(ChainBreak(expected, f"missing (deleted): the sequence jumps from {expected - 1} to "
                                               f"{seq}; records {missing} are gone"))
        else:
            breaks += _check_row(row, prev_hash, checkpoint, before_prev)
        before_prev = prev_hash if seq == expected else None
        expected, prev_hash = seq + 1, row["hash"]
        last_seq, last_hash = seq, row["hash"]
        if len(breaks) >= _MAX_BREAKS:
            break
    if checkpoint is not None and len(breaks) < _MAX_BREAKS:
        breaks += _check_against_checkpoint(checkpoint, last_seq, first_hash)
    breaks.sort(key=lambda b: b.seq)
    return VerifyResult(checked, last_seq, last_hash, first_hash, tuple(breaks))


def _check_row(
    row: Mapping[str, Any], prev_hash: str, checkpoint: Checkpoint | None, before_prev: str | None = None
) -> list[ChainBreak]:
    seq = row["seq"]
    if audit.record_hash(row) != row["hash"]:
        if before_prev is not None and row["prev_hash"] == before_prev:
            return [ChainBreak(seq, f"renumbered: it follows record {seq - 2}, so record {seq - 1} was "
                                    "inserted before it (its stored fields no longer match its hash)")]
        return [ChainBreak(seq, "modified: its stored fields do not match its hash")]
    if row["prev_hash"] != prev_hash:
        before = "the chain's start" if seq == 1 else f"record {seq - 1}"
        return [ChainBreak(seq, f"does not follow {before}: its prev_hash {row['prev_hash'][:16]}… is not "
                                f"{prev_hash[:16]}… (a record before it was inserted, replaced or rewritten)")]
    if checkpoint is not None and seq == checkpoint.seq and row["hash"] != checkpoint.hash:
        return [ChainBreak(seq, f"differs from the checkpoint written {checkpoint.written_at or '(unknown time)'}: "
                                f"hash {row['hash'][:16]}… instead of {checkpoint.hash[:16]}… "
                                "(the log was rewritten up to here)")]
    return []


def _check_against_checkpoint(checkpoint: Checkpoint, last_seq: int, first_hash: str | None) -> list[ChainBreak]:
    found = []
    if checkpoint.first_hash and first_hash and checkpoint.first_hash != first_hash:
        found.append(ChainBreak(1, "is not the record 1 the checkpoint names: the whole log was replaced, or "
                                   "the checkpoint file belongs to another database ([security] audit_checkpoint)"))
    if last_seq < checkpoint.seq:
        missing = f"{last_seq + 1}" if last_seq + 1 == checkpoint.seq else f"{last_seq + 1} to {checkpoint.seq}"
        found.append(ChainBreak(last_seq + 1, f"missing (cut tail): the log ends at {last_seq} but the checkpoint "
                                              f"written {checkpoint.written_at or '(unknown time)'} recorded "
                                              f"{checkpoint.seq}; records {missing} are gone"))
    return found


# --- the checkpoint file -------------------------------------------------------------


def checkpoint_path(settings) -> Path:
    configured = settings.security.audit_checkpoint
    return Path(configured).expanduser() if configured else settings.data_dir / CHECKPOINT_FILE_NAME


def read_checkpoint(path: Path) -> Checkpoint | None:
    """The checkpoint in ``path``; None when there is no file yet."""
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigurationError(f"audit checkpoint {path} cannot be read ({exc}); check [security] "
                                 "audit_checkpoint and the file's permissions") from exc
    try:
        data = json.loads(raw)
        checkpoint = Checkpoint(int(data["sequence"]), str(data["hash"]), data.get("first_hash"),
                                str(data.get("written_at", "")))
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigurationError(f"audit checkpoint {path} is not a checkpoint file ({exc}): restore it from "
                                 "a backup; deleting it loses the cut-tail check until the next one") from exc
    if checkpoint.seq < 0 or len(checkpoint.hash) != 64:
        raise ConfigurationError(f"audit checkpoint {path}: sequence {checkpoint.seq} / hash {checkpoint.hash!r} "
                                 "are not a chain head; restore the file from a backup")
    return checkpoint


def write_checkpoint(path: Path, checkpoint: Checkpoint) -> None:
    """Replace the file atomically (mode 0600): a crash leaves the old or the new checkpoint, never half."""
    body = json.dumps({"sequence": checkpoint.seq, "hash": checkpoint.hash, "first_hash": checkpoint.first_hash,
                       "written_at": checkpoint.written_at}, indent=2) + "\n"
    write_private_file(path, body.encode("utf-8"), temp_prefix=".audit-checkpoint-")


def verify(store, path: Path, *, full: bool = True, now: dt.datetime | None = None) -> VerifyResult:
    """Check the chain against the checkpoint in ``path``; when sound, move the checkpoint
    to the current head (``full=False`` checks only what was appended since)."""
    checkpoint = read_checkpoint(path)
    with store.transaction() as conn:  # one snapshot: appends meanwhile are seen next time
        result = verify_chain(conn, checkpoint, full=full)
    if result.ok and (checkpoint is None or result.head_seq >= checkpoint.seq):
        if checkpoint is None or (result.head_seq, result.head_hash) != (checkpoint.seq, checkpoint.hash):
            write_checkpoint(path, result.checkpoint(now or utc_now()))
    return result


class CheckpointKeeper:
    """Advances the checkpoint every ``interval`` seconds in a daemon thread (``serve``)."""

    def __init__(self, store, path: Path, interval: float) -> None:
        self.store, self.path, self.interval = store, path, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="audit-checkpoint", daemon=True)

    def start(self) -> "CheckpointKeeper":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        self.run_once()  # the last head this process wrote

    def run_once(self) -> VerifyResult | None:
        try:
            result = verify(self.store, self.path, full=False)
        except Exception:  # noqa: BLE001 - a failed round must not end the keeper
            log.exception("audit checkpoint %s could not be updated", self.path)
            return None
        if not result.ok:
            log.error("audit log broken, checkpoint %s left unchanged: %s", self.path, result.first_break)
        return result

    def _loop(self) -> None:
        self.run_once()
        while not self._stop.wait(self.interval):
            self.run_once()
