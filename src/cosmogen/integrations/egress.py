"""The egress guard: which URLs and addresses an outbound request may reach. Pure; no DNS here.

Two checks, both required:
- `check_url` before a request and before every redirect hop: scheme, user information, the spelling of
  the host, names, and addresses written literally. It parses with yarl, the URL library aiohttp
  connects with, and hands back the parsed URL for the client to send: the host checked is the host
  connected to (SSRF-04 proves it against aiohttp's own connect path);
- `check_answer` on every DNS answer at connect time (integrations/http.py GuardedResolver): every
  address must be allowed, so a public name that resolves (or re-resolves) to a private address is
  refused, and so is an answer mixing public and private addresses.

Decisions use the explicit tables below, not `ipaddress.is_private`/`is_global` (CVE-2024-4032), and look
inside IPv4-mapped and NAT64 IPv6 addresses; IPv4-compatible, 6to4 and Teredo addresses are refused
whole. Cloud metadata endpoints are a table of their own: an allowlisted network or host never opens
them; only COSMOGEN_EGRESS_ALLOW_METADATA=1 does.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from yarl import URL

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# The settings that open the guard; error messages name them.
SETTING_NETWORKS = "COSMOGEN_EGRESS_ALLOW_NETWORKS"
SETTING_HOSTS = "COSMOGEN_EGRESS_ALLOW_HOSTS"
SETTING_METADATA = "COSMOGEN_EGRESS_ALLOW_METADATA"


def _table(*rows: tuple[str, str]) -> tuple[tuple[IPNetwork, str], ...]:
    return tuple((ipaddress.ip_network(net), kind) for net, kind in rows)


# Every range an outbound request may not reach unless COSMOGEN_EGRESS_ALLOW_NETWORKS opens it, with the
# kind the error message names. IANA special-purpose registries (RFC 6890 and successors).
BLOCKED_RANGES = _table(
    ("0.0.0.0/8", "this-host"),
    ("10.0.0.0/8", "private"),
    ("100.64.0.0/10", "shared (CGNAT)"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local"),
    ("172.16.0.0/12", "private"),
    ("192.0.0.0/24", "IETF protocol assignments"),
    ("192.0.2.0/24", "documentation"),
    ("192.88.99.0/24", "6to4 relay"),
    ("192.168.0.0/16", "private"),
    ("198.18.0.0/15", "benchmarking"),
    ("198.51.100.0/24", "documentation"),
    ("203.0.113.0/24", "documentation"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved"),
    ("255.255.255.255/32", "broadcast"),
    ("::/128", "this-host"),
    ("::1/128", "loopback"),
    ("::/96", "IPv4-compatible (deprecated)"),
    ("::ffff:0:0:0/96", "IPv4-translated"),
    ("100::/64", "discard"),
    ("2001::/32", "Teredo tunnel"),
    ("2001:2::/48", "benchmarking"),
    ("2001:10::/28", "ORCHID"),
    ("2001:20::/28", "ORCHID"),
    ("2001:db8::/32", "documentation"),
    ("2002::/16", "6to4 tunnel"),
    ("3fff::/20", "documentation"),
    ("5f00::/16", "segment routing"),
    ("fc00::/7", "private (unique local)"),
    ("fe80::/10", "link-local"),
    ("fec0::/10", "site-local (deprecated)"),
    ("ff00::/8", "multicast"),
)

# Cloud metadata and platform endpoints. Blocked even inside an allowlisted network or behind an
# allowlisted name; COSMOGEN_EGRESS_ALLOW_METADATA=1 is the only way to reach them.
METADATA_RANGES = _table(
    ("169.254.169.254/32", "cloud metadata (AWS, GCP, Azure, OpenStack...)"),
    ("169.254.169.253/32", "cloud metadata (AWS DNS)"),
    ("169.254.169.123/32", "cloud metadata (AWS time)"),
    ("169.254.170.2/32", "cloud metadata (AWS ECS credentials)"),
    ("169.254.170.23/32", "cloud metadata (EKS pod identity)"),
    ("169.254.0.23/32", "cloud metadata (Tencent)"),
    ("100.100.100.200/32", "cloud metadata (Alibaba)"),
    ("192.0.0.192/32", "cloud metadata (Oracle)"),
    ("168.63.129.16/32", "cloud platform endpoint (Azure)"),
    ("fd00:ec2::254/128", "cloud metadata (AWS IPv6)"),
    ("fd00:ec2::23/128", "cloud metadata (EKS pod identity IPv6)"),
)
METADATA_NAMES = frozenset(
    {
        "metadata",
        "metadata.google.internal",
        "metadata.goog",
        "instance-data",
        "instance-data.ec2.internal",
        "metadata.tencentyun.com",
        "metadata.azure.com",
    }
)
# Names that mean this machine or a private network wherever they resolve.
LOCAL_NAMES = frozenset(
    {"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback", "lvh.me", "localtest.me"}
)
LOCAL_SUFFIXES = (
    ".localhost",
    ".localdomain",
    ".local",
    ".internal",
    ".intranet",
    ".lan",
    ".home.arpa",
    ".nip.io",
    ".sslip.io",
    ".xip.io",
    ".lvh.me",
    ".localtest.me",
)

_NAT64 = (ipaddress.IPv6Network("64:ff9b::/96"), ipaddress.IPv6Network("64:ff9b:1::/48"))
_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")
_BAD_CHARS = re.compile(r"[\x00-\x1f\x7f\\]")


class EgressBlocked(Exception):
    """An outbound request refused by the guard. `rule` names the rule (scheme, url-syntax, userinfo,
    host-name, metadata, address, redirect); the message says what to change and never shows a resolved
    address."""

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(message)
        self.rule = rule


@dataclass(frozen=True, slots=True)
class Target:
    """A checked URL. `url` is what the client sends; `host` is its host as checked (lower-case, no
    trailing dot, or the canonical text of a literal address)."""

    url: URL
    scheme: str
    host: str
    port: int
    address: IPAddress | None  # set when the URL names an address literally

    @property
    def origin(self) -> tuple[str, str, int]:
        return (self.scheme, self.host, self.port)


@dataclass(frozen=True, slots=True)
class EgressPolicy:
    """What may be reached. Everything public is allowed, and nothing else unless opened on purpose:
    `allow_networks` opens address ranges (the provider simulator on 127.0.0.1 in tests, a LAN service),
    `allow_hosts` opens names exactly and `allow_host_patterns` opens every name under a suffix
    (`*.corp.internal`). An opened name may resolve to a private address. Metadata endpoints stay
    closed unless `allow_metadata`."""

    schemes: frozenset[str] = frozenset({"http", "https"})
    allow_networks: tuple[IPNetwork, ...] = field(default=())
    allow_hosts: frozenset[str] = frozenset()
    allow_host_patterns: tuple[str, ...] = ()  # suffixes, each starting with "."
    allow_metadata: bool = False
    # (address, port) pairs opened one service at a time: the sandbox simulator on 127.0.0.1:<port>,
    # without opening every other service that listens on loopback.
    allow_endpoints: frozenset[tuple[str, int]] = frozenset()

    def with_endpoint(self, address: str, port: int) -> EgressPolicy:
        """This policy plus one literal address and port (the address written as URLs will carry it)."""
        canonical = str(ipaddress.ip_address(address))
        return replace(self, allow_endpoints=self.allow_endpoints | {(canonical, port)})

    @classmethod
    def from_strings(
        cls, networks: str = "", hosts: str = "", *, allow_metadata: bool = False
    ) -> EgressPolicy:
        """From comma-separated settings, e.g. networks="127.0.0.1/32,10.1.2.0/24" and
        hosts="api.example.net,*.corp.internal". Raises ValueError naming the bad entry."""
        nets: list[IPNetwork] = []
        for item in (n.strip() for n in networks.split(",")):
            if not item:
                continue
            try:
                nets.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                raise ValueError(
                    f"{SETTING_NETWORKS}: {item!r} is not a network "
                    "(expected e.g. 10.1.2.0/24 or 127.0.0.1/32)"
                ) from None
        names: set[str] = set()
        patterns: list[str] = []
        for item in (h.strip() for h in hosts.split(",")):
            if not item:
                continue
            if item.startswith("*."):
                suffix = _setting_name(item[2:], item)
                if suffix.count(".") < 1:
                    raise ValueError(
                        f"{SETTING_HOSTS}: {item!r} is too broad; a pattern needs at least two labels "
                        "after '*.' (e.g. *.corp.internal)"
                    )
                patterns.append("." + suffix)
            else:
                names.add(_setting_name(item, item))
        return cls(
            allow_networks=tuple(nets),
            allow_hosts=frozenset(names),
            allow_host_patterns=tuple(patterns),
            allow_metadata=allow_metadata,
        )

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> EgressPolicy:
        """The guard as configured by the three COSMOGEN_EGRESS_* settings; with none, everything
        private, local and special is refused. Raises ValueError naming the setting."""
        flag = env.get(SETTING_METADATA, "").strip().lower()
        if flag not in ("", "0", "1", "false", "true", "no", "yes"):
            raise ValueError(f"{SETTING_METADATA} must be 1 or 0, not {flag!r}")
        return cls.from_strings(
            env.get(SETTING_NETWORKS, ""),
            env.get(SETTING_HOSTS, ""),
            allow_metadata=flag in ("1", "true", "yes"),
        )

    def allows_address(self, address: IPAddress) -> bool:
        return any(address in net for net in self.allow_networks if net.version == address.version)

    def allows_host(self, host: str) -> bool:
        """Whether the admin opened this name (exactly, or by a `*.` pattern)."""
        name = host.lower().rstrip(".")
        return name in self.allow_hosts or any(name.endswith(suffix) for suffix in self.allow_host_patterns)


def check_url(url: str, policy: EgressPolicy) -> Target:
    """Parse and vet a URL; raise EgressBlocked for anything that is not a plain http(s) URL to a public
    host (or one the policy opens). The returned Target's `url` is the one to send."""
    target = parse_url(url, policy.schemes)
    if target.address is not None:
        opened = (target.host, target.port) in policy.allow_endpoints
        if not (opened and _lookup(_effective(target.address), METADATA_RANGES) is None):
            check_address(target.address, policy)
        return target
    _check_name(target.host, policy)
    return target


