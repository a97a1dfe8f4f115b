"""Hardened XML parsing: the only way the adapter turns untrusted bytes into a tree.

Every protection is configured here on purpose rather than left to library defaults:

- **No DTD at all.**  The prolog is scanned before libxml2 sees the bytes; a
  ``<!DOCTYPE`` is refused there, so no entity (general or parameter, internal or
  external) is ever declared, expanded or fetched.  The parser is still configured
  with ``resolve_entities=False``, ``load_dtd=False`` and a resolver that refuses every
  lookup, and the parsed tree is checked for a DOCTYPE again — three layers, one design.
- **Only known encodings.**  UTF-8, GBK/GB2312/GB18030, Big5, ASCII and Latin-1 are read
  as bytes; UTF-16/UTF-32 (with a byte order mark) are transcoded to UTF-8 first.  Any
  other declared encoding (UTF-7, EBCDIC …) is refused, so the prolog scan cannot be
  dodged by an encoding it does not read.
- **No network, no XInclude.**  ``no_network=True``; XInclude is never processed and an
  ``xi:include`` element is refused outright.
- **Bounded trees.**  Nesting depth, the size of one text node and the number of
  attributes of one element are limited by ``XmlPolicy`` (``[security] max_depth``,
  ``max_text_bytes``, ``max_attributes``).  libxml2's own, lower "huge tree" limits are
  lifted (``huge_tree=True``) so that ours are the ones that apply and can be configured
  (a 16 MB base64 attachment is one text node); without a DTD there is nothing to expand,
  so the size of a tree is bounded by the size of its input.  libxml2 cannot enforce ours
  instead: its nesting cap (256, or 2048 for huge trees) is looser than ``max_depth`` and
  its 10,000,000-byte text cap would be tighter than ``max_text_bytes``.
- **SOAP message rules** (``XmlPolicy.soap_message``): processing instructions are refused
  (SOAP 1.1 §3) and ``xsi:schemaLocation`` hints are refused, since the gateway validates
  against its own WSDL only.  Documents (imported files, stylesheets) may carry both: PIs
  are dropped and location hints are never followed by any validator of ours.

Every refusal is a ``ValidationFailed`` whose issue names the rule and what to change.

The tree checks cost little on the common, harmless document: bounds the bytes prove
(every tag starts with ``<``, every attribute has an ``=``) and compiled XPaths that
libxml2 runs over the tree decide whether anything may break the policy; only then does
the exact walk run, which names the first offending place (see ``_check_tree``).
"""

from __future__ import annotations

import codecs
import functools
import re
from dataclasses import dataclass

from lxml import etree

from .errors import Issue, ValidationFailed

XINCLUDE_NAMESPACES = frozenset({"http://www.w3.org/2001/XInclude", "http://www.w3.org/2003/XInclude"})
XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"
_LOCATION_HINTS = (f"{{{XSI_NS}}}schemaLocation", f"{{{XSI_NS}}}noNamespaceSchemaLocation")
_XINCLUDE_TAGS = tuple(f"{{{namespace}}}*" for namespace in sorted(XINCLUDE_NAMESPACES))
#: A ``max_depth`` from here on gets no XPath of that many steps: the exact walk checks it.
_DEPTH_PROBE_LIMIT = 1024

#: Encodings whose markup characters are single ASCII bytes, so the prolog scan reads
#: them exactly (a GBK or Big5 trail byte is never below 0x40, i.e. never ``<``/``!``).
_BYTE_ENCODINGS = frozenset({"utf-8", "ascii", "latin-1", "iso8859-1", "gbk", "gb2312", "gb18030", "big5"})
_XML_DECLARATION = re.compile(rb"^<\?xml\s[^>]*?\?>")
_DECLARED_ENCODING = re.compile(rb"""\sencoding\s*=\s*["']([A-Za-z][A-Za-z0-9._-]*)["']""")
_NAME_START = re.compile(rb"[A-Za-z_:\x80-\xff]")
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),  # before UTF-16 LE: it starts with the same two bytes
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


@dataclass(frozen=True)
class XmlPolicy:
    """What a parse accepts.  Build it from ``[security]`` with ``documents``/``soap_message``."""

    max_depth: int = 64  # element nesting, the root being depth 1
    max_text_bytes: int = 16 * 1024 * 1024  # UTF-8 bytes of one text node
    max_attributes: int = 64  # attributes of one element
    refuse_processing_instructions: bool = False  # False: dropped while parsing
    refuse_location_hints: bool = False  # False: kept, but no validator of ours follows them

    @classmethod
    def documents(cls, security=None) -> "XmlPolicy":
        """Files and strings (imports, stylesheets, voucher documents)."""
        return cls(**_limits(security))

    @classmethod
    def soap_message(cls, security=None) -> "XmlPolicy":
        """A SOAP request: also no processing instructions and no schema location hints."""
        return cls(**_limits(security), refuse_processing_instructions=True, refuse_location_hints=True)


