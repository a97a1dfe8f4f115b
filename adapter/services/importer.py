"""Import voucher files into the archive (and queue them for the OA).

Each file is read by an import format (``import_formats``: canonical voucher XML, or one a
package installs), which turns it into canonical voucher XML; from there every format takes
the same way: validation, attachments, storage.  A file is all or nothing: it is parsed,
validated and its attachments resolved before anything of it is stored, so a file that
fails leaves no trace while the other files go on.  Valid vouchers are stored in batches
(``batch_size``, across file boundaries, files read one at a time): one transaction per
batch holds the voucher versions and — real-time sync mode — each one's outbox delivery
and QUEUED state, so a voucher and its delivery still commit together.  Importing the
same content again changes nothing, within a batch as across batches.  A batch the
database refuses is stored again one voucher at a time, so exactly the voucher at fault
is reported and its batch mates are kept.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import exc as db_errors

from .. import voucher_xml
from ..domain.clock import utc_now
from ..domain.delivery import idempotency_key
from ..domain.model import Voucher, WorkflowState
from ..errors import AdapterError, Issue, ValidationFailed
from ..import_formats.choice import FormatChoice
from ..import_formats.contract import HEAD_BYTES, CanonicalDocument
from ..import_formats.registry import choose
from ..settings import SecuritySettings
from ..store import vouchers as repo
from ..store.engine import Store
from ..store.outbox import NewDelivery, enqueue_many
from .bounded_file import TooLarge, open_bounded

ATTACHMENT_FOLDER = "attachments"  # attachment files may sit beside the XML or in this subfolder
DEFAULT_MAX_FILE_BYTES = SecuritySettings.max_import_file_bytes
#: A batch also ends once its attachments reach this size: their bytes stay in memory
#: until the batch commits (500 vouchers with a 10 MB scan each would hold 5 GB).
BATCH_CONTENT_BYTES = 64 * 1024 * 1024
DEFAULT_BATCH_SIZE = 500  # vouchers per transaction: past a few hundred, bigger batches gain little
BLOB_THREADS = 4  # attachment writes in flight at once (each waits for its fsync, not for the CPU)


@dataclass(frozen=True)
class ImportProgress:
    """Sent to ``on_progress`` for each voucher stored (or found unchanged), in file order, once its batch commits."""

    file: str
    voucher_id: str
    outcome: str  # "created", "new_version" or "unchanged"
    vouchers_done: int
    files_done: int
    files_total: int


@dataclass
class ImportReport:
    files: int = 0  # files read
    vouchers_seen: int = 0  # vouchers in files that passed validation
    created: int = 0  # vouchers new to the archive
    new_versions: int = 0  # known vouchers whose content changed
    unchanged: int = 0  # same content as the latest version: nothing written
    queued: int = 0  # deliveries enqueued for the OA
    failed_files: int = 0
    failed_paths: list[str] = field(default_factory=list)
    issues: list[Issue] = field(default_factory=list)
    #: files found in the given folders that are not read: no suffix of the formats used
    #: (not *.xml), or under an attachments/ folder; what an import that found nothing can point to
    other_files: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.failed_files == 0


@dataclass(frozen=True)
class _Ready:
    """A validated voucher with the bytes of each of its attachments, and where it came from."""

    voucher: Voucher
    contents: dict[str, bytes]
    content_hash: str
    source: str  # its file
    place: str  # its place in the file, e.g. /Vouchers/Voucher[3]
    line: int | None
    files_done: int  # files read when it was read (for progress)
    blob_writes: list[Future] = field(default_factory=list, compare=False)  # its attachments being written


def import_paths(
    store: Store,
    transforms,
    paths: Iterable[str | Path],
    *,
    now: dt.datetime | None = None,
    enqueue: bool = True,
    on_progress: Callable[[ImportProgress], None] | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
    formats: FormatChoice | None = None,
) -> ImportReport:
    """Import every voucher file in ``paths`` (files, or folders searched for the formats'
    suffixes: ``*.xml`` for canonical XML).

    ``formats``: one named format (``--format NAME``), or by default every installed format,
    each file read by the first that recognises its content (``--format auto``).

    A file (voucher XML or attachment) larger than ``max_file_bytes`` is refused before it
    is read, so one mistaken path cannot exhaust the machine's memory."""
    if batch_size < 1:
        raise ValueError(f"batch_size = {batch_size}: store at least 1 voucher per transaction")
    if max_file_bytes < 1:
        raise ValueError(f"max_file_bytes = {max_file_bytes}: allow at least 1 byte per file")
    formats = formats or choose("auto")
    report = ImportReport()
    files = list(_expand(paths, formats.suffixes, report.other_files))
    pending: list[_Ready] = []
    pending_bytes = 0
    with ThreadPoolExecutor(BLOB_THREADS, thread_name_prefix="import-blobs") as blob_pool:
        writer = _BatchWriter(store, now, enqueue, report, on_progress, len(files))
        for path in files:
            report.files += 1
            try:
                ready = _read_file(path, formats, transforms, report.files, max_file_bytes)
            except AdapterError as exc:  # the file's fault (invalid, too large …): report it, go on
                if not exc.client_error:
                    raise
                issues = getattr(exc, "issues", ()) or [Issue("/", exc.code, exc.message, None, str(path))]
                _fail_file(report, str(path), issues)
                continue
            report.vouchers_seen += len(ready)
            # Blobs go to disk while earlier batches are stored; a batch commits only once
            # its own are written (an unreferenced blob is harmless, a reference without bytes is not).
            for item in ready:
                item.blob_writes.extend(
                    blob_pool.submit(store.blobs.put, item.contents[meta.attachment_id])
                    for meta in item.voucher.attachments
                )
            pending.extend(ready)
            pending_bytes += _content_bytes(ready)
            while len(pending) >= batch_size:
                batch, pending = pending[:batch_size], pending[batch_size:]
                writer.save(batch)
                pending_bytes -= _content_bytes(batch)
            if pending_bytes >= BATCH_CONTENT_BYTES:  # attachments held in memory: a batch ends early
                writer.save(pending)
                pending, pending_bytes = [], 0
        if pending:
            writer.save(pending)
    return report


