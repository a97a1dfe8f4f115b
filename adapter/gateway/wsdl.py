"""The WSDL the gateway serves at ``<endpoint>?wsdl``, one per SOAP version.

spyne writes it from the service; here it gets its address, a stable order and — for
SOAP 1.2 — its own binding name, so that it equals the checked-in ``wsdl/*.wsdl`` byte
for byte once the address is normalised.
"""

from __future__ import annotations

from .. import compat  # noqa: F401  (before any spyne import)

from lxml import etree  # noqa: E402
from spyne.interface.wsdl import Wsdl11  # noqa: E402
from spyne.server.wsgi import WsgiApplication  # noqa: E402

from .. import safexml  # noqa: E402
from . import wsdl_shape  # noqa: E402
from .protocol import build_application  # noqa: E402
from .soap import SoapVersion  # noqa: E402

_WSDL_NS = "http://schemas.xmlsoap.org/wsdl/"


def generate_wsdl(public_url: str, version: SoapVersion) -> bytes:
    """The WSDL of ``version`` with its address = ``<public_url><version.path>``."""
    app = build_application(version.protocol)
    WsgiApplication(app)  # sets app.transport, which the WSDL's binding names
    wsdl = Wsdl11(app.interface)
    wsdl.build_interface_document(public_url.rstrip("/") + version.path)
    root = safexml.parse_bytes(wsdl.get_interface_document(), source="generated WSDL").getroot()
    if version.binding_name:
        _rename_binding(root, version.binding_name)
    return _stable_document(root)


def _rename_binding(root: etree._Element, name: str) -> None:
    """spyne names binding and port after the service, as in the SOAP 1.1 WSDL; renamed
    (``ArchiveGatewaySoap12``), SoapUI, wsimport and svcutil show which one they use."""
    for binding in root.iter(f"{{{_WSDL_NS}}}binding"):
        binding.set("name", name)
    for port in root.iter(f"{{{_WSDL_NS}}}port"):
        port.set("name", name)
        port.set("binding", f"tns:{name}")


def _stable_document(root: etree._Element) -> bytes:
    """spyne emits schema declarations in hash order; sorted by kind and name they are
    the same on every run (their order has no meaning in XSD), so the checked-in WSDL
    can be compared byte for byte.  Pretty-printed UTF-8 keeps 中文 readable."""
    wsdl_shape.tidy(root)
    for schema in root.iter("{http://www.w3.org/2001/XMLSchema}schema"):
        declarations = sorted(schema, key=lambda e: (etree.QName(e).localname, e.get("name") or ""))
        for child in declarations:
            schema.remove(child)
        imports = [e for e in declarations if etree.QName(e).localname == "import"]
        for child in imports + [e for e in declarations if e not in imports]:
            schema.append(child)
    etree.indent(root, space="  ")
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)
