"""Where a webhook may be delivered: public addresses only, unless an admin allow-lists one.

A URL's host is resolved once (:func:`resolve`) and every address it gives must be public
(``ipaddress``'s ``is_global``, and not multicast, reserved or unspecified), judged on the
IPv4 address inside IPv4-mapped, IPv4-compatible, 6to4, Teredo and NAT64 forms as well as on
the outer one. The delivery then connects to exactly the address checked (no second look-up
a DNS rebinding could answer differently).

``LLMSPEND_WEBHOOK_ALLOW`` (solo mode; the gateway's configuration in team mode) lists hosts
and addresses or CIDR blocks, separated by commas or spaces, that are allowed although not
public, e.g. ``127.0.0.1, hooks.internal, 10.20.0.0/16``. A listed host name is allowed
whatever it resolves to.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Iterable

from ..errors import DestinationRefused

__all__ = [
    "DestinationRefused",
    "allow_list",
    "check_destination",
    "is_public",
    "resolve",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_NAT64 = (ipaddress.IPv6Network("64:ff9b::/96"), ipaddress.IPv6Network("64:ff9b:1::/48"))
_COMPAT = ipaddress.IPv6Network("::/96")  # deprecated IPv4-compatible ::a.b.c.d


def resolve(host: str, port: int) -> list[str]:
    """The addresses ``host`` resolves to (the one look-up a delivery makes)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    seen: list[str] = []
    for info in infos:
        addr = str(info[4][0]).split("%", 1)[0]
        if addr not in seen:
            seen.append(addr)
    return seen


def _embedded(ip: IPAddress) -> list[ipaddress.IPv4Address]:
    """IPv4 addresses an IPv6 address carries (mapped, compatible, 6to4, Teredo, NAT64)."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return []
    out: list[ipaddress.IPv4Address] = []
    if ip.ipv4_mapped is not None:
        out.append(ip.ipv4_mapped)
    if ip.sixtofour is not None:
        out.append(ip.sixtofour)
    if ip.teredo is not None:
        out.extend(ip.teredo)
    if any(ip in net for net in (*_NAT64, _COMPAT)):
        out.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return out


def _public_one(ip: IPAddress) -> bool:
    return ip.is_global and not (
        ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_private
        or (isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local)
    )


def is_public(address: str | IPAddress) -> bool:
    """True if ``address`` and every IPv4 address embedded in it are public unicast."""
    ip = ipaddress.ip_address(address) if isinstance(address, str) else address
    inner = _embedded(ip)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return _public_one(ip.ipv4_mapped)  # ::ffff:a.b.c.d is the IPv4 address itself
    return _public_one(ip) and all(_public_one(v4) for v4 in inner)


def allow_list(text: str | None = None) -> tuple[frozenset[str], tuple[Network, ...]]:
    """(host names, networks) allowed although not public, from ``LLMSPEND_WEBHOOK_ALLOW``."""
    raw = os.environ.get("LLMSPEND_WEBHOOK_ALLOW", "") if text is None else text
    names: set[str] = set()
    nets: list[Network] = []
    for item in raw.replace(",", " ").split():
        try:
            nets.append(ipaddress.ip_network(item.strip("[]"), strict=False))
        except ValueError:
            names.add(item.lower().rstrip("."))
    return frozenset(names), tuple(nets)


def _listed(ip: IPAddress, nets: Iterable[Network]) -> bool:
    candidates = [ip, *_embedded(ip)]
    return any(c.version == n.version and c in n for c in candidates for n in nets)


_REFUSED = "refused: destination not allowed"


def check_destination(host: str, port: int, allow: str | None = None) -> list[str]:
    """The addresses a delivery to ``host`` may connect to; ``DestinationRefused`` if none.

    Every address the host resolves to must pass (a name with one private address among
    public ones is refused): public, or inside an allow-listed network, or the host name
    itself allow-listed. The message is the same whatever the host, port or address, a name
    that does not resolve included (unless the admin listed it), so the deliveries table
    tells nothing about the network behind it.
    """
    names, nets = allow_list(allow)
    name = host.lower().rstrip(".")
    try:
        literal: IPAddress | None = ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        literal = None
    if literal is not None:
        addresses = [str(literal)]
    else:
        try:
            addresses = resolve(name, port)
        except (OSError, UnicodeError):
            addresses = []
        if not addresses:  # said plainly only of a name the admin listed: no DNS oracle
            raise DestinationRefused(
                "refused: the host did not resolve" if name in names else _REFUSED
            ) from None
    if name in names:
        return addresses
    for addr in addresses:
        ip = ipaddress.ip_address(addr)
        if not (is_public(ip) or _listed(ip, nets)):
            raise DestinationRefused(_REFUSED)
    return addresses
