"""``archive-oa audit list|export|verify|checkpoint``: read and check the audit log."""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import re
import sys
from contextlib import contextmanager

from ..domain.clock import utc_now
from ..errors import ConfigurationError
from .common import add_common, positive_int, settings_from
from .output import table as _table

_AGE = re.compile(r"^(\d+)\s*([smhd])$")
_AGE_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
EXPORT_FIELDS = ("seq", "at", "actor", "source", "operation", "targets", "outcome", "duration_ms",
                 "correlation_id", "details", "prev_hash", "hash")


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "audit", help="the audit log: list, export, verify the hash chain",
        description="Every SOAP call and administrative change, in an append-only, hash-chained log.",
    )
    commands = parser.add_subparsers(dest="audit_command", metavar="SUBCOMMAND", required=True)

    listing = commands.add_parser("list", help="records as a table, newest last")
    _add_filters(listing)
    listing.add_argument("--limit", type=positive_int, default=50, metavar="N", help="the newest N records (default 50)")
    listing.set_defaults(func=run_list)

    export = commands.add_parser("export", help="records as CSV or JSON lines, with their hashes")
    _add_filters(export)
    export.add_argument("--format", choices=("csv", "jsonl"), default="jsonl", help="default jsonl")
    export.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of standard output")
    export.set_defaults(func=run_export)

    for name, func, text in (
        ("verify", run_verify, "check the whole chain and the checkpoint; exit 1 on any break"),
        ("checkpoint", run_checkpoint, "check what was appended since the checkpoint, then move it to the head"),
    ):
        command = commands.add_parser(name, help=text, description=(
            f"{text[0].upper()}{text[1:]}.  The checkpoint (sequence number and hash of the chain head) "
            "lives outside the database: [security] audit_checkpoint, default <data dir>/audit-checkpoint.json."))
        command.add_argument("--checkpoint", metavar="FILE", help="checkpoint file (default from [security])")
        add_common(command)
        command.set_defaults(func=func)


def _add_filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--user", metavar="U", help="only records of this user (actor)")
    parser.add_argument("--operation", metavar="O", help="only this operation, e.g. ArchiveDocument")
    parser.add_argument("--since", type=parse_since, metavar="T",
                        help="from this time: ISO 8601 (UTC unless a zone is given, e.g. 2024-03-05T08:00+08:00) "
                             "or an age such as 30m, 24h, 7d")
    add_common(parser)


def run_list(args: argparse.Namespace) -> int:
    from ..services import audit

    with _store(args) as store, store.transaction() as conn:
        records = audit.find_records(conn, user=args.user, operation=args.operation, since=args.since,
                                     limit=args.limit)
    rows = [[r.seq, audit.format_instant(r.at)[:23] + "Z", r.actor, r.source or "", r.operation,
             _short(", ".join(r.targets), 60), r.outcome, "" if r.duration_ms is None else r.duration_ms,
             r.correlation_id or ""] for r in records]
    print(_table(["seq", "time (UTC)", "user", "source", "operation", "targets", "outcome", "ms", "correlation"],
                 rows))
    return 0


def run_export(args: argparse.Namespace) -> int:
    from ..services import audit

    count = 0
    with _store(args) as store, store.transaction() as conn, _output(args.output) as out:
        records = audit.iter_records(conn, user=args.user, operation=args.operation, since=args.since)
        writer = None
        if args.format == "csv":
            writer = csv.DictWriter(out, fieldnames=EXPORT_FIELDS)
            writer.writeheader()
        for record in records:
            row = record.as_dict()
            if writer is None:
                out.write(json.dumps(row, ensure_ascii=False) + "\n")
            else:
                row["targets"] = json.dumps(row["targets"], ensure_ascii=False)
                row["details"] = "" if row["details"] is None else json.dumps(row["details"], ensure_ascii=False)
                writer.writerow(row)
            count += 1
    if args.output:
        print(f"{count} audit records written to {args.output}", file=sys.stderr)
    return 0


def run_verify(args: argparse.Namespace) -> int:
    return _check(args, full=True)


def run_checkpoint(args: argparse.Namespace) -> int:
    return _check(args, full=False)


def _check(args: argparse.Namespace, *, full: bool) -> int:
    from pathlib import Path

    from ..services import audit_verify

    settings = settings_from(args)
    path = Path(args.checkpoint) if args.checkpoint else audit_verify.checkpoint_path(settings)
    had_checkpoint = path.exists()
    with _store(args, settings) as store:
        result = audit_verify.verify(store, path, full=full)
    if not result.ok:
        first = result.first_break
        print(f"audit log BROKEN at record {first.seq}: {first.problem}", file=sys.stderr)
        for more in result.breaks[1:6]:
            print(f"  also {more}", file=sys.stderr)
        if len(result.breaks) > 6:
            print(f"  … and {len(result.breaks) - 6} more breaks", file=sys.stderr)
        print(f"checkpoint {path} left unchanged", file=sys.stderr)
        return 1
    scope = "whole chain" if full else "records since the checkpoint"
    print(f"audit log OK: {result.checked} records checked ({scope}); head #{result.head_seq} "
          f"{result.head_hash[:16]}…; checkpoint {path} at #{result.head_seq}")
    if not had_checkpoint:
        print(f"note: there was no checkpoint at {path}, so a cut tail before now cannot be seen; "
              "one has been written", file=sys.stderr)
    return 0


def parse_since(text: str) -> dt.datetime:
    age = _AGE.match(text.strip().lower())
    if age:
        delta = dt.timedelta(**{_AGE_UNITS[age.group(2)]: int(age.group(1))})
        return utc_now() - delta
    try:
        value = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--since {text!r} is neither an ISO time (2024-03-05, 2024-03-05T08:00+08:00) nor an age (30m, 24h, 7d)"
        ) from None
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)


def _short(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


@contextmanager
def _store(args, settings=None):
    from ..store.engine import open_store

    store = open_store(settings or settings_from(args))
    try:
        yield store
    finally:
        store.dispose()


@contextmanager
def _output(path: str | None):
    if not path:
        yield sys.stdout
        return
    try:
        out = open(path, "w", encoding="utf-8", newline="")
    except OSError as exc:
        raise ConfigurationError(f"-o {path}: cannot write the export ({exc.strerror}); choose another file") from exc
    with out:
        yield out
