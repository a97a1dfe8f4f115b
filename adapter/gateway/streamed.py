"""A file sent in an answer's ``xs:base64Binary`` element without holding it in memory.

``GetAttachment`` answers with its blob file open (``FileContent``); the answer writer
(``answers.py``) sends the envelope's head, the file in base64 pieces through a WSGI
iterator (``StreamedBody``), then the tail.  Built whole, an answer of a 50 MB file is the
bytes, their base64 text, the text in a tree, the serialized envelope and the server's
copy — 333 MB alive at once (bench B5).
"""

from __future__ import annotations

import binascii
from typing import BinaryIO, Callable, Iterator

#: Raw bytes per piece of the streamed file: a multiple of 3, so every piece but the last
#: encodes to base64 without padding and the pieces join into one valid base64 text;
#: 768 KiB raw is 1 MiB of base64 — few system calls, little memory.
CHUNK_BYTES = 3 * 256 * 1024


class FileContent:
    """An open file of ``size`` bytes as an ``xs:base64Binary`` value.

    Iterating gives its bytes in pieces and closes it — the form spyne's ``ByteArray``
    takes (a sequence of byte chunks), so spyne writes the same answer from it; the
    gateway's writer streams ``file`` instead."""

    def __init__(self, file: BinaryIO, size: int) -> None:
        self.file, self.size = file, size

    def __iter__(self) -> Iterator[bytes]:
        with self.file:
            while piece := self.file.read(CHUNK_BYTES):
                yield piece

    def close(self) -> None:
        self.file.close()


class StreamedBody:
    """The WSGI body of an answer holding a ``FileContent``: head, the file in base64
    pieces, tail.

    The file was checked just before; should it come out shorter or longer now (changed
    on disk since), the answer can no longer become a fault: the iterator raises what
    ``broken(message)`` returns, the server drops the connection."""

    def __init__(self, head: bytes, content: FileContent, tail: bytes, broken: Callable[[str], Exception]) -> None:
        self._head, self._content, self._tail, self._broken = head, content, tail, broken

    def __iter__(self) -> Iterator[bytes]:
        yield self._head
        buffer = bytearray(CHUNK_BYTES)
        sent, size = 0, self._content.size
        while n := _read_full(self._content.file, buffer):
            sent += n
            if sent > size:
                break
            yield binascii.b2a_base64(memoryview(buffer)[:n], newline=False)
        if sent != size:
            raise self._broken(f"the blob changed on disk while it was sent: {sent} bytes read, "
                               f"{size} checked; the answer was cut off")
        yield self._tail

    def close(self) -> None:
        self._content.close()


def base64_length(size: int) -> int:
    return 4 * ((size + 2) // 3)


def _read_full(file: BinaryIO, buffer: bytearray) -> int:
    """Fill ``buffer`` but at the end of the file: a short piece in the middle would put
    base64 padding inside the text."""
    view = memoryview(buffer)
    filled = 0
    while filled < len(buffer):
        n = file.readinto(view[filled:])
        if not n:
            break
        filled += n
    return filled
