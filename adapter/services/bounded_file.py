"""A file read no further than a size limit, so one mistaken import path cannot exhaust memory."""

from __future__ import annotations

import io
import os
from pathlib import Path


class TooLarge(Exception):
    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.size = size


def open_bounded(path: Path, limit: int) -> io.BufferedReader:
    """``path`` opened for binary reading; ``TooLarge`` before anything is read when it is larger
    than ``limit`` bytes, and while reading once more than ``limit`` bytes are read (a file
    growing while read).  Seekable, so a format may read a zip's directory at its end."""
    raw = path.open("rb", buffering=0)
    try:
        size = os.fstat(raw.fileno()).st_size
        if size > limit:
            raise TooLarge(size)
    except BaseException:
        raw.close()
        raise
    return io.BufferedReader(_Bounded(raw, limit))


class _Bounded(io.RawIOBase):
    """A raw file that raises TooLarge once more than ``limit`` bytes of it have been read."""

    def __init__(self, raw: io.FileIO, limit: int) -> None:
        super().__init__()
        self._raw = raw
        self._limit = limit

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self._raw.seek(offset, whence)

    def tell(self) -> int:
        return self._raw.tell()

    def readinto(self, buffer) -> int:
        count = self._raw.readinto(buffer)
        self._check()
        return count

    def readall(self) -> bytes:
        # What read() of the whole file calls: one read of at most limit + 1 bytes, as the
        # importer always read a file (RawIOBase's own readall reads in 8 KB steps).
        data = self._raw.read(max(self._limit - self._raw.tell(), 0) + 1)
        self._check()
        return data

    def _check(self) -> None:
        if self._raw.tell() > self._limit:
            raise TooLarge(self._raw.tell())

    def close(self) -> None:
        self._raw.close()
        super().close()