def _content_bytes(items: Iterable[_Ready]) -> int:
    return sum(len(content) for item in items for content in item.contents.values())


def _fail_file(report: ImportReport, source: str, issues: Iterable[Issue]) -> None:
    if source not in report.failed_paths:
        report.failed_files += 1
        report.failed_paths.append(source)
    report.issues.extend(issues)


# --- reading and checking a file --------------------------------------------------------


def _expand(paths: Iterable[str | Path], suffixes: tuple[str, ...], others: list[str]) -> Iterator[Path]:
    """Files as given; folders recursively for ``suffixes``, skipping attachment folders (an
    attachment may itself be XML, e.g. an electronic invoice).  The files of a folder
    that are not read go to ``others``."""
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            for found in sorted(path.rglob("*")):
                if not found.is_file():
                    continue
                relative = found.relative_to(path).parts[:-1]
                if found.suffix in suffixes and ATTACHMENT_FOLDER not in relative:
                    yield found
                else:
                    others.append(str(found))
        else:
            yield path  # a missing file is reported by _read_file


def _read_file(path: Path, formats: FormatChoice, transforms, files_done: int, max_file_bytes: int) -> list[_Ready]:
    """The validated vouchers of one file, or ``ValidationFailed`` naming every failing place in it."""
    source = str(path)
    ready, issues = [], []
    try:
        with open_bounded(path, max_file_bytes) as stream:
            head = stream.read(HEAD_BYTES)
            stream.seek(0)
            fmt = formats.format_for(head, source)
            # a format yields its documents lazily: the file is converted while it is read
            for document in fmt.documents(stream, source):
                found, failed = _read_document(document, path, transforms, files_done, max_file_bytes)
                ready.extend(found)
                issues.extend(failed)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ValidationFailed(
            f"{source}: cannot be read", [Issue("/", "file-readable", f"cannot read {source}: {reason}", None, source)]
        ) from exc
    except TooLarge as exc:
        message = (f"{source} is {exc.size:,} bytes, more than the {max_file_bytes:,} one import file may have "
                   "([security] max_import_file_bytes); split the batch into smaller files or raise the limit")
        raise ValidationFailed(f"{source}: too large", [Issue("/", "file-size", message, None, source)]) from None
    if issues:
        raise ValidationFailed(f"{source}: {issues[0].place}: {issues[0].message}", issues)
    return ready


