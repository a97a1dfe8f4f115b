"""An operation's answer written as XML text exactly as spyne writes it, from the
declared types, without spyne's objects.

spyne turns an answer into wire objects, then an lxml tree, then bytes; for a voucher of
ten entries that is ~1 ms of the gateway's time per call.  Here each declared message and
wire type (the ``@rpc``'s out message, ``types.py``) is compiled once into a list of its
elements, and an answer — as the operation returns it, complex values as dicts by wire
name — is written straight into text: the same elements in the same order, the same
value formats (``str`` of numbers and decimals, ISO dates, ``true``/``false``, base64),
optional empty values left out, text escaped as libxml2 escapes it.
``tests/test_gateway_answers.py`` holds the text against spyne's answers.
"""

from __future__ import annotations

import base64
import functools
import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from .. import compat  # noqa: F401  (before any spyne import)

from spyne.model import binary, primitive  # noqa: E402
from spyne.model.complex import Array, ComplexModelBase  # noqa: E402

from .streamed import FileContent  # noqa: E402
from .types import NAMESPACE  # noqa: E402

#: The prefix spyne's answers give the gateway namespace (declared on the Envelope).
PREFIX = "tns"
#: What libxml2 escapes in text content, and what it refuses (not XML characters).
_SPECIAL = re.compile("[&<>\r\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
#: Stands in for a streamed file's content (``FileContent``) in the written text.  The
#: writer of the answer splits the text at its last occurrence: a streamed file is the
#: answer's last element, so text of the other fields (a file name) cannot move the split.
CONTENT_MARK = "@@archive-oa-content@@"


def escape(text: str) -> str:
    """``text`` as element content, as lxml writes it."""
    if not _SPECIAL.search(text):
        return text
    if _NOT_XML.search(text):
        raise ValueError("All strings must be XML compatible: Unicode or ASCII, no NULL bytes or control characters")
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\r", "&#13;")


def _iso(value) -> str:
    return value.isoformat()


def _boolean(value) -> str:
    return str(bool(value)).lower()


def _base64(value) -> str:
    """spyne's ``ByteArray``: bytes, or a sequence of byte chunks (a streamed file's mark)."""
    if isinstance(value, FileContent):
        return CONTENT_MARK
    return base64.b64encode(value if isinstance(value, (bytes, bytearray)) else b"".join(value)).decode("ascii")


def _text_of(kind) -> Callable[[Any], str]:
    """How spyne's SOAP protocol writes a simple value (subclasses first: in spyne a Date
    is a DateTime and an Integer a Decimal)."""
    if issubclass(kind, binary.ByteArray):
        return _base64
    if issubclass(kind, primitive.Unicode):
        return str
    if issubclass(kind, primitive.Boolean):
        return _boolean
    if issubclass(kind, (primitive.Date, primitive.DateTime)):
        return _iso
    if issubclass(kind, primitive.Decimal):  # Integer and Long included
        return str
    raise TypeError(f"wire_text cannot write {kind!r}: add it, with a test against spyne's answer")


@dataclass(frozen=True)
class _Field:
    name: str
    open: str
    close: str
    empty: str
    required: bool  # min_occurs > 0: spyne would write xsi:nil for a missing value
    text: Callable[[Any], str] | None = None  # a simple value
    complex: type | None = None  # a nested wire type
    member: _Field | None = None  # an array's items


def _field(name: str, kind, namespace: str) -> _Field:
    attributes = kind.Attributes
    if (attributes.sub_ns or namespace) != NAMESPACE:
        raise TypeError(f"wire_text writes the gateway namespace only, not {attributes.sub_ns!r}")
    tag = f"{PREFIX}:{attributes.sub_name or name}"
    common = dict(name=name, open=f"<{tag}>", close=f"</{tag}>", empty=f"<{tag}/>",
                  required=attributes.min_occurs > 0)
    if issubclass(kind, Array):
        ((member_name, member_kind),) = kind._type_info.items()
        return _Field(**common, member=_field(member_name, member_kind, kind.get_namespace()))
    if issubclass(kind, ComplexModelBase):
        return _Field(**common, complex=kind)
    return _Field(**common, text=_text_of(kind))


@functools.cache
def _fields(cls) -> tuple[_Field, ...]:
    return tuple(_field(name, kind, cls.get_namespace()) for name, kind in cls._type_info.items())


def write(cls, fields: Mapping[str, Any], out: list[str]) -> None:
    """Append the elements of a ``cls`` value (its fields by wire name) to ``out``."""
    for field in _fields(cls):
        value = fields.get(field.name)
        if value is None:
            if field.required:  # the domain always fills these (Approval step and time)
                raise ValueError(f"{cls.__name__}.{field.name} is required on the wire but has no value")
            continue
        _write_value(field, value, out)


def _write_value(field: _Field, value, out: list[str]) -> None:
    if field.text is not None:
        out.append(f"{field.open}{escape(field.text(value))}{field.close}")
        return
    mark = len(out)
    out.append(field.open)
    if field.complex is not None:
        write(field.complex, value, out)
    else:
        for item in value:
            if item is None:  # spyne would write an xsi:nil item; the mapping never makes one
                raise ValueError(f"{field.name} holds a missing item")
            _write_value(field.member, item, out)
    if len(out) == mark + 1:  # no child: lxml writes an empty element self-closed
        out[mark] = field.empty
    else:
        out.append(field.close)


def response(message, result) -> str:
    """The response element of an operation whose declared out message is ``message``,
    holding ``result`` as the operation returns it: the one value, or a tuple in the
    message's field order."""
    fields = _fields(message)
    values = {fields[0].name: result} if len(fields) == 1 else dict(zip((f.name for f in fields), result))
    parts: list[str] = []
    write(message, values, parts)
    name = f"{PREFIX}:{message.get_type_name()}"
    if not parts:
        return f"<{name}/>"
    return f"<{name}>{''.join(parts)}</{name}>"