def parse_url(url: str, schemes: frozenset[str] = frozenset({"http", "https"})) -> Target:
    """The syntax half of `check_url`: one unambiguous http(s) URL, parsed the way aiohttp will parse it."""
    check_spelling(url)
    try:
        parsed = URL(url)
        port = parsed.port
        raw_host = parsed.raw_host
        authority = parsed.raw_authority
    except Exception:  # yarl raises more than ValueError on odd input (IndexError, found by SSRF-04)
        raise EgressBlocked(
            "url-syntax", "the URL could not be parsed (check the host and the port)"
        ) from None
    scheme = parsed.scheme.lower()
    if scheme not in schemes:
        raise EgressBlocked(
            "scheme", f"the scheme {scheme or '(none)'!r} is not allowed; use {' or '.join(sorted(schemes))}"
        )
    if parsed.raw_user is not None or parsed.raw_password is not None or "@" in authority:
        raise EgressBlocked(
            "userinfo",
            "URLs with user information ('user@host') are not allowed; send credentials in headers",
        )
    if not raw_host or port is None:
        raise EgressBlocked("url-syntax", "the URL has no host")
    if parsed.explicit_port == 0:
        raise EgressBlocked("url-syntax", "port 0 is not a port")
    host, address = _parse_host(raw_host, bracketed="[" in authority)
    return Target(parsed, scheme, str(address) if address is not None else host, port, address)


