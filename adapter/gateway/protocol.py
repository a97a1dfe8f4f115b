"""The gateway's spyne protocols and ``Application``, one per SOAP version.

spyne no longer writes any answer (``answers.py`` does, for every operation); what it
still does: check an operation element against the schema, read its arguments
(``from_element``) and describe the service in the WSDL.  What the gateway changes in
that, for both versions alike:

- the schema check forgives indentation in empty elements and reports every failing
  place, the missing required elements first (``schema_check``);
- base64 is decoded without spyne's character-by-character copy.
"""

from __future__ import annotations

import binascii
import logging
import threading

from .. import compat  # noqa: F401  (before any spyne import)

from spyne import Application  # noqa: E402
from spyne.model.binary import BINARY_ENCODING_BASE64, BINARY_ENCODING_USE_DEFAULT  # noqa: E402
from spyne.protocol.soap import Soap11, Soap12  # noqa: E402

from ..services.call_audit import record_rejected_request  # noqa: E402
from ..wsgi_keys import OPERATION_KEY, STARTED_KEY  # noqa: E402
from . import schema_check  # noqa: E402
from .faults import GatewayFault  # noqa: E402
from .service import GatewayService  # noqa: E402
from .types import NAMESPACE  # noqa: E402

log = logging.getLogger(__name__)

#: spyne's logger that writes a whole value it could not read (``%r in string %r``): a
#: body may be 20 MB, binary, or carry a UsernameToken password, so it is kept quiet.
_SPYNE_BODY_LOGGERS = ("spyne.protocol.xml.invalid",)


class _GatewayProtocol:
    """What both SOAP versions' protocols add to spyne's (mixed in before the version's class)."""

    #: One compiled schema serves every thread, and its ``error_log`` is shared state:
    #: validate and read the log under a lock so requests never see each other's errors.
    _validation_lock = threading.Lock()

    def check(self, element, correlation_id: str) -> None:
        """The schema check of an operation element, its forgiven indentation dropped first;
        a refusal is raised as the ``Validation`` fault (``schema_check.refusal``)."""
        schema = self.validation_schema
        if schema is None:
            return
        cls = self._prepare(element)
        with self._validation_lock:
            if schema.validate(element):
                return
            errors = [(e.path, e.message, e.line) for e in schema.error_log]
        raise schema_check.refusal(errors, element, cls, correlation_id)

    def _prepare(self, element):
        """The wire class of the operation ``element`` calls (``None`` if unknown), with
        the element's forgiven indentation dropped."""
        descriptors = self.app.interface.service_method_map.get(element.tag)
        if not descriptors:
            return None
        cls = descriptors[0].in_message
        schema_check.drop_indentation(element, cls)
        return cls

    def byte_array_from_element(self, ctx, cls, element):
        """An ``xs:base64Binary`` argument (an ArchiveDocument's file) decoded from its text
        at once.  spyne's ``ByteArray.from_base64`` first joins the text character by
        character, ``"".join(text)``: a list of one pointer a character, 16 MB alive for a
        2 MB file's text; the joined text is the text itself, so the bytes are the same."""
        text = element.text
        encoding = self.get_cls_attrs(cls).encoding
        if text and text.isascii() and encoding in (BINARY_ENCODING_USE_DEFAULT, BINARY_ENCODING_BASE64) \
                and self.binary_encoding == BINARY_ENCODING_BASE64:
            # ``b64decode`` would copy the text to bytes first; ``a2b_base64`` reads it in place
            return (binascii.a2b_base64(text),)  # spyne's value: a sequence of byte chunks
        return super().byte_array_from_element(ctx, cls, element)


class GatewaySoap11(_GatewayProtocol, Soap11):
    """SOAP 1.1 as the gateway speaks it."""


class GatewaySoap12(_GatewayProtocol, Soap12):
    """SOAP 1.2 as the gateway speaks it."""


def build_application(protocol: type) -> Application:
    """The spyne ``Application`` of one SOAP version (``protocol``): the gateway's service,
    its requests checked against the schema.  Its out protocol only names the answers'
    binding in the WSDL: spyne writes no answer."""
    app = Application(
        [GatewayService],
        tns=NAMESPACE,
        name="ArchiveGateway",
        in_protocol=protocol(validator="lxml"),  # builds the schema ``check`` validates against
        out_protocol=protocol(),
    )
    for name in _SPYNE_BODY_LOGGERS:
        logging.getLogger(name).setLevel(logging.CRITICAL)
    return app


def record_refusal(services, environ, fault: GatewayFault, stage: str) -> None:
    """One log line and one audit record for a request refused before any operation ran."""
    rule = fault.issues[0].rule if fault.issues else None
    log.info("request refused at %s [%s]: %s", stage, fault.correlation_id, _clip(fault.faultstring))
    details = {"stage": stage, **({"rule": rule} if rule else {})}
    record_rejected_request(
        services.store, environ=environ, code=fault.gateway_code, correlation_id=fault.correlation_id,
        operation=environ.get(OPERATION_KEY), started=environ.get(STARTED_KEY), details=details,
    )


def _clip(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
