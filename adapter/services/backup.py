"""Backup and restore of the embedded store: the SQLite database, the blob folder, the audit head.

A backup is a folder::

    manifest.json           what is in it: rows and a digest per table, every blob's sha256 and size,
                            the audit chain's head; restore checks all of it before touching anything
    archive-oa.db           the database, copied with SQLite's online backup API
    blobs/ab/cd/<sha256>    attachment bytes, the data folder's layout
    audit-checkpoint.json   the audit checkpoint, when there is one
    secret.key              the key of the stored PasswordDigest secrets (unless --without-key or the
                            keys come from [security] secret_key); the manifest says which.  One the
                            manifest does not list was copied in by hand: restore uses it when it
                            holds a key the stored secrets need

It is consistent while the adapter runs.  The online backup API copies the database
as of one read transaction; in WAL mode writers carry on meanwhile.  Blobs are copied
*after* that snapshot: they are content-addressed and never change, and every writer
stores a blob before the row that names it, so each blob the snapshot references is
already on disk.  The audit checkpoint is copied *before* the snapshot, so it never
names records the snapshot lacks.  The key file is read before and after it, and both
are kept: a ``users rotate-key`` meanwhile cannot leave the snapshot's secrets without
their key.  Restore refuses a backup whose secrets need a key it has neither in the
backup nor configured, unless told to go on without it.

Every folder and file a backup or a restore creates is readable by its owner only.
The configuration (``archive-oa.toml``: OA password, ``[security] secret_key``) is
deliberately not in the backup; keep it separately.

On PostgreSQL ``backup`` and ``restore`` refuse and print the ``pg_dump`` /
``pg_restore`` way (:data:`POSTGRES_WAY`) instead of copying half of the data.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import getpass
import hashlib
import os
import shutil
import sqlite3
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from sqlalchemy.engine import URL, make_url

from .. import __version__
from ..domain.clock import utc_now
from ..errors import Conflict, ConfigurationError, IntegrityError, NotFound
from ..masking import is_secret_parameter, mask_url
from ..private_files import create_private_file, make_private_dir, write_private_file
from ..security.secrets import SETTING, KeyRing, SecretBox, key_id, missing_key_ids, read_key_file, write_key_file
from ..settings import Settings
from ..store.blobs import BlobStore
from . import audit, audit_verify
from .backup_manifest import (
    BLOBS,
    CHECKPOINT,
    DATABASE,
    KEY,
    MANIFEST,
    KeyState,
    Manifest,
    audit_head,
    blob_files,
    compare_tables,
    file_sha256,
    read_only,
    referenced_blobs,
    revision_of,
    row_counts,
    secret_key_ids,
    table_states,
)

POSTGRES_WAY = """\
this store is PostgreSQL ({url}): backup and restore copy the embedded SQLite store only.
Back up with PostgreSQL's own tools, in this order (the adapter may keep running):
  umask 077                    # every copy readable by its owner only
  cp {checkpoint} BACKUP/      # the audit checkpoint, before the dump
  cp {key_file} BACKUP/        # the key of the PasswordDigest secrets (unless [security] secret_key holds it)
  pg_dump --format=custom --file=BACKUP/archive-oa.dump '{libpq}'
  cp -a {blobs} BACKUP/blobs   # after the dump: blobs never change once written
Restore into an empty database, the key and the blobs first:
  umask 077
  mkdir -p {blobs} && cp -a BACKUP/blobs/. {blobs}/
  cp BACKUP/secret.key {key_file}
  pg_restore --no-owner --exit-on-error --dbname='{libpq}' BACKUP/archive-oa.dump
  cp BACKUP/audit-checkpoint.json {checkpoint}
  archive-oa audit verify
