"""Import canonical voucher XML files into the archive (and queue them for the OA).

A file is all or nothing: it is parsed, validated and its attachments resolved
before anything of it is stored, so a file that fails leaves no trace while the
other files go on.  Storing is one transaction per voucher: blobs, the voucher
version, and — real-time sync mode — the outbox delivery and the QUEUED state
commit together.  Importing the same content again changes nothing.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .. import voucher_xml
from ..domain.delivery import idempotency_key
from ..domain.model import Voucher, WorkflowState
from ..errors import AdapterError, Issue, ValidationFailed
from ..store import vouchers as repo
from ..store.engine import Store

ATTACHMENT_FOLDER = "attachments"  # attachment files may sit beside the XML or in this subfolder
_ROOT_TAG = re.compile(rb"<(?![?!])(?:[A-Za-z_][\w.-]*:)?([A-Za-z_][\w.-]*)")


@dataclass(frozen=True)
class ImportProgress:
    """Sent to ``on_progress`` after each voucher is stored (or found unchanged)."""

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

    @property
    def ok(self) -> bool:
        return self.failed_files == 0


@dataclass(frozen=True)
class _Ready:
    """A validated voucher with the bytes of each of its attachments."""

    voucher: Voucher
    contents: dict[str, bytes]
    content_hash: str


def import_paths(
    store: Store,
    transforms,
    paths: Iterable[str | Path],
    *,
    now: dt.datetime | None = None,
    enqueue: bool = True,
    on_progress: Callable[[ImportProgress], None] | None = None,
) -> ImportReport:
    """Import every voucher file in ``paths`` (files, or folders searched for ``*.xml``)."""
    files = list(_expand(paths))
    report = ImportReport()
    for path in files:
        report.files += 1
        try:
            ready = _read_file(path, transforms)
        except AdapterError as exc:  # the file's fault (invalid, too large …): report it, go on
            if not exc.client_error:
                raise
            report.failed_files += 1
            report.failed_paths.append(str(path))
            issues = getattr(exc, "issues", ())
            report.issues.extend(issues or [Issue("/", exc.code, exc.message, None, str(path))])
            continue
        report.vouchers_seen += len(ready)
        for item in ready:
            outcome = _store_one(store, item, now or _utcnow(), enqueue, report)
            if on_progress:
                done = report.created + report.new_versions + report.unchanged
                on_progress(ImportProgress(str(path), item.voucher.voucher_id, outcome, done, report.files, len(files)))
    return report


# --- reading and checking a file --------------------------------------------------------


def _expand(paths: Iterable[str | Path]) -> Iterator[Path]:
    """Files as given; folders recursively for *.xml, skipping attachment folders (an
    attachment may itself be XML, e.g. an electronic invoice)."""
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            for found in sorted(path.rglob("*.xml")):
                relative = found.relative_to(path).parts[:-1]
                if found.is_file() and ATTACHMENT_FOLDER not in relative:
                    yield found
        else:
            yield path  # a missing file is reported by _read_file


def _read_file(path: Path, transforms) -> list[_Ready]:
    source = str(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ValidationFailed(
            f"{source}: cannot be read", [Issue("/", "file-readable", f"cannot read {source}: {reason}", None, source)]
        ) from exc
    parsed = voucher_xml.parse_vouchers(data, source, transforms)
    batch_root = _root_name(data) == "Vouchers"
    ready, issues = [], []
    for index, item in enumerate(parsed, start=1):
        voucher_path = "/Voucher"
        if batch_root:
            voucher_path = f"/Vouchers/Voucher[{index}]" if len(parsed) > 1 else "/Vouchers/Voucher"
        contents = {}
        for position, meta in enumerate(item.voucher.attachments, start=1):
            place = f"{voucher_path}/attachments/attachment"
            if len(item.voucher.attachments) > 1:
                place += f"[{position}]"
            content = item.embedded.get(meta.attachment_id)
            if content is None:
                content, issue = _attachment_file(path, meta, place, item.line)
                if issue:
                    issues.append(issue)
                    continue
            contents[meta.attachment_id] = content
        ready.append(_Ready(item.voucher, contents, voucher_xml.canonical_hash(item.voucher)))
    if issues:
        raise ValidationFailed(f"{source}: {issues[0].place}: {issues[0].message}", issues)
    return ready


def _attachment_file(xml_path: Path, meta, place: str, line: int | None) -> tuple[bytes | None, Issue | None]:
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
    data = found.read_bytes()
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


def _root_name(data: bytes) -> str | None:
    match = _ROOT_TAG.search(data)
    return match.group(1).decode("ascii", "replace") if match else None


# --- storing ------------------------------------------------------------------------------


def _store_one(store: Store, item: _Ready, now: dt.datetime, enqueue: bool, report: ImportReport) -> str:
    voucher = item.voucher
    # Blobs first, outside the transaction: content-addressed writes are harmless if
    # the transaction then fails (an unreferenced blob, never a reference without bytes).
    for meta in voucher.attachments:
        store.blobs.put(item.contents[meta.attachment_id])
    queued = False
    with store.transaction(immediate=True) as conn:
        saved = repo.save_voucher(conn, voucher, item.content_hash, now)
        # A voucher whose XML already records OA progress (e.g. an exported, decided
        # voucher) is archived as it is, not sent for approval again.
        if saved.created and enqueue and voucher.state in (WorkflowState.NONE, WorkflowState.QUEUED):
            from ..store import outbox  # the sync engine's outbox (imported late: optional for enqueue=False)

            queued = outbox.enqueue(
                conn,
                voucher_id=voucher.voucher_id,
                version=saved.version,
                idempotency_key=idempotency_key(voucher.voucher_id, item.content_hash),
                now=now,
            )
            # False: this very content was delivered before (content A, B, then A again);
            # the existing delivery stands and the state is not claimed to be queued.
            if queued:
                repo.set_workflow(conn, voucher.voucher_id, state=WorkflowState.QUEUED)
    report.queued += int(bool(queued))
    if not saved.created:
        report.unchanged += 1
        return "unchanged"
    if saved.version == 1:
        report.created += 1
        return "created"
    report.new_versions += 1
    return "new_version"


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)
