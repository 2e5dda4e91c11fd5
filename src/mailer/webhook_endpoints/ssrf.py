"""The SSRF guard: webhook URLs must not reach this network's own services.

An address is refused when it is loopback, private, link-local, multicast, reserved,
unspecified, or a cloud metadata address (169.254.169.254, fd00:ec2::254). A URL is checked
when the endpoint is saved (`check_url`) and again at every connection (`guarded_addresses`
chooses the addresses the sender connects to), so a name that resolves to a public address
at save and to a private one later (DNS rebinding) is still refused.
WEBHOOK_ALLOW_PRIVATE=true lifts the guard.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import socket
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

METADATA_ADDRESSES = frozenset(
    {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}
)
MAX_URL_LENGTH = 2000


class UrlRefused(ValueError):
    """The URL may not be used as a webhook endpoint; the message says why."""


class AddressRefused(OSError):
    """At connect time: the host resolved only to addresses the guard refuses."""


def refused_reason(address: IPAddress) -> str | None:
    """Why the guard refuses `address`, or None when it is a public address."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address in METADATA_ADDRESSES:
        return "a cloud metadata address"
    checks = (
        (address.is_loopback, "a loopback address"),
        (address.is_link_local, "a link-local address"),
        (address.is_multicast, "a multicast address"),
        (address.is_unspecified, "an unspecified address"),
        (address.is_private, "a private address"),
        (address.is_reserved, "a reserved address"),
    )
    for hit, reason in checks:
        if hit:
            return reason
    return None


def literal_address(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def refused_literal(host: str) -> str | None:
    """For a host that is an IP literal, why it is refused (None: allowed or a name)."""
    address = literal_address(host)
    return refused_reason(address) if address is not None else None


def parse_url(url: str, *, require_https: bool) -> tuple[str, int]:
    """Check the URL's form; (host, port). Raises UrlRefused."""
    if len(url) > MAX_URL_LENGTH:
        raise UrlRefused(f"must be at most {MAX_URL_LENGTH} characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UrlRefused(f"is not a valid URL ({exc})") from None
    if parts.scheme not in {"http", "https"}:
        raise UrlRefused("must be an http:// or https:// URL")
    if require_https and parts.scheme != "https":
        raise UrlRefused("must be an https:// URL in production")
    if not parts.hostname:
        raise UrlRefused("has no host")
    if parts.username is not None or parts.password is not None:
        raise UrlRefused("must not contain credentials")
    if parts.fragment:
        raise UrlRefused("must not contain a fragment")
    return parts.hostname, port or (443 if parts.scheme == "https" else 80)


async def check_url(url: str, *, allow_private: bool, require_https: bool) -> None:
    """Refuse (UrlRefused) a URL of the wrong form, or one whose host resolves to an address
    the guard refuses (unless allow_private)."""
    host, port = parse_url(url, require_https=require_https)
    if allow_private:
        return
    literal = literal_address(host)
    if literal is not None:
        reason = refused_reason(literal)
        if reason:
            raise UrlRefused(f"points to {reason} ({literal})")
        return
    try:
        reasons = await _resolved(host, port)
    except OSError:
        raise UrlRefused(f"host {host!r} does not resolve") from None
    for address, reason in reasons.items():
        if reason:
            raise UrlRefused(f"host {host!r} resolves to {reason} ({address})")


async def _resolved(host: str, port: int) -> dict[str, str | None]:
    """Each address `host` resolves to (in the resolver's order), with why the guard refuses
    it (None: allowed). OSError when the name does not resolve."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses = dict.fromkeys(str(sockaddr[0]) for *_, sockaddr in infos)
    return {a: refused_reason(ipaddress.ip_address(a)) for a in addresses}


async def guarded_addresses(host: str, port: int) -> list[str]:
    """The addresses `host` resolves to that the guard allows, for a connection made right
    after (nothing can rebind between this check and the connect). Raises AddressRefused
    when none is allowed, OSError when the name does not resolve."""
    reasons = await _resolved(host, port)
    allowed = [a for a, reason in reasons.items() if reason is None]
    if not allowed:
        raise AddressRefused(
            errno.EACCES,
            f"refused by the SSRF guard: {host} resolves to "
            + ", ".join(sorted({r for r in reasons.values() if r})),
        )
    return allowed