def _read_document(document: CanonicalDocument, path: Path, transforms, files_done: int,
                   max_file_bytes: int) -> tuple[list[_Ready], list[Issue]]:
    """The vouchers of one canonical document, and the issues found in it."""
    source = str(path)
    try:
        parsed = voucher_xml.parse_vouchers(document.xml, source, transforms)
    except AdapterError as exc:
        if not exc.client_error:
            raise
        return [], _in_input(document, getattr(exc, "issues", ()) or [Issue("/", exc.code, exc.message, None, source)])
    ready, issues = [], []
    for item in parsed:
        contents = {}
        for position, meta in enumerate(item.voucher.attachments, start=1):
            place = f"{item.place}/attachments/attachment"
            if len(item.voucher.attachments) > 1:
                place += f"[{position}]"
            content = item.embedded.get(meta.attachment_id)
            if content is None:
                content, issue = _attachment_file(path, meta, place, item.line, max_file_bytes)
                if issue:
                    issues.extend(_in_input(document, [issue]))
                    continue
            contents[meta.attachment_id] = content
        place, line = item.place, item.line
        if document.place is not None:
            place, line = f"{document.place} → {place}", document.line
        ready.append(_Ready(item.voucher, contents, voucher_xml.canonical_hash(item.voucher),
                            source, place, line, files_done))
    return ready, issues


def _in_input(document: CanonicalDocument, issues: Iterable[Issue]) -> list[Issue]:
    """Issues of a converted document placed in the input file, whose lines the converted XML's are not."""
    if document.place is None:  # the document is the file itself: its places and lines stand
        return list(issues)
    return [dataclasses.replace(issue, place=f"{document.place} → {issue.place}", line=document.line)
            for issue in issues]


def _attachment_file(
    xml_path: Path, meta, place: str, line: int | None, max_file_bytes: int
) -> tuple[bytes | None, Issue | None]:
    source = str(xml_path)
    name = meta.file_name
    if not name or name in (".", "..") or any(ch in name for ch in ("/", "\\", "\0")):
        return None, Issue(
            place + "/fileName", "attachment-file-name",
            f"attachment {meta.attachment_id}: fileName {name!r} must be a plain file name "
            "(no folder, no path separator, no NUL)",
            line, source,
        )
    folder = xml_path.parent
    candidates = [folder / name, folder / ATTACHMENT_FOLDER / name]
    found = next((c for c in candidates if c.is_file()), None)
    if found is None:
        return None, Issue(
            place, "attachment-file-missing",
            f"attachment {meta.attachment_id}: no embedded content and no file {name!r} in {folder} "
            f"or {folder / ATTACHMENT_FOLDER}; put the file there or embed it as content",
            line, source,
        )
    try:
        with open_bounded(found, max_file_bytes) as handle:
            data = handle.read()
    except OSError as exc:
        return None, Issue(place, "attachment-file-readable",
                           f"attachment {meta.attachment_id}: cannot read {found}: {exc.strerror or exc}", line, source)
    except TooLarge as exc:
        return None, Issue(
            place, "file-size",
            f"attachment {meta.attachment_id}: file {found} is {exc.size:,} bytes, more than the "
            f"{max_file_bytes:,} one import file may have ([security] max_import_file_bytes); raise the limit",
            line, source,
        )
    digest = hashlib.sha256(data).hexdigest()
    if len(data) != meta.size or digest != meta.sha256:
        return None, Issue(
            place, "attachment-integrity",
            f"attachment {meta.attachment_id}: file {found} is {len(data)} bytes with sha256 {digest}, "
            f"but size {meta.size} and sha256 {meta.sha256} are declared; "
            "supply the right file or correct size and sha256",
            line, source,
        )
    return data, None


# --- storing ------------------------------------------------------------------------------


