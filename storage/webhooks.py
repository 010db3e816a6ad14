"""The rules of webhooks that the gateway and the delivery workers must agree on.

The gateway checks a subscription when it is created or changed and the workers check it again on
every attempt (DNS may have changed in between), so the URL policy, the event-type patterns and the
secret format live here, below both of them.
"""

from __future__ import annotations

import base64
import ipaddress
import secrets
import socket
from dataclasses import dataclass
from fnmatch import fnmatchcase
from urllib.parse import urlsplit

from storage.events import CATALOGUE

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32

#: Delivered only to the subscription they name (a ping) or to nobody (a command through the outbox).
TARGETED_TYPES = frozenset({"resimhub.webhook.pinged"})
INTERNAL_TYPES = frozenset({"resimhub.webhook.redelivery.requested"})

#: Cloud metadata services answer on these; they stay refused even when private addresses are allowed,
#: because a delivery log that shows response bodies would hand out the instance's credentials.
METADATA_ADDRESSES = frozenset({ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254"),
                                ipaddress.ip_address("100.100.100.200")})
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class UnsafeUrl(ValueError):
    """A URL a webhook may not be sent to; ``reason`` says why in words a user can act on, ``code``
    tells a malformed URL (``invalid_url``) from one whose address is refused (``unsafe_url``)."""

    def __init__(self, reason: str, code: str = "unsafe_url") -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


class UnknownEventType(ValueError):
    def __init__(self, pattern: str) -> None:
        super().__init__(f"no deliverable event type matches {pattern!r}")
        self.pattern = pattern


def generate_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def new_message_id() -> str:
    """The ``webhook-id`` of a delivery: random rather than a row id, so it stays unique for receivers
    even if the hub's database is ever rebuilt."""
    return "msg_" + secrets.token_hex(16)


def secret_key(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX))


# -- event types ----------------------------------------------------------------------------------
def deliverable_types() -> list[str]:
    return sorted(t for t in CATALOGUE if t not in TARGETED_TYPES | INTERNAL_TYPES)


def check_patterns(patterns: list[str]) -> list[str]:
    """Each pattern is a type or uses ``*`` for any run of characters (``resimhub.evaluation.*``);
    one that matches no type is surely a typo, so it is refused rather than silently never firing."""
    known = deliverable_types()
    cleaned: list[str] = []
    for pattern in patterns:
        pattern = pattern.strip()
        if not pattern or any(c in pattern for c in "?[]") or not any(fnmatchcase(t, pattern) for t in known):
            raise UnknownEventType(pattern)
        if pattern not in cleaned:
            cleaned.append(pattern)
    return cleaned


def matches(patterns: list[str], event_type: str) -> bool:
    if event_type in TARGETED_TYPES or event_type in INTERNAL_TYPES:
        return False
    return any(fnmatchcase(event_type, p) for p in patterns)


# -- URLs and addresses ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Target:
    """Where a delivery connects: the host named in the URL and the addresses it was checked at."""

    scheme: str
    host: str
    port: int
    addresses: tuple[str, ...]


