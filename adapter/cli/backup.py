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
        "adapter runs), PATH/blobs/, PATH/audit-checkpoint.json and PATH/secret.key (the key of the stored "
        "PasswordDigest secrets), all readable by the owner only.  PATH must be new or empty.  The "
        "configuration file is not copied (it holds passwords and [security] secret_key): keep it separately.  "
        "On PostgreSQL it prints the pg_dump way instead.  Exit 1 when the source lacks blobs its rows name, "
        "the key its secrets need, or its audit chain is broken (the backup is written anyway).",
    )
    p.add_argument("path", metavar="PATH", help="the backup folder to create")
    p.add_argument("--without-key", action="store_true",
                   help="leave secret.key out (you keep it elsewhere); the manifest and a warning say so")
    add_common(p)
    p.set_defaults(func=run_backup)

    p = subparsers.add_parser(
        "restore",
        help="check a backup folder, then restore it into the configured store",
        description="Checks the manifest, the database hash, every table, every blob and the key first, and "
        "changes nothing when anything is off, or when the stored PasswordDigest secrets need a key that is "
        "neither in the backup nor configured here.  Then puts back secret.key, copies the blobs, restores the "
        "database, migrates an older schema, records the restore in the audit log and moves the audit "
        "checkpoint to the restored chain.",
    )
    p.add_argument("path", metavar="PATH", help="a folder written by `archive-oa backup`")
    p.add_argument("--force", action="store_true",
                   help="replace a store that already holds data (or restore a backup whose audit chain is broken)")
    p.add_argument("--force-without-key", action="store_true",
                   help="restore even though the key of the stored secrets is missing (PasswordDigest then fails "
                   "for those users until their passwords are set again)")
    add_common(p)
    p.set_defaults(func=run_restore)


def run_backup(args: argparse.Namespace) -> int:
    from ..services.backup import backup

    line = _Line(sys.stderr)
    result = backup(settings_from(args), args.path, without_key=args.without_key,
                    progress=lambda stage, done, total: line(f"backup: {stage} {done}/{total}"))
    line.end()
    manifest = result.manifest
    print(_summary(manifest))
    print(f"backup written to {result.path} in {result.seconds:.1f}s")
    for sha in manifest.missing_blobs[:10]:
        print(f"warning: blob {sha} is named by the database but missing from the data folder", file=sys.stderr)
    _key_warnings(manifest.key)
    if manifest.audit and not manifest.audit["chain_ok"]:
        print(f"warning: the audit chain is broken: {manifest.audit['problem']}", file=sys.stderr)
    return 0 if result.complete else 1


def _key_warnings(key) -> None:
    from ..security.secrets import KEY_FILE_NAME

    ids = ", ".join(key.key_ids)
    if key.missing:
        print(f"warning: the stored secrets need key id {', '.join(key.missing)}, which {key.source} lacks: "
              "PasswordDigest already fails for those users", file=sys.stderr)
    elif key.reason == "--without-key" and key.key_ids:
        print(f"warning: the encryption key is NOT in the backup (--without-key): copy {key.source} (key id {ids}) "
              f"by hand and keep it with the backup (into {KEY_FILE_NAME} in the backup folder is fine: restore "
              f"uses it); without it restore refuses, and PasswordDigest fails for the "
              f"{sum(key.needed.values())} user(s) with a stored secret", file=sys.stderr)
    elif key.reason == "setting" and key.needed:
        print(f"note: the encryption keys come from {key.source} (key id {ids}) and are not in the backup: "
              "keep that setting to restore", file=sys.stderr)


def run_restore(args: argparse.Namespace) -> int:
    from ..security.secrets import KEY_FILE_NAME
    from ..services.backup import restore

    line = _Line(sys.stderr)
    result = restore(settings_from(args), args.path, force=args.force, force_without_key=args.force_without_key,
                     progress=lambda stage, done, total: line(f"restore: {stage} {done}/{total}"))
    line.end()
    print(_summary(result.manifest))
    replaced = " (the store's previous contents were replaced)" if result.replaced else ""
    print(f"restored {args.path} (taken {result.manifest.created_at}) into {result.database}{replaced} "
          f"in {result.seconds:.1f}s; schema revision {result.revision}; audit record #{result.audit_seq}")
    unlisted = ", ".join(result.unlisted_key_ids)
    if result.key_file and unlisted:
        print(f"note: {KEY_FILE_NAME} in the backup is not in its manifest (copied in by hand); it holds key id "
              f"{unlisted}, which the stored secrets need: used", file=sys.stderr)
    elif unlisted:
        print(f"note: {KEY_FILE_NAME} in the backup is not in its manifest (copied in by hand); it holds key id "
              f"{unlisted}, which no restored secret needs here: not used", file=sys.stderr)
    if result.key_file:
        print(f"encryption key restored to {result.key_file}")
    status = 0
    if result.missing_key_ids:
        print(f"warning: restored without key id {', '.join(result.missing_key_ids)} (--force-without-key): "
              "PasswordDigest fails for the users whose secrets it encrypted until their passwords are set again "
              "(archive-oa users passwd)", file=sys.stderr)
        status = 1
    if result.audit_problem:
        print(f"warning: the restored audit chain is broken ({result.audit_problem}); the checkpoint was not "
              "moved", file=sys.stderr)
        status = 1
    return status


def _summary(manifest) -> str:
    rows = [[name, state.rows] for name, state in sorted(manifest.tables.items()) if name != "alembic_version"]
    rows.append(["blobs", f"{len(manifest.blobs)} ({manifest.blob_bytes} bytes)"])
    if manifest.audit:
        rows.append(["audit chain", f"head #{manifest.audit['head_seq']} "
                                    f"{'ok' if manifest.audit['chain_ok'] else 'BROKEN'}"])
    if manifest.key:
        rows.append(["encryption key", "included" if manifest.key.included else "NOT included"])
    return _table(["table", "rows"], rows)