def _limits(security) -> dict:
    if security is None:
        return {}
    return dict(
        max_depth=security.max_depth, max_text_bytes=security.max_text_bytes, max_attributes=security.max_attributes
    )


DEFAULT_POLICY = XmlPolicy.documents()


class _RefuseResolver(etree.Resolver):
    """Answers every external lookup with an error, should one ever be attempted."""

    def resolve(self, url, pubid, context):  # noqa: ARG002 - lxml's signature
        raise ValidationFailed(
            f"external resource {url!r} refused: documents must be self-contained",
            [_issue(f"remove the reference to {url!r}; DTDs and external entities are not accepted",
                    "no-external", None, None)],
        )


def make_parser(policy: XmlPolicy = DEFAULT_POLICY) -> etree.XMLParser:
    """A fresh hardened parser (lxml parsers are not shareable across threads)."""
    parser = etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        attribute_defaults=False,
        huge_tree=True,  # our own limits apply instead, see the module docstring
        remove_comments=True,
        remove_pis=not policy.refuse_processing_instructions,
        strip_cdata=True,
        collect_ids=False,
    )
    parser.resolvers.add(_RefuseResolver())
    return parser


def _issue(message: str, rule: str, line: int | None, source: str | None, place: str = "/") -> Issue:
    return Issue(place=place, rule=rule, message=message, line=line, source=source)


def _refuse(name: str, summary: str, fix: str, rule: str, source: str | None, line=None, place="/"):
    raise ValidationFailed(f"{name}: {summary}", [_issue(fix, rule, line, source, place)])


def parse_bytes(
    data: bytes, *, source: str | None = None, policy: XmlPolicy = DEFAULT_POLICY
) -> etree._ElementTree:
    """Parse ``data`` into a tree under ``policy``; anything refused is ``ValidationFailed``.

    ``source`` (a file name or request part) is carried into the issues for the report.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError("parse_bytes takes bytes; encode text first so the declared encoding counts")
    data = bytes(data)
    name = source or "document"
    if not data.strip():
        _refuse(name, "is empty: an XML document was expected", "the document is empty; send an XML document",
                "xml-syntax", source)
    data = _as_byte_encoding(data, name, source)
    _check_prolog(data, name, source)
    try:
        tree = etree.ElementTree(etree.fromstring(data, make_parser(policy)))
    except ValidationFailed as exc:  # from _RefuseResolver: name the document
        raise ValidationFailed(
            f"{name}: {exc.message}",
            [_issue(issue.message, issue.rule, issue.line or 1, source) for issue in exc.issues],
        ) from None
    except etree.XMLSyntaxError as exc:
        line = exc.lineno or None
        message = exc.msg or str(exc)
        rule = "no-dtd" if "DOCTYPE" in message or "ENTITY" in message else "xml-syntax"
        raise ValidationFailed(
            f"{name} is not well-formed XML (line {line}): {message}",
            [_issue(f"{message}; fix the XML syntax", rule, line, source)],
        ) from exc
    docinfo = tree.docinfo
    if docinfo.doctype or docinfo.internalDTD is not None or docinfo.externalDTD is not None:
        _refuse(name, "has a DOCTYPE: DTDs and entities are refused",
                "remove the <!DOCTYPE …> declaration; DTDs and entities are not accepted", "no-dtd", source, 1)
    _check_tree(tree.getroot(), data, policy, name, source)
    return tree


def parse_text(text: str, *, source: str | None = None, policy: XmlPolicy = DEFAULT_POLICY) -> etree._ElementTree:
    """Parse a ``str`` (e.g. a SOAP string field): encoded to UTF-8 after dropping any
    XML declaration, whose encoding no longer applies to an already-decoded string."""
    stripped = text.lstrip("\ufeff \t\r\n")
    if stripped.startswith("<?xml"):
        end = stripped.find("?>")
        stripped = stripped[end + 2 :] if end != -1 else stripped
    return parse_bytes(stripped.encode("utf-8"), source=source, policy=policy)


# --- before the parser: encoding and prolog ------------------------------------------------


def declared_encoding(data: bytes) -> str | None:
    """The ``encoding`` of the XML declaration at the start of ``data`` (bytes in an
    ASCII-compatible encoding), or None."""
    start = data[3:] if data.startswith(codecs.BOM_UTF8) else data
    declaration = _XML_DECLARATION.match(start)
    if not declaration:
        return None
    found = _DECLARED_ENCODING.search(declaration.group(0))
    return found.group(1).decode("ascii") if found else None


def codec_name(label: str) -> str | None:
    """Python's canonical name of an encoding label (``UTF8`` → ``utf-8``), or None."""
    try:
        return codecs.lookup(label).name
    except LookupError:
        return None