def check_spelling(url: str) -> None:
    """Refuse characters that parsers disagree on: whitespace at either end (yarl strips it, others do
    not), control characters, and backslashes (browsers read them as '/', RFC 3986 does not)."""
    if _BAD_CHARS.search(url) or url != url.strip():
        raise EgressBlocked(
            "url-syntax", "the URL contains whitespace at an end, control characters or backslashes"
        )


def _parse_host(raw_host: str, *, bracketed: bool) -> tuple[str, IPAddress | None]:
    if "%" in raw_host:
        raise EgressBlocked(
            "url-syntax", "percent-escapes and zone ids are not allowed in the host; write the host plainly"
        )
    if ":" in raw_host or bracketed:
        try:
            return raw_host, ipaddress.IPv6Address(raw_host)
        except ValueError:
            raise EgressBlocked("url-syntax", "the host in brackets is not an IPv6 address") from None
    host = raw_host.lower()
    bare = host[:-1] if host.endswith(".") else host
    # What the connector would take for an address: aiohttp's all-digits test, or anything getaddrinfo
    # reads as IPv4 (inet_aton: 127.1, 0x7f000001, 0177.0.0.1, 2130706433). Only the canonical
    # dotted quad is accepted, so the address checked is the one connected to.
    numeric = bare.replace(".", "").isdigit() or _inet_aton(bare) is not None
    if numeric:
        if bare != host or not _canonical_v4(bare):
            raise EgressBlocked(
                "url-syntax",
                "the host is an IPv4 address in a legacy notation (octal, hex, short or with a dot at "
                "the end); write it as four decimal numbers",
            )
        return bare, ipaddress.IPv4Address(bare)
    labels = bare.split(".")
    if len(bare) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise EgressBlocked("url-syntax", "the host is not a valid DNS name")
    return bare, None


