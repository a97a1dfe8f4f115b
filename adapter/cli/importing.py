"""``archive-oa import PATH...``: load voucher files (canonical XML or an installed format) into the archive."""

from __future__ import annotations

import argparse
import json
import sys
import time

from ..errors import ConfigurationError
from .common import add_common, positive_int, settings_from


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "import",
        help="import voucher files or folders (*.xml) into the archive",
        description=(
            "Validate and import voucher files: canonical voucher XML (a Voucher or a Vouchers batch) "
            "or any installed import format, each turned into canonical XML first. Attachment "
            "files sit beside the file or in an attachments/ subfolder, or are embedded. Importing "
            "the same voucher again changes nothing; changed content becomes a new version."
        ),
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="voucher file or folder")
    parser.add_argument(
        "--format",
        default="auto",
        metavar="NAME",
        help="auto (default): each file in the first installed format that recognises its content; "
        "canonical: voucher XML (voucher.xsd); or another installed format (an unknown name lists them)",
    )
    parser.add_argument(
        "--no-queue",
        action="store_true",
        help="store only; do not queue the new vouchers for delivery to the OA",
    )
    parser.add_argument(
        "--batch-size",
        type=positive_int,
        default=None,
        metavar="N",
        help="vouchers stored per transaction (default 500); a batch the database refuses is "
        "stored again one voucher at a time, so only the voucher at fault is reported",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object (counts and each error with its file and message) instead of the table",
    )
    add_common(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..bootstrap import bootstrap
    from ..import_formats.registry import choose
    from ..services.importer import DEFAULT_BATCH_SIZE, import_paths

    settings = settings_from(args)
    if settings.security.max_import_file_bytes < 1:
        raise ConfigurationError(
            f"[security] max_import_file_bytes = {settings.security.max_import_file_bytes}: "
            "give the largest file import may read, in bytes (1 or more)"
        )
    formats = choose(args.format)  # an unknown name is refused before the database is opened
    with bootstrap(settings) as adapter:
        progress = _Progress(sys.stderr)
        report = import_paths(
            adapter.store,
            adapter.transforms,
            args.paths,
            enqueue=settings.sync.realtime and not args.no_queue,
            on_progress=progress,
            batch_size=args.batch_size or DEFAULT_BATCH_SIZE,
            max_file_bytes=settings.security.max_import_file_bytes,
            formats=formats,
        )
        progress.finish()
    nothing = _nothing_imported(report, args.paths, formats.suffixes)
    if args.json:
        print(json.dumps(as_dict(report), ensure_ascii=False, indent=2))
    else:
        for issue in report.issues:
            print(_issue_line(issue), file=sys.stderr)
        print(_summary(report))
    if nothing:
        print(f"archive-oa import: {nothing}", file=sys.stderr)
    return 1 if report.failed_files or nothing else 0


class _Progress:
    """One line, rewritten at most a few times a second (a plain line per file when not a terminal)."""

    def __init__(self, stream) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.last = 0.0
        self.last_file = None
        self.shown = False

    def __call__(self, event) -> None:
        now = time.monotonic()
        if self.tty:
            if now - self.last < 0.2:
                return
            self.last = now
            self.stream.write(
                f"\rimporting: file {event.files_done}/{event.files_total}, {event.vouchers_done} vouchers"
            )
            self.shown = True
        elif event.file != self.last_file and now - self.last >= 1.0:
            self.last, self.last_file = now, event.file
            self.stream.write(
                f"importing {event.file} (file {event.files_done}/{event.files_total}, "
                f"{event.vouchers_done} vouchers so far)\n"
            )
        self.stream.flush()

    def finish(self) -> None:
        if self.shown:
            self.stream.write("\n")
            self.stream.flush()


def _nothing_imported(report, paths: list[str], suffixes: tuple[str, ...]) -> str | None:
    """Why an import that failed no file still stored nothing, or None when it found vouchers."""
    if report.vouchers_seen or report.failed_files:
        return None
    where = ", ".join(paths)
    if report.files:
        return f"nothing imported: the {report.files} files in {where} hold no vouchers"
    patterns = ", ".join(f"*{suffix}" for suffix in suffixes)
    rule = f"import reads {patterns} files, searching folders recursively and leaving attachments/ folders out"
    if not report.other_files:
        return f"nothing imported: {where} holds no files ({rule})"
    shown = ", ".join(report.other_files[:3])
    if len(report.other_files) > 3:
        shown += f" and {len(report.other_files) - 3} more"
    return (f"nothing imported: no voucher files in {where} ({rule}); the {len(report.other_files)} "
            f"files there are not voucher files: {shown}")


def as_dict(report) -> dict:
    """The ``--json`` answer: the summary's counts and every error with its file and place."""
    return {
        "files": report.files,
        "failedFiles": report.failed_files,
        "vouchersSeen": report.vouchers_seen,
        "created": report.created,
        "newVersions": report.new_versions,
        "unchanged": report.unchanged,
        "queued": report.queued,
        "errors": [
            {"file": issue.source, "line": issue.line, "place": issue.place, "rule": issue.rule,
             "message": issue.message}
            for issue in report.issues
        ],
    }


def _issue_line(issue) -> str:
    where = issue.source or "-"
    if issue.line:
        where += f":{issue.line}"
    return f"{where} {issue.place} [{issue.rule}] {issue.message}"


def _summary(report) -> str:
    rows = [
        ("files", report.files),
        ("failed files", report.failed_files),
        ("vouchers seen", report.vouchers_seen),
        ("created", report.created),
        ("new versions", report.new_versions),
        ("unchanged", report.unchanged),
        ("queued for OA", report.queued),
    ]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value:>8}" for name, value in rows)
