"""What differs between SOAP 1.1 and SOAP 1.2 on the gateway, as data.

One ``SoapEndpoint`` serves both versions (``endpoint.py``); everything that differs —
where it is served, the envelope namespace, the content type, spyne's protocol (which
checks and reads a request and names the WSDL binding), the HTTP status of a fault,
what a caller of the other version is told — is one ``SoapVersion`` value here, the way
zeep has its ``Soap11Binding`` and ``Soap12Binding``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .faults import SOAP11_ENV, SOAP12_ENV, GatewayFault, soap12_status
from .protocol import GatewaySoap11, GatewaySoap12
from .types import NAMESPACE

SOAP11_PATH = "/soap/archive"
SOAP12_PATH = "/soap12/archive"


@dataclass(frozen=True, eq=False)  # compared and hashed by identity: there are two
class SoapVersion:
    name: str  # "SOAP 1.1", in what a caller is told
    path: str  # where the gateway serves it (and its WSDL, at ``?wsdl``)
    envelope_ns: str
    media_type: str  # of requests and answers
    protocol: type  # the gateway's spyne protocol for this version
    #: the envelope prefix of the answers (``answers.py``), spyne's as it always was
    answer_prefix: str
    #: the namespace declarations of the fault envelopes written before a request is read
    intake_nsmap: dict
    #: the charset label in Content-Type: 1.1 has always answered ``charset=gbk``, 1.2 ``charset=GBK``
    charset_label: Callable[[str], str]
    http_status: Callable[[GatewayFault], str]
    #: a media type refused here, with what to do instead (SOAP 1.2's on the 1.1 endpoint)
    refused_media_type: tuple[str, str] | None
    #: what a caller who sent the other version's envelope is told
    foreign_envelope_message: str
    #: whether that caller is answered in its own version (SOAP 1.2 part 1, appendix A:
    #: a SOAP 1.1 sender can only read a SOAP 1.1 fault)
    foreign_fault_in_sender_version: bool
    #: binding and port name in the WSDL (None: spyne's, named after the service)
    binding_name: str | None

    def content_type(self, charset: str, media_type: str | None = None) -> str:
        return f"{media_type or self.media_type}; charset={self.charset_label(charset)}"

    @property
    def envelope_tag(self) -> str:
        return f"{{{self.envelope_ns}}}Envelope"


SOAP11 = SoapVersion(
    name="SOAP 1.1", path=SOAP11_PATH, envelope_ns=SOAP11_ENV, media_type="text/xml",
    protocol=GatewaySoap11, answer_prefix="soap11env", intake_nsmap={"soap": SOAP11_ENV},
    charset_label=str.lower, http_status=lambda fault: fault.http_status,
    refused_media_type=("application/soap+xml",
                        f"SOAP 1.2 is served at {SOAP12_PATH}: send SOAP 1.1 here with Content-Type text/xml"),
    foreign_envelope_message=(f"SOAP 1.2 envelope received: send a SOAP 1.1 envelope ({SOAP11_ENV}) here, "
                              f"or SOAP 1.2 to {SOAP12_PATH}"),
    foreign_fault_in_sender_version=False, binding_name=None,
)

SOAP12 = SoapVersion(
    name="SOAP 1.2", path=SOAP12_PATH, envelope_ns=SOAP12_ENV, media_type="application/soap+xml",
    protocol=GatewaySoap12, answer_prefix="soap12env", intake_nsmap={"soap": SOAP12_ENV, "g": NAMESPACE},
    charset_label=str, http_status=soap12_status,
    refused_media_type=None,
    foreign_envelope_message=(f"SOAP 1.1 envelope received on the SOAP 1.2 endpoint: POST it to {SOAP11_PATH}, "
                              f"or send a SOAP 1.2 envelope ({SOAP12_ENV})"),
    foreign_fault_in_sender_version=True, binding_name="ArchiveGatewaySoap12",
)

#: each version's counterpart: whose envelope arriving here is "the other version's"
OTHER = {SOAP11: SOAP12, SOAP12: SOAP11}