Give the password in ~/.pgpass or PGPASSWORD, not in the URL (docs/backup.md)."""


@dataclass(frozen=True)
class BackupResult:
    path: Path
    manifest: Manifest
    audit_seq: int | None  # the backup's record in the live audit log (None: no audit log there)
    seconds: float

    @property
    def complete(self) -> bool:
        """False when the source lacked referenced blobs or the key of its stored secrets, or its
        audit chain was broken."""
        audit_ok = self.manifest.audit is None or self.manifest.audit["chain_ok"]
        return not self.manifest.missing_blobs and audit_ok and not self.manifest.key.missing


@dataclass(frozen=True)
class RestoreResult:
    database: Path
    manifest: Manifest
    replaced: bool  # a non-empty store was overwritten (--force)
    revision: str | None  # the schema revision after restoring (migrated when older)
    audit_seq: int  # the restore's own record in the audit log
    audit_problem: str | None  # the restored chain does not verify (restored with --force)
    seconds: float
    key_file: Path | None = None  # the key file restore wrote (None: the backup held no key, or keys are configured)
    missing_key_ids: tuple[str, ...] = ()  # needed by restored secrets, at hand nowhere (--force-without-key)
    #: ids of a key file in the backup its manifest does not list (copied in by hand); used when
    #: ``key_file`` is set and it holds a key the restored secrets need
    unlisted_key_ids: tuple[str, ...] = ()


Progress = Callable[[str, int, int], None]  # (stage, done, total)


def _no_progress(stage: str, done: int, total: int) -> None:
    pass


# --- backup ----------------------------------------------------------------------------------


def backup(settings: Settings, destination: str | os.PathLike, *, without_key: bool = False,
           progress: Progress = _no_progress, now: dt.datetime | None = None) -> BackupResult:
    """Write a backup folder at ``destination`` (new, or an empty folder); ``without_key``: leave
    the key file out (the manifest says so)."""
    started = time.monotonic()
    source = _sqlite_path(settings, "backup")
    if not source.is_file():
        raise NotFound(f"no database at {source}: nothing to back up (check --data-dir / [database] url)")
    target = Path(destination).expanduser().absolute()
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise Conflict(f"backup folder {target} already exists and is not empty; choose a new PATH")
    make_private_dir(target.parent)
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))  # 0700
    try:
        checkpoint = audit_verify.checkpoint_path(settings)
        has_checkpoint = checkpoint.is_file()
        if has_checkpoint:  # before the snapshot: it must not name records the snapshot lacks
            write_private_file(work / CHECKPOINT, checkpoint.read_bytes())
        keys = KeyRing(settings)
        keys_before = keys.file_keys()
        progress("database", 0, 1)
        _snapshot(source, work / DATABASE, settings.database.sqlite_busy_timeout_ms / 1000.0)
        progress("database", 1, 1)
        key = _copy_key(keys, keys_before, secret_key_ids(work / DATABASE), work, without_key)
        tables = table_states(work / DATABASE)
        referenced = referenced_blobs(work / DATABASE)
        blobs = _copy_blobs(BlobStore(settings.blob_dir), work / BLOBS, progress)
        manifest = Manifest(
            created_at=_instant(now),
            adapter_version=__version__,
            revision=revision_of(work / DATABASE),
            database_sha256=file_sha256(work / DATABASE),
            database_size=(work / DATABASE).stat().st_size,
            tables=tables,
            blobs=blobs,
            missing_blobs=sorted(referenced - blobs.keys()),
            audit=audit_head(work / DATABASE, work / CHECKPOINT if has_checkpoint else None),
            key=key,
        )
        write_private_file(work / MANIFEST, manifest.to_json().encode("utf-8"))
        if target.exists():
            target.rmdir()  # empty, checked above
        os.replace(work, target)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    seq = _record_backup(settings, target, manifest, now)
    return BackupResult(target, manifest, seq, time.monotonic() - started)


def _record_backup(settings: Settings, target: Path, manifest: Manifest, now: dt.datetime | None) -> int | None:
    """Who copied the whole archive, and where to, goes into the live audit log (not into the backup)."""
    from ..store.engine import open_store

    store = open_store(settings, upgrade=False)  # backing up never migrates
    try:
        with store.transaction(immediate=True) as conn:
            if not conn.dialect.has_table(conn, "audit_log"):
                return None
            return audit.record(
                conn, actor=f"cli:{_os_user()}", source="cli", operation="Backup", targets=[f"backup={target}"],
                outcome="OK" if not manifest.missing_blobs else "MissingBlobs", now=now,
                details={"tables": len(manifest.tables), "blobs": len(manifest.blobs),
                         "audit_head": (manifest.audit or {}).get("head_seq")},
            )
    finally:
        store.dispose()


def _copy_key(keys: KeyRing, before: list[str], needed: dict[str, int], work: Path, without_key: bool) -> KeyState:
    """Put the key file beside the snapshot, unless left out or the keys come from the setting.

    ``before``: the file's keys read before the snapshot, kept after those read now (a rotation
    meanwhile replaced them: the snapshot may hold secrets under either)."""
    if keys.configured:
        return KeyState(False, keys.key_ids(), needed, SETTING, reason="setting")
    found = list(dict.fromkeys(keys.file_keys() + before))
    ids = tuple(key_id(key) for key in found)
    if without_key or not found:
        return KeyState(False, ids, needed, str(keys.key_file), reason="--without-key" if without_key else "absent")
    write_key_file(work / KEY, found)
    return KeyState(True, ids, needed, str(keys.key_file), sha256=file_sha256(work / KEY))


def _snapshot(source: Path, copy: Path, busy_seconds: float) -> None:
    """One consistent copy of a live database (SQLite's online backup API, all pages in one step)."""
    create_private_file(copy)  # SQLite would create it 0644
    with contextlib.closing(sqlite3.connect(source, timeout=busy_seconds)) as src, \
            contextlib.closing(sqlite3.connect(copy)) as dst:
        src.backup(dst)
        dst.execute("PRAGMA journal_mode=DELETE")  # one self-contained file, no -wal beside it
        problem = dst.execute("PRAGMA integrity_check").fetchone()[0]
    if problem != "ok":
        raise IntegrityError(f"the database {source} fails SQLite's integrity check ({problem}); "
                             "nothing was backed up — repair it or restore an older backup")


def _copy_blobs(blobs: BlobStore, folder: Path, progress: Progress) -> dict[str, int]:
    """Copy every blob, checking each one's sha256 on the way; returns sha256 → size."""
    found = sorted(blob_files(blobs.root))
    copied: dict[str, int] = {}
    for n, (digest, path) in enumerate(found, 1):
        data = path.read_bytes()
        actual = hashlib.sha256(data).hexdigest()
        if actual != digest:
            raise IntegrityError(f"blob {path} is corrupt: its bytes hash to {actual}; restore it from an older "
                                 "backup before backing up", sha256=digest, actual=actual)
        write_private_file(folder / digest[:2] / digest[2:4] / digest, data)
        copied[digest] = len(data)
        if n % 200 == 0 or n == len(found):
            progress("blobs", n, len(found))
    return copied


# --- restore ---------------------------------------------------------------------------------


def read_manifest(folder: str | os.PathLike) -> Manifest:
    folder = Path(folder).expanduser()
    path = folder / MANIFEST
    if not path.is_file():
        raise NotFound(f"{folder} is not a backup folder: it has no {MANIFEST}; pass the folder `archive-oa "
                       "backup` wrote")
    return Manifest.from_json(path.read_text(encoding="utf-8"), path)


def verify_backup(folder: str | os.PathLike, *, progress: Progress = _no_progress) -> Manifest:
    """Check a backup against its manifest: database hash and tables, every blob, the audit chain."""
    folder = Path(folder).expanduser()
    manifest = read_manifest(folder)
    database = folder / DATABASE
    if not database.is_file():
        raise IntegrityError(f"backup {folder} has no {DATABASE}")
    actual = file_sha256(database)
    if actual != manifest.database_sha256:
        raise IntegrityError(f"{database} hashes to {actual}, the manifest says {manifest.database_sha256}: "
                             "the backup was altered or damaged")
    compare_tables(table_states(database), manifest.tables, f"backup {database}")
    present = dict(blob_files(folder / BLOBS))
    if present.keys() != manifest.blobs.keys():
        extra, lacking = present.keys() - manifest.blobs.keys(), manifest.blobs.keys() - present.keys()
        raise IntegrityError(f"backup {folder}: blobs differ from the manifest ({len(lacking)} missing, e.g. "
                             f"{sorted(lacking)[:3]}; {len(extra)} not listed, e.g. {sorted(extra)[:3]})")
    for n, (digest, path) in enumerate(sorted(present.items()), 1):
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() != digest or len(data) != manifest.blobs[digest]:
            raise IntegrityError(f"backup blob {path} does not match its sha256 / manifest size: damaged backup",
                                 sha256=digest)
        if n % 200 == 0 or n == len(present):
            progress("verify blobs", n, len(present))
    unreferenced = referenced_blobs(database) - present.keys() - set(manifest.missing_blobs)
    if unreferenced:
        raise IntegrityError(f"backup {folder}: the database references blobs not in the backup: "
                             f"{sorted(unreferenced)[:3]}")
    checkpoint = folder / CHECKPOINT
    audit = audit_head(database, checkpoint if checkpoint.is_file() else None)
    if manifest.audit is not None and audit is not None:
        for key in ("head_seq", "head_hash", "first_hash"):
            if audit[key] != manifest.audit[key]:
                raise IntegrityError(f"backup {folder}: audit chain {key} is {audit[key]}, the manifest says "
                                     f"{manifest.audit[key]}")
        if manifest.audit["chain_ok"] and not audit["chain_ok"]:
            raise IntegrityError(f"backup {folder}: the audit chain no longer verifies ({audit['problem']})")
    _verify_key(folder, manifest)
    return manifest


def _verify_key(folder: Path, manifest: Manifest) -> None:
    """A key file the manifest lists must be the one backed up.  One it does not list (the
    manifest says the key was left out, or predates keys in backups) was copied in by hand, as
    ``backup --without-key`` says to: restore checks its key ids against the stored secrets."""
    key_file = folder / KEY
    if manifest.key is None or not manifest.key.included:
        return
    if not key_file.is_file():
        raise IntegrityError(f"backup {folder}: its manifest lists {KEY} (key ids {', '.join(manifest.key.key_ids)}), "
                             "but the file is missing: copy it back from where the backup was taken")
    if file_sha256(key_file) != manifest.key.sha256:
        raise IntegrityError(f"backup {key_file} does not match the sha256 in the manifest: the backup was altered "
                             "or damaged")


def restore(settings: Settings, source: str | os.PathLike, *, force: bool = False, force_without_key: bool = False,
            progress: Progress = _no_progress, now: dt.datetime | None = None) -> RestoreResult:
    """Verify the backup, then restore it into the configured store (the key file, the blobs, then
    the database).

    A store that holds any row or blob is only overwritten with ``force``.  A backup whose stored
    secrets need a key that neither the backup nor this installation has is only restored with
    ``force_without_key`` (PasswordDigest then fails for those users until their passwords are set again).
    """
    started = time.monotonic()
    source = Path(source).expanduser()
    target = _sqlite_path(settings, "restore")
    occupied = _contents(target, settings.blob_dir)
    if occupied and not force:
        shown = ", ".join(occupied[:4]) + (f" and {len(occupied) - 4} more" if len(occupied) > 4 else "")
        raise Conflict(f"the store {target} is not empty ({shown}); restoring would replace it: "
                       "pass --force, or restore into an empty --data-dir")
    manifest = verify_backup(source, progress=progress)
    if manifest.audit and not manifest.audit["chain_ok"] and not force:
        raise IntegrityError(f"backup {source}: its audit chain was already broken when it was taken "
                             f"({manifest.audit['problem']}); pass --force to restore it anyway")
    keys = KeyRing(settings)
    restored_keys, missing, unlisted = _keys_to_restore(keys, source, manifest, force_without_key)
    if restored_keys:  # before the database: restored secrets are never there without their key
        write_key_file(keys.key_file, restored_keys)
    blobs = BlobStore(settings.blob_dir)
    for n, (digest, path) in enumerate(sorted(blob_files(source / BLOBS)), 1):
        if blobs.put(path.read_bytes()) != digest:  # verified above; a change since then is damage
            raise IntegrityError(f"backup blob {path} changed while restoring", sha256=digest)
        if n % 200 == 0 or n == len(manifest.blobs):
            progress("blobs", n, len(manifest.blobs))
    progress("database", 0, 1)
    create_private_file(target)  # SQLite would create it 0644
    with read_only(source / DATABASE) as src, \
            contextlib.closing(sqlite3.connect(target, timeout=settings.database.sqlite_busy_timeout_ms / 1000)) as dst:
        src.backup(dst)
    progress("database", 1, 1)
    compare_tables(table_states(target), manifest.tables, f"restored {target}")
    revision, audit_seq, problem = _after_restore(settings, source, manifest, now)
    return RestoreResult(target, manifest, bool(occupied), revision, audit_seq, problem,
                         time.monotonic() - started, keys.key_file if restored_keys else None,
                         tuple(missing), unlisted)


#: Why a backup holds no key file (KeyState.reason), for restore's refusal.
_NOT_IN_BACKUP = {"--without-key": "taken with --without-key", "setting": f"its keys came from {SETTING}",
                  "absent": "its data folder had no key file", None: "taken before backups held the key"}


def _keys_to_restore(keys: KeyRing, folder: Path, manifest: Manifest,
                     force_without_key: bool) -> tuple[list[str], list[str], tuple[str, ...]]:
    """The keys to write into the key file ([]: nothing to write), the key ids the backup's
    secrets need that no key at hand has (refused unless ``force_without_key``), and the ids of
    a key file in the backup that its manifest does not list (() when there is none).

    At hand: the backup's key file and this installation's keys (its key file, or the setting,
    which then is the only place the adapter looks).  A key file the manifest does not list is
    used only when it holds a key the secrets need."""
    listed = manifest.key is not None and manifest.key.included
    in_backup = read_key_file(folder / KEY) if listed or (folder / KEY).is_file() else []
    in_backup_ids = tuple(key_id(key) for key in in_backup)
    needed = secret_key_ids(folder / DATABASE)
    if not listed and not set(in_backup_ids) & set(needed):
        backed_up = []  # an unlisted key no stored secret needs is not put in place
    else:
        backed_up = in_backup
        if not listed:  # nothing vouches for it: every line must be a key before it goes in place
            SecretBox(backed_up, source=str(folder / KEY))
    current = keys.file_keys()
    if keys.configured:
        to_write, available = [], keys.key_ids()
    else:
        to_write = list(dict.fromkeys(backed_up + current)) if backed_up else []
        available = [key_id(key) for key in backed_up + current]
    missing = missing_key_ids(needed, available)
    if missing and not force_without_key:
        users = sum(needed[k] for k in missing)
        have = f"ids {', '.join(sorted(set(available)))}" if available else "no key"
        if keys.configured:
            held = set(missing) & set(in_backup_ids)
            where = (f"is not among the keys of {SETTING} ({have}), the only keys read when it is set: add that key "
                     f"there after the current one{f' (the backup holds it in {folder / KEY})' if held else ''}")
        else:
            if in_backup:
                kept = (f"its {KEY} holds key ids {', '.join(in_backup_ids)}"
                        f"{'' if listed else ', and its manifest does not list that file'}")
            else:
                kept = _NOT_IN_BACKUP[manifest.key.reason if manifest.key is not None else None]
            where = (f"is neither in the backup ({kept}) nor in {keys.key_file} ({have}): copy the secret.key "
                     f"kept with the backup to {keys.key_file}")
        raise ConfigurationError(
            f"backup {folder}: the stored PasswordDigest secrets of {users} user(s) need key id "
            f"{', '.join(missing)}, which {where}, and restore again; or pass --force-without-key and set "
            "their passwords again (archive-oa users passwd)"
        )
    return to_write, missing, () if listed else in_backup_ids


def _after_restore(settings: Settings, source: Path, manifest: Manifest,
                   now: dt.datetime | None) -> tuple[str | None, int, str | None]:
    """Migrate an older schema, record the restore in the audit log, move the checkpoint to the new head.

    Returns (schema revision, the restore's audit sequence number, the chain's problem or None).
    """
    from ..store import migrations
    from ..store.engine import open_store

    store = open_store(settings, upgrade=True)
    try:
        revision = migrations.current_revision(store.engine)
        at = now or utc_now()
        with store.transaction(immediate=True) as conn:
            seq = audit.record(
                conn, actor=f"cli:{_os_user()}", source="cli", operation="Restore",
                targets=[f"backup={source.absolute()}"], outcome="OK", now=at,
                details={"backup_created_at": manifest.created_at,
                         "restored_head": (manifest.audit or {}).get("head_seq", 0)},
            )
        with store.transaction() as conn:
            chain = audit_verify.verify_chain(conn)
    finally:
        store.dispose()
    if not chain.ok:  # restored with --force from a backup whose chain was broken: no checkpoint over it
        return revision, seq, str(chain.first_break)
    # The store was deliberately rewound: the checkpoint follows it (the old one would flag a cut tail).
    audit_verify.write_checkpoint(audit_verify.checkpoint_path(settings), chain.checkpoint(at))
    return revision, seq, None


def _contents(database: Path, blob_dir: Path) -> list[str]:
    """What makes a store non-empty: tables with rows, blobs (empty list: safe to restore into)."""
    found = []
    if database.is_file():
        counts = row_counts(database)
        first = [name for name in ("vouchers", "archived_documents", "users", "audit_log") if counts.get(name)]
        rest = [name for name, rows in counts.items() if rows and name not in first and name != "alembic_version"]
        found += [f"{name}: {counts[name]} rows" for name in first + rest]
    blob_count = sum(1 for _ in blob_files(blob_dir))
    if blob_count:
        found.append(f"{blob_count} blobs in {blob_dir}")
    return found


def _sqlite_path(settings: Settings, command: str) -> Path:
    url = make_url(settings.database_url)
    if url.get_backend_name() == "postgresql":
        query = {name: value for name, value in url.query.items() if not is_secret_parameter(name)}
        libpq = URL.create("postgresql", username=url.username, host=url.host, port=url.port,  # no password
                           database=url.database, query=query).render_as_string(hide_password=False)
        raise ConfigurationError(POSTGRES_WAY.format(
            url=mask_url(settings.database_url), libpq=libpq, blobs=settings.blob_dir,
            checkpoint=audit_verify.checkpoint_path(settings), key_file=KeyRing(settings).key_file))
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        raise ConfigurationError(f"[database] url {mask_url(settings.database_url)!r} is not a SQLite file: {command} works "
                                 "on the SQLite file or, on PostgreSQL, with pg_dump")
    return Path(url.database).expanduser().absolute()


def _instant(now: dt.datetime | None) -> str:
    return (now or utc_now()).astimezone(dt.timezone.utc).isoformat(timespec="seconds")


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())