def _as_byte_encoding(data: bytes, name: str, source: str | None) -> bytes:
    """``data`` in an encoding the prolog scan reads byte by byte: UTF-16/32 (known by
    their byte order mark) become UTF-8 without their declaration; other declared
    encodings must be on the list."""
    for bom, codec in _BOMS:
        if data.startswith(bom):
            try:
                text = data.decode(codec)
            except UnicodeDecodeError as exc:
                _refuse(name, f"is not valid {codec.upper()} (byte {exc.start})",
                        f"the bytes do not match the {codec.upper()} byte order mark; send valid {codec.upper()} "
                        "or UTF-8", "encoding", source)
            return _without_declaration(text.lstrip("\ufeff")).encode("utf-8")
    if data[:2] in (b"\x00<", b"<\x00") or data[:4] in (b"\x00\x00\x00<", b"<\x00\x00\x00"):
        _refuse(name, "is UTF-16/UTF-32 without a byte order mark",
                "start the document with a byte order mark, or send UTF-8", "encoding", source)
    label = declared_encoding(data)
    if label is not None and codec_name(label) not in _BYTE_ENCODINGS:
        _refuse(name, f"declares encoding {label!r}, which is not accepted",
                f"encoding {label!r} is not accepted: send UTF-8 (or GBK, GB18030, Big5, ASCII, ISO-8859-1, "
                "UTF-16 with a byte order mark)", "encoding", source, 1)
    return data


def _without_declaration(text: str) -> str:
    if text.startswith("<?xml") and text[5:6].isspace():
        end = text.find("?>")
        if end != -1:
            return text[end + 2 :]
    return text


def _check_prolog(data: bytes, name: str, source: str | None) -> None:
    """Walk the prolog (declaration, comments, PIs, white space) up to the root element;
    a DOCTYPE there is refused before any parser reads it.  Anything else that is not
    the root's start tag is left for the parser to report as malformed — except text
    that does not begin with ``<`` at all, which no parser may guess an encoding for."""
    pos = 3 if data.startswith(codecs.BOM_UTF8) else 0
    length = len(data)
    while True:
        while pos < length and data[pos] in b" \t\r\n":
            pos += 1
        if pos >= length:
            return  # only a prolog: the parser reports the missing root element
        if data[pos] != 0x3C:  # "<"
            _refuse(name, "does not start with markup: an XML document was expected",
                    "send an XML document (it starts with '<')", "xml-syntax", source, 1)
        if data.startswith(b"<?", pos):
            end = data.find(b"?>", pos + 2)
            if end == -1:
                return
            pos = end + 2
        elif data.startswith(b"<!--", pos):
            end = data.find(b"-->", pos + 4)
            if end == -1:
                return
            pos = end + 3
        elif data.startswith(b"<!", pos):
            line = data.count(b"\n", 0, pos) + 1
            _refuse(name, "has a DOCTYPE: DTDs and entities are refused",
                    "remove the <!DOCTYPE …> declaration; DTDs and entities are not accepted",
                    "no-dtd", source, line)
        else:
            return  # the root element (or something the parser will refuse)


# --- after the parser: the tree within its limits ----------------------------------------------


def _check_tree(root: etree._Element, data: bytes, policy: XmlPolicy, name: str, source: str | None) -> None:
    """Refuse a tree that breaks ``policy``.  ``_may_break`` decides cheaply whether anything
    can be wrong (it is never wrong about a tree that breaks the policy); only then does the
    Python walk run, which finds the first offending place in document order and words the
    refusal."""
    if _may_break(root, data, policy):
        _walk_tree(root, policy, name, source)


def _may_break(root: etree._Element, data: bytes, policy: XmlPolicy) -> bool:
    """False only when ``root`` (parsed from ``data``, UTF-8 or another byte encoding whose
    markup characters are single ASCII bytes) certainly keeps every rule of ``policy``."""
    probes = _probes(policy)
    # An XInclude element needs its namespace declared, spelled out or with character references.
    if (b"XInclude" in data or b"&#" in data) and next(root.iter(*_XINCLUDE_TAGS), None) is not None:
        return True
    # An element at depth d needs d start tags and d - 1 end tags, each starting with "<".
    if (data.count(b"<") + 1) // 2 > policy.max_depth and (probes.too_deep is None or probes.too_deep(root)):
        return True
    # Each attribute of an element is written with an "=" (no DTD supplies defaults).
    if data.count(b"=") > policy.max_attributes and probes.too_many_attributes(root):
        return True
    # A character takes at least one byte of the input and at most four bytes of UTF-8.
    if len(data) * 4 > policy.max_text_bytes and probes.long_text(root):
        return True
    if policy.refuse_processing_instructions and probes.processing_instruction(root):
        return True
    # Attribute names are literal bytes (no character references): "…chemaLocation" must be there.
    return policy.refuse_location_hints and b"chemaLocation" in data and probes.location_hint(root)


