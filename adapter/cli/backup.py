"""``archive-oa backup PATH`` and ``archive-oa restore PATH [--force]``: the embedded store, whole.

The work is in ``services/backup.py``; on PostgreSQL both commands refuse with the
``pg_dump`` / ``pg_restore`` steps (exit 2).
"""

from __future__ import annotations

import argparse
import sys

from .common import add_common, settings_from
from .output import ProgressLine as _Line, table as _table


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "backup",
        help="copy the database, the blobs and the audit checkpoint into a new folder (while running)",
        description="Writes PATH/manifest.json, PATH/archive-oa.db (SQLite online backup: consistent while the "
        "adapter runs), PATH/blobs/ and PATH/audit-checkpoint.json.  PATH must be new or empty.  The "
        "configuration file is not copied (it holds passwords and [security] secret_key): keep it separately.  "
        "On PostgreSQL it prints the pg_dump way instead.  Exit 1 when the source lacks blobs its rows name "
        "or its audit chain is broken (the backup is written anyway).",
    )
    p.add_argument("path", metavar="PATH", help="the backup folder to create")
    add_common(p)
    p.set_defaults(func=run_backup)

    p = subparsers.add_parser(
        "restore",
        help="check a backup folder, then restore it into the configured store",
        description="Checks the manifest, the database hash, every table and every blob first, and changes "
        "nothing when anything is off.  Then copies the blobs, restores the database, migrates an older "
        "schema, records the restore in the audit log and moves the audit checkpoint to the restored chain.",
    )
    p.add_argument("path", metavar="PATH", help="a folder written by `archive-oa backup`")
    p.add_argument("--force", action="store_true",
                   help="replace a store that already holds data (or restore a backup whose audit chain is broken)")
    add_common(p)
    p.set_defaults(func=run_restore)


def run_backup(args: argparse.Namespace) -> int:
    from ..services.backup import backup

    line = _Line(sys.stderr)
    result = backup(settings_from(args), args.path, progress=lambda stage, done, total: line(
        f"backup: {stage} {done}/{total}"))
    line.end()
    manifest = result.manifest
    print(_summary(manifest))
    print(f"backup written to {result.path} in {result.seconds:.1f}s")
    for sha in manifest.missing_blobs[:10]:
        print(f"warning: blob {sha} is named by the database but missing from the data folder", file=sys.stderr)
    if manifest.audit and not manifest.audit["chain_ok"]:
        print(f"warning: the audit chain is broken: {manifest.audit['problem']}", file=sys.stderr)
    return 0 if result.complete else 1


def run_restore(args: argparse.Namespace) -> int:
    from ..services.backup import restore

    line = _Line(sys.stderr)
    result = restore(settings_from(args), args.path, force=args.force, progress=lambda stage, done, total: line(
        f"restore: {stage} {done}/{total}"))
    line.end()
    print(_summary(result.manifest))
    replaced = " (the store's previous contents were replaced)" if result.replaced else ""
    print(f"restored {args.path} (taken {result.manifest.created_at}) into {result.database}{replaced} "
          f"in {result.seconds:.1f}s; schema revision {result.revision}; audit record #{result.audit_seq}")
    if result.audit_problem:
        print(f"warning: the restored audit chain is broken ({result.audit_problem}); the checkpoint was not "
              "moved", file=sys.stderr)
        return 1
    return 0


def _summary(manifest) -> str:
    rows = [[name, state.rows] for name, state in sorted(manifest.tables.items()) if name != "alembic_version"]
    rows.append(["blobs", f"{len(manifest.blobs)} ({manifest.blob_bytes} bytes)"])
    if manifest.audit:
        rows.append(["audit chain", f"head #{manifest.audit['head_seq']} "
                                    f"{'ok' if manifest.audit['chain_ok'] else 'BROKEN'}"])
    return _table(["table", "rows"], rows)
