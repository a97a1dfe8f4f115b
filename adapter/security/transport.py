"""Who the client is, and whether a clear-text password may travel on its connection.

Behind a reverse proxy that terminates TLS, the TCP peer is the proxy: only then are
``X-Forwarded-For`` and ``X-Forwarded-Proto`` believed, and only when the peer is
listed in ``[security] trusted_proxies`` (addresses or networks, comma-separated).
Anyone else could write those headers.  ``X-Forwarded-For`` is read from the right:
the first address that is not a trusted proxy is the client.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any, Mapping

from ..errors import ConfigurationError

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Origin:
    """Where a request comes from, as far as it can be believed."""

    address: str  # the client: the TCP peer, or the forwarded client behind trusted proxies
    secure: bool  # TLS up to us, or up to a trusted proxy that said so
    forwarded_untrusted: bool = False  # forwarding headers from a peer we do not trust

    @property
    def loopback(self) -> bool:
        """The client is on this host, and nothing says it only relays someone else."""
        return _is_loopback(self.address) and not self.forwarded_untrusted


#: What a caller without a WSGI environ (unit tests, in-process use) is taken to be.
LOCAL = Origin("127.0.0.1", secure=False)


class ProxyPolicy:
    def __init__(self, trusted_proxies: str = "") -> None:
        self.networks: tuple[_Network, ...] = tuple(_networks(trusted_proxies))

    def trusts(self, address: str) -> bool:
        ip = _ip(address)
        return ip is not None and any(ip in network for network in self.networks)

    def origin(self, environ: Mapping[str, Any]) -> Origin:
        peer = (environ.get("REMOTE_ADDR") or "").strip() or "unknown"
        secure = str(environ.get("wsgi.url_scheme", "http")).lower() == "https"
        forwarded_for = environ.get("HTTP_X_FORWARDED_FOR") or ""
        forwarded_proto = environ.get("HTTP_X_FORWARDED_PROTO") or ""
        if not self.trusts(peer):
            return Origin(peer, secure, forwarded_untrusted=bool(forwarded_for or forwarded_proto))
        client = peer
        for hop in reversed([part.strip() for part in forwarded_for.split(",") if part.strip()]):
            client = hop
            if not self.trusts(hop):
                break
        if _ip(client) is None:  # garbage in the header: fall back to what we know
            client = peer
        # The proxy nearest to us wrote the last value; earlier ones came from further away.
        protocols = [part.strip().lower() for part in forwarded_proto.split(",") if part.strip()]
        if protocols:
            secure = protocols[-1] == "https"
        return Origin(client, secure)


def plaintext_allowed(origin: Origin, *, allow_plaintext_http: bool) -> bool:
    """May a password travel in clear text (HTTP Basic, UsernameToken PasswordText)?

    Over TLS always; over plain HTTP only from this host, or when configured.
    """
    return origin.secure or origin.loopback or allow_plaintext_http


def _networks(text: str):
    for entry in (part.strip() for part in (text or "").split(",")):
        if not entry:
            continue
        try:
            yield ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise ConfigurationError(
                f"security.trusted_proxies entry {entry!r} is not an IP address or network: list the "
                "reverse proxies' addresses, e.g. '10.0.0.5, 192.168.1.0/24'"
            ) from None


def _ip(text: str):
    value = text.strip()
    if value.startswith("[") and "]" in value:  # [v6]:port
        value = value[1 : value.index("]")]
    elif value.count(":") == 1:  # v4:port
        value = value.split(":")[0]
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        return None


def _is_loopback(address: str) -> bool:
    ip = _ip(address)
    if ip is None:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return (mapped or ip).is_loopback
