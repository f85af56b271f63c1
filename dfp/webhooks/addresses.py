"""Where a callback_url may point: public addresses only, unless a network is allowed.

A callback is a request the server makes on a user's behalf, so a URL naming the loopback
interface, a private or link-local network (cloud metadata at 169.254.169.254, say) would let
any key holder reach services that trust the server's network position. Every address a host
name resolves to is checked, at submission and again before each delivery (DNS can change),
and the delivery connects to an address that was checked.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class RefusedCallbackError(ValueError):
    """A callback URL the server will not call, with the reason."""


def _embedded_ipv4(address: IPAddress) -> list[IPAddress]:
    """The IPv4 addresses an IPv6 address carries (mapped, 6to4, Teredo), if any."""
    if not isinstance(address, ipaddress.IPv6Address):
        return []
    embedded = [address.ipv4_mapped, address.sixtofour]
    if address.teredo is not None:
        embedded += list(address.teredo)
    return [a for a in embedded if a is not None]


def is_allowed(address: IPAddress, allowed: Sequence[IPNetwork] = ()) -> bool:
    """Public (globally routable, not multicast), or inside an explicitly allowed network."""
    candidates = [address, *_embedded_ipv4(address)]
    if any(any(a in network for network in allowed) for a in candidates):
        return True
    return all(a.is_global and not a.is_multicast for a in candidates)


def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address `host` resolves to (an IP literal resolves to itself)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise RefusedCallbackError(f"host '{host}' does not resolve ({exc})") from None
    # Scope ids ("fe80::1%eth0") are not part of the address.
    found = {ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos}
    return sorted(found, key=lambda a: (a.version, int(a)))


def check_callback_url(url: str, allowed: Sequence[IPNetwork] = ()) -> list[IPAddress]:
    """The checked addresses of `url`'s host; RefusedCallbackError says why a URL is not allowed."""
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"}:
        raise RefusedCallbackError(f"scheme '{parts.scheme}' is not allowed: use https or http")
    if parts.username is not None or parts.password is not None:
        raise RefusedCallbackError("must not contain credentials; the signature authenticates us")
    host = parts.hostname
    if not host:
        raise RefusedCallbackError("has no host")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise RefusedCallbackError("has an invalid port") from None
    addresses = resolve(host, port)
    refused = [a for a in addresses if not is_allowed(a, allowed)]
    if refused:
        shown = ", ".join(str(a) for a in refused)
        raise RefusedCallbackError(
            f"host '{host}' resolves to {shown}: loopback, private, link-local and other "
            "non-public addresses are refused (DFP_WEBHOOK_ALLOWED_NETWORKS allows networks)"
        )
    return addresses
