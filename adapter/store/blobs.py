"""Content-addressed blob folder: attachment bytes stored once under their sha256.

Layout ``<root>/ab/cd/abcd…`` (two fan-out levels keep folders small).  Writes go to
a temporary file in the same folder, are flushed to disk and then renamed, so a
crash never leaves a half-written blob under a valid name; folders are 0700 and
files 0600.  Every read checks the
sha256 again: bytes altered on disk raise ``IntegrityError`` instead of being served.
Large blobs are served without holding them in memory: ``open_verified`` checks the
whole file in one streaming pass, then hands the open file back to be read in chunks.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
from pathlib import Path
from typing import BinaryIO

from ..errors import IntegrityError, NotFound
from ..private_files import write_private_file

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
#: Read buffer of the checking pass: large enough for few system calls, small beside any blob.
_HASH_CHUNK = 1 << 20


class BlobStore:
    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)

    def put(self, data: bytes) -> str:
        """Store ``data`` (once) and return its sha256 hex digest."""
        digest = hashlib.sha256(data).hexdigest()
        path = self._path(digest)
        if path.is_file() and path.stat().st_size == len(data):
            return digest  # already there: content addressing makes this a no-op
        write_private_file(path, data)
        return digest

    def read(self, sha256: str) -> bytes:
        """The bytes stored under ``sha256``; ``IntegrityError`` when they no longer match."""
        path = self._existing(sha256)
        data = path.read_bytes()
        _check_digest(sha256, hashlib.sha256(data).hexdigest())
        return data

    def open_verified(self, sha256: str) -> tuple[BinaryIO, int]:
        """The blob's file, opened and checked (the same errors as ``read``), positioned at
        its start, with the number of bytes checked; the caller closes it.

        The check reads the file once in 1 MB pieces, so a 50 MB attachment costs 1 MB of
        memory.  The caller reads the very file (inode) that was checked: a blob replaced
        by ``put`` meanwhile does not matter; count what you read to notice a truncation."""
        file = open(self._existing(sha256), "rb")  # noqa: SIM115 (returned open, or closed below)
        try:
            digest = hashlib.sha256()
            buffer = bytearray(_HASH_CHUNK)
            view = memoryview(buffer)
            size = 0
            while n := file.readinto(buffer):
                digest.update(view[:n])
                size += n
            _check_digest(sha256, digest.hexdigest())
            file.seek(0)
        except BaseException:
            file.close()
            raise
        return file, size

    def open(self, sha256: str) -> io.RawIOBase:
        """A binary reader for streaming; raises ``IntegrityError`` at end of file on a mismatch."""
        return _VerifyingReader(self._existing(sha256), sha256)

    def exists(self, sha256: str) -> bool:
        return bool(_SHA256.match(sha256 or "")) and self._path(sha256).is_file()

    def _existing(self, sha256: str) -> Path:
        if not _SHA256.match(sha256 or ""):
            raise NotFound(f"{sha256!r} is not a sha256 hex digest (64 lower-case hex characters)")
        path = self._path(sha256)
        if not path.is_file():
            raise NotFound(f"no blob with sha256 {sha256} in {self.root}", sha256=sha256)
        return path

    def _path(self, sha256: str) -> Path:
        if not _SHA256.match(sha256):
            raise ValueError(f"not a sha256 hex digest: {sha256!r}")
        return self.root / sha256[:2] / sha256[2:4] / sha256


class _VerifyingReader(io.RawIOBase):
    """Reads a blob file, hashing what passes through; checks the digest once EOF is reached."""

    def __init__(self, path: Path, expected: str) -> None:
        super().__init__()
        self._file = open(path, "rb")  # noqa: SIM115 (closed by close())
        self._hash = hashlib.sha256()
        self._expected = expected
        self._checked = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = self._file.readinto(buffer)
        if n:
            self._hash.update(memoryview(buffer)[:n])
        elif not self._checked:
            self._checked = True
            _check_digest(self._expected, self._hash.hexdigest())
        return n

    def close(self) -> None:
        if not self.closed:
            self._file.close()
        super().close()


def _check_digest(expected: str, actual: str) -> None:
    if actual != expected:
        raise IntegrityError(
            f"blob {expected} is corrupt: its bytes hash to {actual}; restore it from a backup",
            sha256=expected,
            actual=actual,
        )
