"""Finishing touches on spyne's WSDL that client generators depend on (docs/wsdl-shape.md).

- **Unused namespaces.**  spyne declares every namespace it knows on ``wsdl:definitions``
  — SOAP 1.2 envelope, encoding and binding namespaces included — whether the document
  uses them or not.  A SOAP 1.1 WSDL declaring ``http://schemas.xmlsoap.org/wsdl/soap12/``
  makes tools look for or offer a SOAP 1.2 binding, so unused declarations are dropped.
- **Optional means absent, never nil.**  spyne marks every optional element
  ``minOccurs="0" nillable="true"`` but never sends ``xsi:nil`` for one (a ``None`` is
  left out).  ``nillable`` makes JAXB (wsimport) wrap each such property in
  ``JAXBElement<T>`` with an ObjectFactory method, and those collide with spyne's global
  elements ("Two declarations cause a collision in the ObjectFactory class"), so the
  published WSDL says only ``minOccurs="0"``.  spyne validates requests against its own
  schema, which still accepts a client's ``xsi:nil``.
- **Only the global elements messages use.**  spyne declares a global element for every
  type; the operations' wrappers and the fault detail are the only ones a message names.
  The others would each become an ObjectFactory method and a possible name clash.
- **Documentation** (the service's bilingual docstrings) loses its source indentation, so
  SoapUI and generated Javadoc show it as written.
"""

from __future__ import annotations

import re

from lxml import etree

WSDL_NS = "http://schemas.xmlsoap.org/wsdl/"
XSD_NS = "http://www.w3.org/2001/XMLSchema"
_QNAME_VALUE = re.compile(r"^([A-Za-z_][\w.-]*):[A-Za-z_]")


def tidy(root: etree._Element) -> None:
    """All of the above, in place."""
    normalise_documentation(root)
    optional_without_nil(root)
    prune_unused_elements(root)
    prune_namespaces(root)


def optional_without_nil(root: etree._Element) -> None:
    """``nillable`` dropped from every element that may be left out (``minOccurs="0"``)."""
    for element in root.iter(f"{{{XSD_NS}}}element"):
        if element.get("minOccurs") == "0" and element.get("nillable") == "true":
            del element.attrib["nillable"]


def prune_unused_elements(root: etree._Element) -> None:
    """Global element declarations that no ``wsdl:part`` names are removed."""
    used = {part.get("element").rpartition(":")[2] for part in root.iter(f"{{{WSDL_NS}}}part") if part.get("element")}
    for schema in root.iter(f"{{{XSD_NS}}}schema"):
        for element in schema.findall(f"{{{XSD_NS}}}element"):
            if element.get("name") not in used:
                schema.remove(element)


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
