"""What the first bytes of a file look like: an XML root element, or a short description.

Formats use ``xml_root`` in their ``detect``; ``--format auto`` uses ``describe`` to say what
it saw when no format recognised a file.
"""

from __future__ import annotations

import codecs
import re

# The first tag that is not a declaration, processing instruction, DOCTYPE or comment.
_ROOT_TAG = re.compile(rb"<(?![?!])(?:[A-Za-z_][\w.-]*:)?([A-Za-z_][\w.-]*)")
_COMMENT = re.compile(rb"<!--.*?(?:-->|$)", re.S)
_WIDE_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32-le"), (codecs.BOM_UTF32_BE, "utf-32-be"),  # before UTF-16: FF FE 00 00
    (codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be"),
)
_MAGIC = ((b"PK\x03\x04", "a ZIP archive"), (b"%PDF", "a PDF document"), (b"\x89PNG", "a PNG image"),
          (b"\xff\xd8\xff", "a JPEG image"), (b"\xd0\xcf\x11\xe0", "an old Office document (OLE)"))


def xml_root(head: bytes) -> str | None:
    """The local name of the root element when ``head`` is the start of an XML document that
    reaches it (any byte encoding; UTF-16/32 by their BOM)."""
    text = _narrow(head).removeprefix(codecs.BOM_UTF8).lstrip()
    if not text.startswith(b"<"):  # not XML, though it may quote some (a JSON string, say)
        return None
    match = _ROOT_TAG.search(_COMMENT.sub(b"", text))
    return match.group(1).decode("ascii", "replace") if match else None


def describe(head: bytes) -> str:
    """A few words on what a file starting with ``head`` holds, for an error message."""
    if not head.strip():
        return "nothing (the file is empty or blank)"
    for magic, what in _MAGIC:
        if head.startswith(magic):
            return what
    text = _narrow(head).removeprefix(codecs.BOM_UTF8).lstrip()
    if text.startswith(b"<"):
        root = xml_root(head)
        return f"XML whose root element is <{root}>" if root else "XML without a root element in its first bytes"
    if text[:1] in (b"{", b"["):
        return f"JSON (or text) starting {_quote(text)}"
    try:
        text.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(text) - 3:  # not just a character cut at the end of the head
            return "binary data starting " + text[:8].hex(" ")
    return f"text starting {_quote(text)}"


def _narrow(head: bytes) -> bytes:
    """UTF-16/32 (known by its byte order mark) as UTF-8, so tags read byte by byte."""
    for bom, codec in _WIDE_BOMS:
        if head.startswith(bom):
            return head[len(bom):].decode(codec, "ignore").encode("utf-8")
    return head


def _quote(text: bytes) -> str:
    shown = " ".join(text[:60].decode("utf-8", "replace").split())
    return repr(shown[:40] + ("…" if len(shown) > 40 else ""))
