"""The schema check of a request, on both SOAP endpoints: what it forgives, and how a
refusal reads.

- Whitespace alone inside an element whose type has empty content (``<Ping>\\n</Ping>``,
  as gSOAP's sample requests and hand-indented SoapUI requests have it) is indentation:
  it is dropped before the check.  XSD allows no character content there at all, while
  whitespace between child elements was always allowed.
- A refusal names the missing required elements first, each once, in the fault's
  message and in one issue per element that lacks them.  libxml2 says "Missing child
  element(s). Expected is one of ( … )", listing at most ten names, optional ones first:
  the required ``page`` of ``QueryVouchers`` is not among them.

The element types are spyne's own wire classes (``types.py``), the source the WSDL and
the compiled schema are written from.
"""

from __future__ import annotations

from typing import Iterator

from .. import compat  # noqa: F401  (before any spyne import)

from lxml import etree  # noqa: E402
from spyne.model.complex import ComplexModelBase  # noqa: E402

from ..errors import Issue  # noqa: E402
from .faults import GatewayFault  # noqa: E402


def drop_indentation(element: etree._Element, cls) -> None:
    """Remove whitespace-only text from every element of ``element`` (the operation element,
    of wire class ``cls``) whose type has empty content and which holds no element."""
    for node, node_cls in _typed(element, cls):
        if _fields(node_cls) or any(isinstance(child.tag, str) for child in node):
            continue
        pieces = [node.text] + [child.tail for child in node]
        if all(piece is None or not piece.strip() for piece in pieces):
            node.text = None
            for child in node:
                child.tail = None


def refusal(errors: list[tuple[str, str, int | None]], element: etree._Element, cls,
            correlation_id: str) -> GatewayFault:
    """The ``Validation`` fault for the schema ``errors`` (path, message, line) of ``element``."""
    issues = [
        Issue(place=path or "/", rule="schema", message=text, line=line or None, source="request")
        for path, text, line in errors
    ]
    missing = _missing_required(element, cls)
    if not missing:
        return GatewayFault("Validation", f"the request does not match the WSDL: {issues[-1].message}",
                            correlation_id, issues)
    required = [
        Issue(place=_place(element, parent), rule="schema", message=_missing_text(names),
              line=parent.sourceline, source="request")
        for parent, _cls, names in missing
    ]
    # libxml2 reports one problem per element's content: "Missing child element(s)" at the
    # element, or a declared child "not expected" because a required one before it is
    # missing.  Both say what the issues above say, less clearly; an undeclared child
    # (a misspelt name) is a problem of its own and stays.
    covered = set()
    for parent, parent_cls, _names in missing:
        covered.add(_place(element, parent))
        fields = _fields(parent_cls)
        covered.update(_place(element, child) for child in parent
                       if isinstance(child.tag, str) and etree.QName(child).localname in fields)
    rest = [issue for issue in issues if issue.place not in covered]
    message = "; ".join(f"{_readable(element, parent)}: {issue.message}"
                        for (parent, _cls, _names), issue in zip(missing, required))
    if rest:
        message += f" ({len(rest)} more schema problem{'s' if len(rest) > 1 else ''} in the fault's issues)"
    return GatewayFault("Validation", message, correlation_id, required + rest)


def _missing_required(element: etree._Element, cls) -> list[tuple[etree._Element, type, list[str]]]:
    """Each element of the request that lacks required children: it, its wire class and
    their names."""
    missing = []
    for node, node_cls in _typed(element, cls):
        namespace = etree.QName(node).namespace
        present = {child.tag for child in node if isinstance(child.tag, str)}
        names = [name for name, field in _fields(node_cls).items()
                 if field.Attributes.min_occurs >= 1 and f"{{{namespace}}}{name}" not in present]
        if names:
            missing.append((node, node_cls, names))
    return missing


def _typed(element: etree._Element, cls) -> Iterator[tuple[etree._Element, type]]:
    """``element`` with its wire class, then every descendant of a declared complex type."""
    yield element, cls
    fields = _fields(cls)
    namespace = etree.QName(element).namespace
    for child in element:
        if not isinstance(child.tag, str):
            continue
        child_cls = fields.get(etree.QName(child).localname)
        if child_cls is not None and etree.QName(child).namespace == namespace and _is_complex(child_cls):
            yield from _typed(child, child_cls)


def _is_complex(cls) -> bool:
    return isinstance(cls, type) and issubclass(cls, ComplexModelBase)


def _fields(cls) -> dict:
    """The child elements a complex wire class declares, in order; none for a simple type."""
    return dict(cls.get_flat_type_info(cls)) if _is_complex(cls) else {}


def _missing_text(names: list[str]) -> str:
    if len(names) == 1:
        return f"required element {names[0]} is missing"
    return f"required elements {', '.join(names)} are missing"


def _place(element: etree._Element, node: etree._Element) -> str:
    """``node``'s path as libxml2 writes it when ``element`` is validated on its own
    (``/g:ArchiveDocument/g:attachments/g:attachment[2]``), so issues of one place match."""
    tree = element.getroottree()
    base = tree.getpath(element)
    return tree.getpath(node)[base.rfind("/"):]


def _readable(element: etree._Element, node: etree._Element) -> str:
    """``ArchiveDocument/attachments/attachment``: local names from the operation down."""
    names = [etree.QName(node).localname]
    while node is not element:
        node = node.getparent()
        names.append(etree.QName(node).localname)
    return "/".join(reversed(names))