def _check_name(host: str, policy: EgressPolicy) -> None:
    if host in METADATA_NAMES and not (policy.allow_metadata and policy.allows_host(host)):
        needs = [] if policy.allow_metadata else [f"{SETTING_METADATA}=1"]
        if not policy.allows_host(host):
            needs.append(f"the name in {SETTING_HOSTS}")
        raise EgressBlocked(
            "metadata",
            f"{host} is a cloud metadata endpoint; it stays blocked even when allowlisted "
            f"(to reach it on purpose, set {' and '.join(needs)})",
        )
    if policy.allows_host(host):
        return
    if host in LOCAL_NAMES or host.endswith(LOCAL_SUFFIXES) or "." not in host:
        raise EgressBlocked(
            "host-name",
            f"the host name {host} points at this machine or an internal network; "
            f"add it to {SETTING_HOSTS} to allow it on purpose",
        )


def check_address(address: IPAddress, policy: EgressPolicy, *, host: str | None = None) -> None:
    """Refuse private, local, special and metadata addresses unless the policy opens them. `host` is the
    name the address was resolved from: a name the admin opened may resolve anywhere except metadata."""
    effective = _effective(address)
    opened = (host is not None and policy.allows_host(host)) or any(
        policy.allows_address(a) for a in (address, effective)
    )
    for candidate in (address, effective):
        kind = _lookup(candidate, METADATA_RANGES)
        if kind is None:
            continue
        if policy.allow_metadata and opened:
            return
        needs = [] if policy.allow_metadata else [f"{SETTING_METADATA}=1"]
        if not opened:
            needs.append(f"its address in {SETTING_NETWORKS}")
        raise EgressBlocked(
            "metadata",
            f"{_subject(host)} {_a(kind)} address; metadata endpoints stay blocked even when allowlisted "
            f"(to reach one on purpose, set {' and '.join(needs)})",
        )
    if opened:
        return
    kind = _lookup(effective, BLOCKED_RANGES)
    if kind is not None:
        opener = f"add its network to {SETTING_NETWORKS}"
        if host is not None:
            opener += f" or the name to {SETTING_HOSTS}"
        raise EgressBlocked(
            "address", f"{_subject(host)} {_a(kind)} address; {opener} to allow it on purpose"
        )


def check_answer(host: str, addresses: list[str], policy: EgressPolicy) -> None:
    """A DNS answer for `host`: every address must pass; one refused address refuses the whole answer
    (mixed public and private answers are how DNS rebinding slips through)."""
    if not addresses:
        raise EgressBlocked("address", f"{host} resolved to no address")
    for text in addresses:
        try:
            address = ipaddress.ip_address(text.split("%", 1)[0])
        except ValueError:
            raise EgressBlocked("address", f"{host} resolved to something that is not an address") from None
        try:
            check_address(address, policy, host=host)
        except EgressBlocked as exc:
            if len(addresses) > 1:
                raise EgressBlocked(exc.rule, f"every address must be public: {exc}") from None
            raise


def _effective(address: IPAddress) -> IPAddress:
    """The IPv4 address a mapped or NAT64 IPv6 address reaches; otherwise the address itself."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if any(address in net for net in _NAT64):
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address


def _lookup(address: IPAddress, table: tuple[tuple[IPNetwork, str], ...]) -> str | None:
    for net, kind in table:
        if net.version == address.version and address in net:
            return kind
    return None


def _subject(host: str | None) -> str:
    return f"{host} resolves to" if host is not None else "the URL names"


def _a(kind: str) -> str:
    return ("an " if kind[0] in "aeiouAEIOU" else "a ") + kind


def _inet_aton(text: str) -> bytes | None:
    if not text or not text.isascii():
        return None
    try:
        return socket.inet_aton(text)
    except OSError:
        return None


def _canonical_v4(text: str) -> bool:
    parts = text.split(".")
    return len(parts) == 4 and all(
        p.isascii() and p.isdigit() and 1 <= len(p) <= 3 and (p == "0" or p[0] != "0") and int(p) <= 255
        for p in parts
    )


def _setting_name(name: str, item: str) -> str:
    """A host name from a setting, in the form `check_url` compares (IDNA, lower-case, no final dot)."""
    try:
        host, address = _parse_host(URL.build(scheme="http", host=name).raw_host or "", bracketed=False)
    except (ValueError, UnicodeError, EgressBlocked):
        raise ValueError(
            f"{SETTING_HOSTS}: {item!r} is not a host name (expected e.g. api.example.net)"
        ) from None
    if address is not None:
        raise ValueError(
            f"{SETTING_HOSTS}: {item!r} is an address; put it in {SETTING_NETWORKS} as {item}/32"
        )
    return host
