"""Finishing touches on spyne's WSDL that client generators depend on (docs/wsdl-shape.md).

spyne declares every namespace it knows on ``wsdl:definitions`` — SOAP 1.2 envelope,
encoding and binding namespaces included — whether the document uses them or not.  A
SOAP 1.1 WSDL that declares ``http://schemas.xmlsoap.org/wsdl/soap12/`` makes some
tools (SoapUI's interface wizard, .NET's svcutil, older wsimport plug-ins) look for a
SOAP 1.2 binding or offer one, so the declarations nobody uses are dropped.  Operation
documentation (the service's bilingual docstrings) loses its source indentation, so
SoapUI and generated Javadoc/PHPDoc show it as written.
"""

from __future__ import annotations

import re

from lxml import etree

WSDL_NS = "http://schemas.xmlsoap.org/wsdl/"
_QNAME_VALUE = re.compile(r"^([A-Za-z_][\w.-]*):[A-Za-z_]")


def tidy(root: etree._Element) -> None:
    """Prune unused namespace declarations and normalise documentation, in place."""
    normalise_documentation(root)
    prune_namespaces(root)


def prune_namespaces(root: etree._Element) -> None:
    """Drop namespace declarations used neither by a name nor by a QName-valued attribute
    (``type="tns:Voucher"``, ``message="tns:GetVoucher"`` …), which lxml cannot see."""
    used_in_values = set()
    for element in root.iter():
        if not isinstance(element.tag, str):
            continue
        for value in element.attrib.values():
            match = _QNAME_VALUE.match(value)
            if match:
                used_in_values.add(match.group(1))
    etree.cleanup_namespaces(root, keep_ns_prefixes=sorted(used_in_values & set(root.nsmap)))


def normalise_documentation(root: etree._Element) -> None:
    """One line per paragraph: source indentation and line wraps of docstrings removed."""
    for doc in root.iter(f"{{{WSDL_NS}}}documentation"):
        if doc.text:
            doc.text = " ".join(doc.text.split())
