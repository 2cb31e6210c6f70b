"""The egress guard: which URLs and addresses an outbound request may reach. Pure; no DNS here.

Two checks, both required: `check_url` before a request (scheme, host spelling, names, literal
addresses in every legacy notation), and `check_address` on every address the resolver returns at
connect time, so a public name that resolves to a private address is refused too (DNS rebinding).

Decisions use an explicit CIDR table, not `ipaddress.is_private`/`is_global` (CVE-2024-4032), and look
inside IPv4-mapped, IPv4-compatible, 6to4, Teredo and NAT64 IPv6 addresses.
"""

from __future__ import annotations

import ipaddress
import socket
import unicodedata
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_BLOCKED_V4 = tuple(
    ipaddress.IPv4Network(n)
    for n in (
        "0.0.0.0/8",  # "this host"
        "10.0.0.0/8",
        "100.64.0.0/10",  # CGNAT (and Alibaba's metadata at 100.100.100.200)
        "127.0.0.0/8",
        "169.254.0.0/16",  # link-local and cloud metadata
        "172.16.0.0/12",
        "192.0.0.0/24",  # IETF protocol assignments (Oracle metadata 192.0.0.192)
        "192.0.2.0/24",
        "192.88.99.0/24",
        "192.168.0.0/16",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/4",
        "240.0.0.0/4",
        "255.255.255.255/32",
        "168.63.129.16/32",  # Azure platform endpoint
    )
)
_BLOCKED_V6 = tuple(
    ipaddress.IPv6Network(n)
    for n in (
        "::/128",
        "::1/128",
        "100::/64",  # discard
        "2001:db8::/32",  # documentation
        "fc00::/7",  # unique local (includes AWS fd00:ec2::254)
        "fe80::/10",
        "fec0::/10",
        "ff00::/8",
    )
)
_NAT64 = (ipaddress.IPv6Network("64:ff9b::/96"), ipaddress.IPv6Network("64:ff9b:1::/48"))
_SIXTOFOUR = ipaddress.IPv6Network("2002::/16")
_TEREDO = ipaddress.IPv6Network("2001::/32")
_V4_COMPATIBLE = ipaddress.IPv6Network("::/96")

_BLOCKED_NAMES = frozenset({"localhost", "metadata", "metadata.google.internal", "instance-data", "lvh.me"})
_BLOCKED_SUFFIXES = (".localhost", ".localdomain", ".internal", ".local", ".nip.io", ".sslip.io", ".lvh.me")
_LEGACY_V4 = frozenset("0123456789abcdefxABCDEFX.")


class EgressBlocked(Exception):
    """An outbound request refused by the guard. `rule` names the rule; the message never shows internals."""

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(message)
        self.rule = rule


@dataclass(frozen=True, slots=True)
class Target:
    scheme: str
    host: str  # lower-case name or the canonical text of a literal address
    port: int
    address: IPAddress | None  # set when the URL names an address literally


@dataclass(frozen=True, slots=True)
class EgressPolicy:
    """What may be reached. Everything public is allowed; `allow_networks` opens private ranges on purpose
    (the provider simulator on 127.0.0.1 in tests, a self-hosted service on a LAN)."""

    schemes: frozenset[str] = frozenset({"http", "https"})
    allow_networks: tuple[IPNetwork, ...] = field(default=())
    allow_hosts: frozenset[str] = frozenset()

    @classmethod
    def from_strings(cls, networks: str = "", hosts: str = "") -> EgressPolicy:
        """From comma-separated settings, e.g. COSMOGEN_EGRESS_ALLOW_NETWORKS="127.0.0.1/32"."""
        nets = tuple(ipaddress.ip_network(n.strip(), strict=False) for n in networks.split(",") if n.strip())
        names = frozenset(h.strip().lower() for h in hosts.split(",") if h.strip())
        return cls(allow_networks=nets, allow_hosts=names)

    def allows_address(self, address: IPAddress) -> bool:
        return any(address in net for net in self.allow_networks if net.version == address.version)


def check_url(url: str, policy: EgressPolicy) -> Target:
    """Parse and vet a URL; raise EgressBlocked for anything that is not a plain public http(s) URL."""
    if url != url.strip() or any(ch in url for ch in "\t\r\n\\") or any(ord(ch) < 32 for ch in url):
        raise EgressBlocked("url-syntax", "the URL contains whitespace, control characters or backslashes")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise EgressBlocked("url-syntax", "the URL could not be parsed (check the host and port)") from None
    scheme = parts.scheme.lower()
    if scheme not in policy.schemes:
        raise EgressBlocked("scheme", f"the scheme {scheme or '(none)'!r} is not allowed; use http or https")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise EgressBlocked("userinfo", "URLs with user information ('user@host') are not allowed")
    raw_host = parts.hostname
    if not raw_host:
        raise EgressBlocked("url-syntax", "the URL has no host")
    host = _normalise_host(raw_host)
    address = _literal_address(host)
    default_port = 443 if scheme == "https" else 80
    target = Target(scheme, str(address) if address else host, port or default_port, address)
    if address is not None:
        check_address(address, policy)
        return target
    if host in policy.allow_hosts:
        return target
    if host in _BLOCKED_NAMES or host.endswith(_BLOCKED_SUFFIXES) or "." not in host:
        raise EgressBlocked("host-name", "the host name points at a local or internal service")
    return target


def check_address(address: IPAddress, policy: EgressPolicy) -> None:
    """Refuse private, local, special and embedded-private addresses unless the policy opens them."""
    if policy.allows_address(address):
        return
    for candidate in _candidates(address):
        if policy.allows_address(candidate):
            continue
        blocked = _BLOCKED_V4 if candidate.version == 4 else _BLOCKED_V6
        if any(candidate in net for net in blocked):
            raise EgressBlocked("address", "the address is private, local or reserved")


def _candidates(address: IPAddress) -> list[IPAddress]:
    """The address and any IPv4 address embedded in it."""
    found: list[IPAddress] = [address]
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            found.append(address.ipv4_mapped)
        if address.sixtofour is not None:
            found.append(address.sixtofour)
        if address.teredo is not None:
            found.extend(address.teredo)
        if address in _V4_COMPATIBLE and int(address) > 1:
            found.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
        if any(address in net for net in _NAT64):
            found.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return found


def _normalise_host(host: str) -> str:
    # NFKC turns full-width and circled digits and ideographic full stops into ASCII look-alikes, which
    # is what resolvers and browsers do; checking the normalised form closes that bypass.
    # Percent-escapes in a host are decoded by some clients; decide on what they decode to.
    host = unquote(host)
    host = unicodedata.normalize("NFKC", host).replace("\u3002", ".").lower().rstrip(".")
    try:
        return host.encode("idna").decode("ascii") if not host.isascii() else host
    except UnicodeError:
        raise EgressBlocked("host-name", "the host name is not a valid international domain name") from None


def _literal_address(host: str) -> IPAddress | None:
    """An address written literally in any notation resolvers accept (127.1, 0x7f000001, 0177.0.0.1...)."""
    text = host.strip("[]")
    if "%" in text:  # zone ids only occur on link-local addresses
        text = text.split("%", 1)[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        pass
    if text and set(text) <= _LEGACY_V4 and any(ch.isdigit() for ch in text):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(text))
        except OSError:
            raise EgressBlocked("url-syntax", "the host looks like an address but is not valid") from None
    return None
