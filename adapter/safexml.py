"""Hardened XML parsing: the only way the adapter turns untrusted bytes into a tree.

No DTD (a DOCTYPE is refused outright, so no entity can be declared, expanded or fetched),
no external resolution, no network, no XInclude, no huge-tree mode (libxml2's own depth
and text-size limits stay on).  Every failure is a ``ValidationFailed`` naming the line.
"""

from __future__ import annotations

from lxml import etree

from .errors import Issue, ValidationFailed

#: Refuses what an attacker could use: DTDs, entities, external fetches, huge trees.
#: ``remove_comments`` / ``remove_pis`` keep canonical hashing independent of them.
_PARSER_OPTIONS = dict(
    resolve_entities=False,
    no_network=True,
    load_dtd=False,
    dtd_validation=False,
    huge_tree=False,
    remove_comments=True,
    remove_pis=True,
    strip_cdata=True,
    collect_ids=False,
)


class _RefuseResolver(etree.Resolver):
    """Answers every external lookup with an error, should one ever be attempted."""

    def resolve(self, url, pubid, context):  # noqa: ARG002 - lxml's signature
        raise ValidationFailed(
            f"external resource {url!r} refused: documents must be self-contained",
            [_issue(f"remove the reference to {url!r}; DTDs and external entities are not accepted",
                    "no-dtd", None, None)],
        )


def make_parser() -> etree.XMLParser:
    """A fresh hardened parser (lxml parsers are not shareable across threads)."""
    parser = etree.XMLParser(**_PARSER_OPTIONS)
    parser.resolvers.add(_RefuseResolver())
    return parser


def _issue(message: str, rule: str, line: int | None, source: str | None) -> Issue:
    return Issue(place="/", rule=rule, message=message, line=line, source=source)


def parse_bytes(data: bytes, *, source: str | None = None) -> etree._ElementTree:
    """Parse ``data`` into a tree, refusing DTDs, entities and malformed XML.

    ``source`` (a file name or request part) is carried into the issues for the report.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError("parse_bytes takes bytes; encode text first so the declared encoding counts")
    data = bytes(data)
    name = source or "document"
    if not data.strip():
        raise ValidationFailed(
            f"{name} is empty: an XML document was expected",
            [_issue("the document is empty; send an XML document", "xml-syntax", None, source)],
        )
    try:
        tree = etree.ElementTree(etree.fromstring(data, make_parser()))
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
        raise ValidationFailed(
            f"{name} has a DOCTYPE: DTDs and entities are refused",
            [_issue("remove the <!DOCTYPE …> declaration; DTDs and entities are not accepted",
                    "no-dtd", 1, source)],
        )
    return tree


def parse_text(text: str, *, source: str | None = None) -> etree._ElementTree:
    """Parse a ``str`` (e.g. a SOAP string field): encoded to UTF-8 after dropping any
    XML declaration, whose encoding no longer applies to an already-decoded string."""
    stripped = text.lstrip("\ufeff \t\r\n")
    if stripped.startswith("<?xml"):
        end = stripped.find("?>")
        stripped = stripped[end + 2 :] if end != -1 else stripped
    return parse_bytes(stripped.encode("utf-8"), source=source)