@dataclass(frozen=True)
class _Probes:
    """Compiled XPaths answering "may this tree break the policy?" inside libxml2."""

    too_deep: etree.XPath | None  # None: the limit is too deep for a path of that many steps
    too_many_attributes: etree.XPath
    long_text: etree.XPath
    processing_instruction: etree.XPath
    location_hint: etree.XPath


@functools.lru_cache(maxsize=16)
def _probes(policy: XmlPolicy) -> _Probes:
    too_deep = None
    if policy.max_depth < _DEPTH_PROBE_LIMIT:
        too_deep = etree.XPath("boolean(/" + "/".join(["*"] * (policy.max_depth + 1)) + ")")
    return _Probes(
        too_deep=too_deep,
        too_many_attributes=etree.XPath(f"boolean(//*[@*[{policy.max_attributes + 1}]])"),
        # ``len(text) * 4 > max_text_bytes`` is the walk's first test.  libxml2 merges adjacent
        # text while parsing; the second test keeps this sound should it ever not.
        long_text=etree.XPath(
            f"boolean(//text()[string-length() > {policy.max_text_bytes // 4}"
            " or following-sibling::node()[1][self::text()]])"
        ),
        processing_instruction=etree.XPath("boolean(//processing-instruction())"),
        location_hint=etree.XPath(
            "boolean(//@xsi:schemaLocation | //@xsi:noNamespaceSchemaLocation)", namespaces={"xsi": XSI_NS}
        ),
    )


def _walk_tree(root: etree._Element, policy: XmlPolicy, name: str, source: str | None) -> None:
    if policy.refuse_processing_instructions:
        siblings = (*root.itersiblings(preceding=True), *root.itersiblings())
        for node in (*siblings, *root.iter(etree.ProcessingInstruction)):
            if isinstance(node, etree._ProcessingInstruction):
                _refuse_pi(node, name, source)
    depth = 0
    for event, element in etree.iterwalk(root, events=("start", "end")):
        if event == "end":
            depth -= 1
            _check_text(element.tail, policy, name, source, element, "after")
            continue
        depth += 1
        if depth > policy.max_depth:
            _refuse(name, f"nests elements {depth} deep; at most {policy.max_depth} are allowed",
                    f"elements nest deeper than [security] max_depth = {policy.max_depth}; flatten the document",
                    "max-depth", source, element.sourceline, _path(element))
        if len(element.attrib) > policy.max_attributes:
            _refuse(name, f"has an element with {len(element.attrib)} attributes; at most "
                          f"{policy.max_attributes} are allowed",
                    f"{len(element.attrib)} attributes exceed [security] max_attributes = {policy.max_attributes}",
                    "max-attributes", source, element.sourceline, _path(element))
        namespace = etree.QName(element).namespace
        if namespace in XINCLUDE_NAMESPACES:
            _refuse(name, "uses XInclude, which is not processed", "remove the xi:include element: documents "
                    "must be self-contained", "no-xinclude", source, element.sourceline, _path(element))
        if policy.refuse_location_hints:
            for hint in _LOCATION_HINTS:
                if hint in element.attrib:
                    local = etree.QName(hint).localname
                    _refuse(name, f"carries xsi:{local}, which is not accepted",
                            f"remove xsi:{local}: requests are validated against the service's WSDL only",
                            "no-schema-location", source, element.sourceline, _path(element))
        _check_text(element.text, policy, name, source, element, "in")


def _check_text(text, policy: XmlPolicy, name, source, element, where: str) -> None:
    # A character is at most 4 UTF-8 bytes: encode only text that might be too long.
    if not text or len(text) * 4 <= policy.max_text_bytes:
        return
    size = len(text.encode("utf-8"))
    if size > policy.max_text_bytes:
        _refuse(name, f"has a text node of {size} bytes; at most {policy.max_text_bytes} are allowed",
                f"text {where} this element is {size} bytes, above [security] max_text_bytes = "
                f"{policy.max_text_bytes}; send smaller content",
                "max-text-bytes", source, element.sourceline, _path(element))


def _refuse_pi(node, name: str, source: str | None) -> None:
    _refuse(name, f"contains the processing instruction <?{node.target} …?>, which is not accepted",
            f"remove <?{node.target} …?>: a SOAP message must not contain processing instructions",
            "no-processing-instruction", source, node.sourceline)


def _path(element: etree._Element) -> str:
    steps = []
    node = element
    while node is not None and len(steps) < 12:
        steps.append(etree.QName(node).localname if isinstance(node.tag, str) else "?")
        node = node.getparent()
    prefix = "/…" if node is not None else ""
    return prefix + "/" + "/".join(reversed(steps))
