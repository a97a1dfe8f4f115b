"""Character sets on the wire: what a request's bytes are, and what answers are written in.

OA stacks in China send UTF-8, GBK or GB18030 and label it inconsistently: the charset
in the Content-Type header, in the XML declaration, in both — or a library default in
the header and the truth in the declaration (a hand-built GBK envelope posted by an HTTP
library whose Content-Type says ``charset=utf-8`` by default).  So a request is read
like this:

1. the candidates are the XML declaration's encoding (it travels with the bytes), then
   the header's charset, then UTF-8 when neither names one;
2. the first candidate the whole body decodes in, strictly, is the body's charset;
3. the body is handed on as UTF-8 with a declaration saying so, so the parser and
   everything after it sees one encoding.

A body that decodes in none of its candidates is a ``Validation`` fault naming the
charset and the first bad byte — never mojibake stored in the archive.

Answers are written in ``[gateway] response_encoding`` (UTF-8, GBK or GB18030) with the
same name in the Content-Type charset and in the XML declaration: legacy parsers read
one or the other, never both.
"""

from __future__ import annotations

import codecs
import re

from ..errors import ConfigurationError, Issue, ValidationFailed
from ..safexml import declared_encoding

#: canonical wire names of the charsets the gateway reads and writes
UTF8, GBK, GB18030 = "UTF-8", "GBK", "GB18030"
SUPPORTED = (UTF8, GBK, GB18030)
#: labels seen in the wild → the charset that decodes them.  GB2312 labels are read as
#: GBK (its superset), as browsers do: clients labelling GBK text "gb2312" are common.
_LABELS = {
    "utf-8": UTF8, "utf8": UTF8,
    "gbk": GBK, "cp936": GBK, "x-gbk": GBK, "windows-936": GBK, "ms936": GBK,
    "gb2312": GBK, "gb_2312": GBK, "gb_2312-80": GBK, "csgb2312": GBK, "euc-cn": GBK, "x-euc-cn": GBK,
    "gb18030": GB18030, "gb-18030": GB18030,
}
_PYTHON_CODEC = {UTF8: "utf-8", GBK: "gbk", GB18030: "gb18030"}

#: the XML declaration's encoding pseudo-attribute, rewritten once the body is UTF-8
#: (``safexml.declared_encoding`` reads it from the raw bytes)
_DECLARATION_TEXT = re.compile(r"^(\s*<\?xml\b[^>]*?\bencoding\s*=\s*)([\"'])([A-Za-z0-9._:-]*)\2", re.IGNORECASE)
_UTF8_BOM = codecs.BOM_UTF8


def parse_content_type(header: str | None) -> tuple[str, str | None]:
    """``"text/xml; charset=GBK"`` → ``("text/xml", "gbk")``; no header → ``("text/xml", None)``."""
    if not header:
        return "text/xml", None
    media_type, *params = [part.strip() for part in header.split(";")]
    charset = None
    for param in params:
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset":
            charset = value.strip().strip("\"'").lower() or None
    return media_type.lower(), charset


def canonical(label: str) -> str | None:
    """``"gb2312"`` → ``"GBK"``, ``"utf8"`` → ``"UTF-8"``; None for a charset we do not read."""
    return _LABELS.get(label.strip().strip("\"'").lower())


def request_as_utf8(body: bytes, header_charset: str | None) -> bytes:
    """The request body as UTF-8 bytes, its XML declaration (if any) saying UTF-8.

    ``header_charset`` is the Content-Type's charset parameter (None when absent).
    Raises ``ValidationFailed`` for an unknown charset or bytes that fit none of the
    candidates.
    """
    bom = body.startswith(_UTF8_BOM)
    if bom:
        body = body[len(_UTF8_BOM):]
    declared = declared_encoding(body)
    candidates = _candidates(declared, header_charset, bom)
    for charset in candidates:
        if charset == UTF8 and (declared is None or canonical(declared) == UTF8):
            if _is_utf8(body):
                return body  # already what the parser wants: no copy of a large body
            continue
        try:
            text = body.decode(_PYTHON_CODEC[charset])
        except UnicodeDecodeError:
            continue
        return _declare_utf8(text).encode("utf-8")
    raise _undecodable(body, candidates, declared, header_charset)


#: How much of a body ``_is_utf8`` decodes at a time.
_CHECK_PIECE = 256 * 1024


def _is_utf8(body: bytes) -> bool:
    """Whether ``body`` is UTF-8, checked a piece at a time: decoded whole, a 20 MB body
    would be a str of up to 80 MB (four bytes a character once one needs them)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    view = memoryview(body)
    try:
        for start in range(0, len(view), _CHECK_PIECE):
            decoder.decode(view[start:start + _CHECK_PIECE])
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return False
    return True


def _candidates(declared: str | None, header_charset: str | None, bom: bool) -> list[str]:
    if bom:  # a byte order mark is unambiguous, whatever the labels say
        return [UTF8]
    found: list[str] = []
    for where, label in (("XML declaration", declared), ("Content-Type header", header_charset)):
        if label is None:
            continue
        charset = canonical(label)
        if charset is None:
            raise ValidationFailed(
                f"unknown charset {label!r} in the {where}: send UTF-8, GBK or GB18030",
                [Issue("/", "charset", f"{where} names {label!r}; use UTF-8, GBK or GB18030", source="request")],
            )
        if charset not in found:
            found.append(charset)
    return found or [UTF8]


def _undecodable(body: bytes, candidates: list[str], declared: str | None, header: str | None) -> ValidationFailed:
    charset = candidates[0]
    try:
        body.decode(_PYTHON_CODEC[charset])
        position = 0
    except UnicodeDecodeError as exc:
        position = exc.start
    labels = []
    if declared is not None:
        labels.append(f"XML declaration {declared!r}")
    if header is not None:
        labels.append(f"Content-Type charset {header!r}")
    named = " and ".join(labels) or "no charset label (UTF-8 assumed)"
    tried = ", ".join(candidates)
    message = (
        f"the request body is not valid {tried} (first bad byte at offset {position}); it carries {named}: "
        "encode the body in the charset you name, or name the charset it is in"
    )
    return ValidationFailed(message, [Issue("/", "charset", message, source="request")])


def _declare_utf8(text: str) -> str:
    return _DECLARATION_TEXT.sub(lambda m: f"{m.group(1)}{m.group(2)}UTF-8{m.group(2)}", text, count=1)


# --- answers --------------------------------------------------------------------------


def response_charset(label: str, *, setting: str = "[gateway] response_encoding") -> str:
    """The canonical name of a configured answer charset, or ``ConfigurationError``."""
    charset = canonical(label or "")
    if charset is None:
        raise ConfigurationError(f"{setting} = {label!r} is not supported: use UTF-8, GBK or GB18030")
    return charset


def content_type(media_type: str, charset: str) -> str:
    """The Content-Type of an answer: ``text/xml; charset=GBK``."""
    return f"{media_type}; charset={charset}"
