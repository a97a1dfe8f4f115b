"""A one-XPath pre-check compiled from the same Schematron file as the full rules.

The ISO Schematron validator (an XSLT writing an SVRL report) costs more than the XSD
check and the mapping together.  Almost every document passes, so the hot path asks one
compiled XPath whether any assert fails anywhere; only if it says yes does the full
Schematron run, and its report decides and names the places.

The pre-check is never looser than Schematron: it tests every assert of every rule on
every node the rule's context matches, while Schematron fires only the first matching
rule of a pattern.  Files using features this translation cannot express faithfully
(``let`` variables, abstract rules and patterns, ``current()``, phases) get no pre-check
and always run the full validator.
"""

from __future__ import annotations

from lxml import etree

_SCH = "http://purl.oclc.org/dsdl/schematron"
_UNSUPPORTED = ("let", "extends", "param", "include", "phase")


def compile_precheck(
    schematron: etree._ElementTree | etree._Element, extensions: dict | None = None
) -> etree.XPath | None:
    """An XPath returning true when some assert fails, or None when it cannot be built.

    ``extensions`` are the XPath functions the rules call, as given to their XSLT.
    """
    root = schematron.getroot() if isinstance(schematron, etree._ElementTree) else schematron
    ns = {"sch": _SCH}
    if any(root.iter(*(f"{{{_SCH}}}{name}" for name in _UNSUPPORTED))):
        return None
    namespaces = {node.get("prefix"): node.get("uri") for node in root.iterfind("sch:ns", ns)}
    failing = []
    for pattern in root.iterfind("sch:pattern", ns):
        if pattern.get("abstract") == "true" or pattern.get("is-a"):
            return None
        for rule in pattern.iterfind("sch:rule", ns):
            context = rule.get("context")
            if rule.get("abstract") == "true" or not context:
                return None
            nodes = "(" + " | ".join(_select(part) for part in context.split("|")) + ")"
            for check in rule:
                test = check.get("test")
                if test is None or "current()" in test:
                    if check.tag in (f"{{{_SCH}}}assert", f"{{{_SCH}}}report"):
                        return None
                    continue
                if check.tag == f"{{{_SCH}}}assert":
                    failing.append(f"{nodes}[not({test})]")
                elif check.tag == f"{{{_SCH}}}report":
                    failing.append(f"{nodes}[{test}]")
    if not failing:
        return None
    try:
        return etree.XPath("boolean(" + " | ".join(failing) + ")", namespaces=namespaces, extensions=extensions)
    except etree.XPathSyntaxError:
        return None


def _select(pattern: str) -> str:
    """An XSLT match pattern as the select expression of the nodes it matches."""
    pattern = pattern.strip()
    return pattern if pattern.startswith("/") else "//" + pattern