def parse_url(url: str) -> tuple[str, str, int]:
    """Scheme, host and port of an acceptable webhook URL; raises :class:`UnsafeUrl`."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UnsafeUrl(f"the URL is malformed: {exc}", "invalid_url") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise UnsafeUrl(f"only http and https URLs are allowed, not {scheme or 'a URL without a scheme'}",
                        "invalid_url")
    if not parts.hostname:
        raise UnsafeUrl("the URL has no host", "invalid_url")
    if parts.username is not None or parts.password is not None:
        raise UnsafeUrl("credentials in the URL are not supported; the signature authenticates the hub",
                        "invalid_url")
    if parts.fragment:
        raise UnsafeUrl("the URL may not have a #fragment", "invalid_url")
    return scheme, parts.hostname.lower(), port or (443 if scheme == "https" else 80)


def resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to, in the resolver's order (tests replace this function)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    seen: list[str] = []
    for _family, _type, _proto, _canon, sockaddr in infos:
        if sockaddr[0] not in seen:
            seen.append(sockaddr[0])
    return seen


#: IPv6 forms that carry an IPv4 address and reach it: its IPv4-compatible (``::a.b.c.d``,
#: deprecated), IPv4-mapped (``::ffff:a.b.c.d``) and IPv4-translated (``::ffff:0:a.b.c.d``, SIIT)
#: forms, which a dual-stack host may route to the IPv4 address itself and which no public receiver
#: needs, so they are refused whatever they embed; and the translation prefixes a NAT64 gateway
#: (RFC 6052) or a 6to4 relay forwards to the embedded address, which are judged by that address.
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
_IPV4_MAPPED = ipaddress.ip_network("::ffff:0:0/96")
_IPV4_TRANSLATED = ipaddress.ip_network("::ffff:0:0:0/96")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
ALLOW_PRIVATE_SETTING = "RESIMHUB_WEBHOOK_ALLOW_PRIVATE"


def embedded_ipv4(ip: ipaddress.IPv6Address) -> tuple[str, ipaddress.IPv4Address] | None:
    """The form and the IPv4 address an IPv6 address carries, for the forms that deliver to it."""
    low32 = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip in _IPV4_MAPPED:
        return "an IPv4-mapped IPv6 address", low32
    if ip in _IPV4_TRANSLATED:
        return "an IPv4-translated IPv6 address", low32
    if ip in _IPV4_COMPATIBLE:
        return "an IPv4-compatible IPv6 address", low32
    if ip in _NAT64:
        return "a NAT64 address", low32
    if ip.sixtofour is not None:
        return "a 6to4 address", ip.sixtofour
    if ip.teredo is not None:
        return "a Teredo address", ip.teredo[1]
    return None


def _kind(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """What makes ``ip`` non-public, from every property :mod:`ipaddress` knows (``is_global``
    alone is not enough: older Pythons, 3.11.7 among them, call ``::127.0.0.1`` global)."""
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_multicast:
        return "a multicast address"
    if ip.is_unspecified:
        return "the unspecified address"
    if ip.is_private:
        return "a private address"
    if ip.is_reserved:
        return "a reserved address"
    if getattr(ip, "is_site_local", False):
        return "a site-local address"
    if not ip.is_global:
        return "a reserved or otherwise non-public address"
    return None


def address_problem(address: str, *, allow_private: bool) -> str | None:
    """What kind of address refuses ``address`` ("a loopback address"), or ``None`` if it is allowed.

    An IPv6 address that carries an IPv4 address (see :func:`embedded_ipv4`) is judged by the IPv4
    address too, so ``[::ffff:127.0.0.1]`` or ``[64:ff9b::a9fe:a9fe]`` cannot reach what
    ``127.0.0.1`` or the metadata service could not.
    """
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    embedded = embedded_ipv4(ip) if ip.version == 6 and not (ip.is_loopback or ip.is_unspecified) else None
    if ip in METADATA_ADDRESSES or (embedded is not None and embedded[1] in METADATA_ADDRESSES):
        return "a cloud metadata address"
    if allow_private:
        return None
    if embedded is not None:
        form, ipv4 = embedded
        inner = _kind(ipv4)
        if inner is not None:
            return f"{form} of {ipv4}, {inner}"
        if ip in _IPV4_COMPATIBLE or ip in _IPV4_MAPPED or ip in _IPV4_TRANSLATED:
            return f"{form} (of {ipv4}); use the IPv4 address itself"
        if ip in _NAT64:
            return None  # a NAT64 gateway forwards it to a public IPv4 address; the prefix itself is "reserved"
    return _kind(ip)


def check_url(url: str, *, allow_private: bool, resolve_host: bool = True) -> Target:
    """Parse ``url`` and resolve its host, refusing it if any address it resolves to is not public.

    One bad address refuses the URL, so a record set that mixes a public and a private address cannot
    be used to reach the private one. With ``resolve_host`` false (the gateway when private addresses
    are allowed) a host name is not looked up, so a receiver that is not running yet can subscribe.
    """
    scheme, host, port = parse_url(url)
    literal = True
    try:
        addresses = [str(ipaddress.ip_address(host.strip("[]")))]
    except ValueError:
        literal = False
        if not resolve_host:
            return Target(scheme, host, port, ())
        try:
            addresses = resolve(host, port)
        except (OSError, UnicodeError) as exc:
            raise UnsafeUrl(f"{host} does not resolve: {exc}") from None
    if not addresses:
        raise UnsafeUrl(f"{host} does not resolve to any address")
    for address in addresses:
        problem = address_problem(address, allow_private=allow_private)
        if problem is not None:
            where = host if literal else f"{host} resolves to {address}, which"
            rule = ("webhooks may never reach it" if allow_private or "metadata" in problem else
                    f"webhooks may only reach public addresses ({ALLOW_PRIVATE_SETTING}=1 allows loopback and "
                    "private receivers for local development)")
            raise UnsafeUrl(f"{where} is {problem}; {rule}")
    return Target(scheme, host, port, tuple(addresses))
