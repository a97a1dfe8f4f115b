"""Files and folders only their owner can read: the database, ``secret.key``, the audit
checkpoint, the blobs and backups of them.

Modes are given when a file or folder is created (``os.open`` / ``os.mkdir`` with 0600 /
0700, temporary files from ``mkstemp``, which are 0600), so a permissive umask such as
022 does not open them to other users.  What already exists keeps the mode its owner
gave it.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

FILE_MODE = 0o600
DIR_MODE = 0o700


def make_private_dir(path: str | os.PathLike) -> Path:
    """``mkdir -p``: every folder it creates is 0700 (``Path.mkdir`` would give the parents the umask's mode)."""
    path = Path(path)
    if path.is_dir():
        return path
    if path.parent != path:
        make_private_dir(path.parent)
    try:
        os.mkdir(path, DIR_MODE)
    except FileExistsError:
        if not path.is_dir():
            raise
    return path


def create_private_file(path: str | os.PathLike) -> Path:
    """Create ``path`` empty with mode 0600 unless it exists.  Before SQLite's first connect:
    SQLite would create the database 0644, and it gives ``-wal`` / ``-shm`` the database's mode."""
    path = Path(path)
    make_private_dir(path.parent)
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, FILE_MODE))
    return path


def write_private_file(path: str | os.PathLike, data: bytes, *, temp_prefix: str = ".tmp-") -> None:
    """Replace ``path`` atomically with ``data`` (mode 0600): a crash leaves the old file or the
    new one, never half; flushed to disk before the rename."""
    _write_then(os.replace, path, data, temp_prefix)


def write_new_private_file(path: str | os.PathLike, data: bytes, *, temp_prefix: str = ".tmp-") -> None:
    """Create ``path`` with ``data`` (mode 0600), whole or not at all; ``FileExistsError`` when it
    exists, which it then keeps (a hard link is atomic and never overwrites)."""
    def link(tmp: str, target: Path) -> None:
        try:
            os.link(tmp, target)
        finally:
            os.unlink(tmp)

    _write_then(link, path, data, temp_prefix)


def _write_then(place, path: str | os.PathLike, data: bytes, temp_prefix: str) -> None:
    """Write ``data`` to a 0600 temporary file beside ``path``, flushed to disk, then ``place(tmp, path)``."""
    path = Path(path)
    make_private_dir(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        place(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