class _BatchWriter:
    """Stores batches of validated vouchers, counts the outcomes and reports progress."""

    def __init__(
        self,
        store: Store,
        now: dt.datetime | None,  # None: the clock at each batch
        enqueue: bool,
        report: ImportReport,
        on_progress: Callable[[ImportProgress], None] | None,
        files_total: int,
    ) -> None:
        self.store = store
        self.now = now
        self.enqueue = enqueue
        self.report = report
        self.on_progress = on_progress
        self.files_total = files_total

    def save(self, batch: list[_Ready]) -> None:
        """Store ``batch``; one voucher at a time when the database refuses the batch."""
        try:
            outcomes = self._write_retrying(batch)
        except db_errors.StatementError as exc:
            if not _voucher_fault(exc):
                raise
            if len(batch) == 1:
                self._refused(batch[0], exc)
                return
            for item in batch:  # find exactly the voucher at fault; its batch mates are kept
                self.save([item])
            return
        for item, (saved, queued) in zip(batch, outcomes):
            self._count(item, saved, queued)

    def _write_retrying(self, batch: list[_Ready]) -> list[tuple[repo.SaveResult, bool]]:
        try:
            return self._write(batch)
        except db_errors.IntegrityError:
            # Another importer may have stored some of these vouchers since this one read
            # their versions (PostgreSQL: a new voucher id is guarded by a unique index,
            # not a lock). Once more in a new transaction, which reads what it committed.
            return self._write(batch)

    def _write(self, batch: list[_Ready]) -> list[tuple[repo.SaveResult, bool]]:
        # The attachments are on disk before the rows naming them commit — and before the
        # write lock is taken: on SQLite every other writer (the gateway's audit records,
        # deliveries) would wait while hundreds of files are written and synced.
        for item in batch:
            for write in item.blob_writes:
                write.result()
        now = self.now or utc_now()
        with self.store.transaction(immediate=True) as conn:
            saved = repo.save_vouchers(conn, [(item.voucher, item.content_hash) for item in batch], now)
            queued = self._enqueue(conn, batch, saved, now)
            repo.mark_queued(conn, [result.row_id for result, done in zip(saved, queued) if done])
        return list(zip(saved, queued))

    def _enqueue(self, conn, batch: list[_Ready], saved: list[repo.SaveResult], now: dt.datetime) -> list[bool]:
        """Queue the new versions for the OA in the batch's transaction (real-time sync mode)."""
        if not self.enqueue:
            return [False] * len(batch)
        # A voucher whose XML already records OA progress (e.g. an exported, decided
        # voucher) is archived as it is, not sent for approval again.
        wanted = {
            n: NewDelivery(item.voucher.voucher_id, result.version,
                           idempotency_key(item.voucher.voucher_id, item.content_hash))
            for n, (item, result) in enumerate(zip(batch, saved))
            if result.created and item.voucher.state in (WorkflowState.NONE, WorkflowState.QUEUED)
        }
        # False: this very content was queued before (content A, B, then A again, also
        # within one batch); the existing delivery stands and the state is not claimed queued.
        answers = dict(zip(wanted, enqueue_many(conn, list(wanted.values()), now)))
        return [answers.get(n, False) for n in range(len(batch))]

    def _count(self, item: _Ready, saved: repo.SaveResult, queued: bool) -> None:
        report = self.report
        report.queued += int(queued)
        if not saved.created:
            report.unchanged += 1
            outcome = "unchanged"
        elif saved.version == 1:
            report.created += 1
            outcome = "created"
        else:
            report.new_versions += 1
            outcome = "new_version"
        if self.on_progress:
            done = report.created + report.new_versions + report.unchanged
            self.on_progress(
                ImportProgress(item.source, item.voucher.voucher_id, outcome, done, item.files_done, self.files_total)
            )

    def _refused(self, item: _Ready, exc: db_errors.StatementError) -> None:
        reason = " ".join(str(getattr(exc, "orig", None) or exc).split())[:300]
        _fail_file(self.report, item.source, [Issue(
            item.place, "store-refused",
            f"voucher {item.voucher.voucher_id}: the database refused to store it ({reason}); "
            "correct the value it names and import the file again (its other vouchers are stored)",
            item.line, item.source,
        )])


def _voucher_fault(exc: db_errors.StatementError) -> bool:
    """A write error one voucher's data can cause: a constraint, or a value the database or
    a column type refuses — not an unavailable, locked or misused database."""
    if isinstance(exc, (db_errors.IntegrityError, db_errors.DataError)):
        return True
    return not isinstance(exc, db_errors.DBAPIError)  # raised while binding its values
