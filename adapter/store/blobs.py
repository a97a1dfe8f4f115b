"""Content-addressed blob folder: attachment bytes stored once under their sha256.

Layout ``<root>/ab/cd/abcd…`` (two fan-out levels keep folders small).  Writes go to
a temporary file in the same folder, are flushed to disk and then renamed, so a
crash never leaves a half-written blob under a valid name.  Every read checks the
sha256 again: bytes altered on disk raise ``IntegrityError`` instead of being served.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import tempfile
from pathlib import Path

from ..errors import IntegrityError, NotFound

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class BlobStore:
    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)

    def put(self, data: bytes) -> str:
        """Store ``data`` (once) and return its sha256 hex digest."""
        digest = hashlib.sha256(data).hexdigest()
        path = self._path(digest)
        if path.is_file() and path.stat().st_size == len(data):
            return digest  # already there: content addressing makes this a no-op
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        return digest

    def read(self, sha256: str) -> bytes:
        """The bytes stored under ``sha256``; ``IntegrityError`` when they no longer match."""
        path = self._existing(sha256)
        data = path.read_bytes()
        actual = hashlib.sha256(data).hexdigest()
        if actual != sha256:
            raise IntegrityError(
                f"blob {sha256} is corrupt: its bytes hash to {actual}; restore it from a backup",
                sha256=sha256,
                actual=actual,
            )
        return data

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
            actual = self._hash.hexdigest()
            if actual != self._expected:
                raise IntegrityError(
                    f"blob {self._expected} is corrupt: its bytes hash to {actual}; restore it from a backup",
                    sha256=self._expected,
                    actual=actual,
                )
        return n

    def close(self) -> None:
        if not self.closed:
            self._file.close()
        super().close()

