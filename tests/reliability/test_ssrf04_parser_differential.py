"""SSRF-04: only http and https; the D.1 parser-confusion strings; and a differential test: for every URL
the validator accepts, the host it checked is the host aiohttp connects to.

The "connector" side is aiohttp itself: the URL string goes through a real ClientSession.request, and a
TCPConnector subclass records the host and port `_create_direct_connection` hands to `_resolve_host` (the
exact point where aiohttp decides what to connect to), then stops the request before any socket is made.
What aiohttp would do next is reproduced from its code: a host that `is_ip_address` calls numeric is
connected to as written (non-canonical IPv4 refused); anything else goes to the resolver, where
getaddrinfo reads numeric forms itself (asked here with AI_NUMERICHOST, so no DNS query is made).

URLs come from a grammar over pieces that parsers disagree on: mixed-case and foreign schemes, odd
separators, userinfo, IPv4 in every legacy notation, IPv6 with and without brackets and zone ids,
Unicode look-alike digits and dots, IDNA, percent-escapes, trailing dots, empty labels, ports out of
range, and paths holding '@', '#', '\\' and whitespace. Hypothesis draws the seeds (reproducible; a
failure reports seed, index and URL) and each example checks BATCH = 25 URLs, because Hypothesis's
per-example bookkeeping costs more than checking one URL.

Size: SSRF_FUZZ_URLS, default 50,000 (the CI target): 17-29 s on the shared 2-core machine (two runs,
other jobs running). The soak sets 1,000,000.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import random
import socket
from collections import Counter
from typing import Any

import aiohttp
import pytest
from aiohttp.helpers import is_canonical_ipv4_address, is_ip_address
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.ssrf.vectors import CONFUSION, SCHEMES, all_urls
from yarl import URL

from cosmogen.integrations.egress import EgressBlocked, EgressPolicy, Target, check_url, parse_url

# names only their DNS answer makes private: refused at connect time (SSRF-01, SSRF-02), not here
DNS_ONLY = tuple(
    f"{n}/"
    for n in (
        "intranet-wiki.example",
        "metadata-proxy.example",
        "ipv6-loopback.example",
        "dual-stack.example",
        "mixed-answer.example",
    )
)
URLS = int(os.environ.get("SSRF_FUZZ_URLS", "50000"))
BATCH = 25


# -- the connector side ----------------------------------------------------------------------------


class Stop(Exception):
    pass


class Recording(aiohttp.TCPConnector):
    """Records what aiohttp would connect to, and connects to nothing."""

    seen: list[tuple[str, int, bool]]

    async def _create_direct_connection(self, req: Any, traces: Any, timeout: Any, **kw: Any) -> Any:
        self.is_ssl = req.is_ssl()
        return await super()._create_direct_connection(req, traces, timeout, **kw)

    async def _resolve_host(self, host: str, port: int, traces: Any = None) -> Any:
        self.seen.append((host, port, self.is_ssl))
        raise Stop


def connect_target(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | str | None:
    """What aiohttp's _resolve_host and then getaddrinfo make of `host`: an address, a DNS name, or None
    when aiohttp refuses to connect at all."""
    if is_ip_address(host):
        if ":" not in host and not is_canonical_ipv4_address(host):
            return None  # aiohttp refuses legacy numeric forms
        try:
            return ipaddress.ip_address(host)
        except ValueError:
            return None  # socket.connect would fail
    try:
        infos = socket.getaddrinfo(host, 80, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST)
    except (OSError, UnicodeError):
        return host.rstrip(".").lower()  # a name: DNS, then the guard's check of every answer
    return ipaddress.ip_address(str(infos[0][4][0]).split("%", 1)[0])


class Differential:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.connector: Recording | None = None  # built inside the loop: aiohttp wants a running one
        self.session: aiohttp.ClientSession | None = None
        self.loop.run_until_complete(self._open())

    async def _open(self) -> None:
        connector = Recording()
        connector.seen = []
        self.connector = connector
        self.session = aiohttp.ClientSession(connector=connector, trust_env=False)

    def connected(self, url: str) -> tuple[str, int, bool] | None:
        assert self.session is not None and self.connector is not None
        self.connector.seen.clear()

        async def go() -> None:
            assert self.session is not None
            try:
                await self.session.get(url, allow_redirects=False)
            except Stop:
                pass
            except (aiohttp.ClientError, ValueError):
                pass  # aiohttp refused the URL: no connection

        self.loop.run_until_complete(go())
        return self.connector.seen[0] if self.connector.seen else None

    def close(self) -> None:
        assert self.session is not None
        self.loop.run_until_complete(self.session.close())
        self.loop.close()


@pytest.fixture(scope="module")
def differential() -> Any:
    diff = Differential()
    yield diff
    diff.close()


def mismatch(target: Target, seen: tuple[str, int, bool] | None) -> str | None:
    if seen is None:
        return None  # aiohttp would not connect at all: nothing reached
    host, port, ssl = seen
    reached = connect_target(host)
    if reached is None:
        return None
    if port != target.port or ssl != (target.scheme == "https"):
        scheme = "https" if ssl else "http"
        return f"port/scheme: checked {target.scheme}:{target.port}, connects {scheme}:{port}"
    if target.address is not None:
        if reached != target.address:
            return f"address: checked {target.address}, connects to {reached!r}"
    elif reached != target.host:
        return f"host: checked name {target.host!r}, connects to {reached!r}"
    return None


# -- generated URLs --------------------------------------------------------------------------------
# A grammar over random.Random: Hypothesis draws one seed per example (reproducible, and the seed and
# the URL are reported on failure); drawing every character through Hypothesis costs ~6 ms an example.

LOOKALIKE_DOTS = [".", ".", ".", "。", "．", "｡"]
DIGIT_FORMS = {
    d: [d, d, chr(0xFF10 + int(d)), chr(0x2460 + int(d) - 1) if d != "0" else "⓪"] for d in "0123456789"
}
LABEL = "abcdefghijklmnopqrstuvwxyzABCZ0123456789-_"
UNICODE_LABEL = "aßéñ中文ﬁſкоΑ①０１。．ａＢ-"
JUNK = "ab1.:@#?/\\[]%-_ \t"
SAFE_REST = "/?#@:ab%2.=&~"


def text(r: random.Random, alphabet: str, low: int, high: int) -> str:
    return "".join(r.choice(alphabet) for _ in range(r.randint(low, high)))


def ipv4_text(r: random.Random) -> str:
    parts = [r.randint(0, 255) for _ in range(4)]
    value = int(ipaddress.IPv4Address(".".join(map(str, parts))))
    style = r.choice(["dotted", "int", "hex", "octal", "short", "mixed", "lookalike", "special"])
    if style == "int":
        return str(value)
    if style == "hex":
        return hex(value)
    if style == "octal":
        return ".".join("0" + oct(p)[2:] for p in parts)
    if style == "short":
        return (
            f"{parts[0]}.{value & 0xFFFFFF}"
            if r.random() < 0.5
            else f"{parts[0]}.{parts[1]}.{value & 0xFFFF}"
        )
    if style == "mixed":
        return ".".join(r.choice([str(p), hex(p), "0" + oct(p)[2:]]) for p in parts)
    if style == "lookalike":
        dotted = ".".join(map(str, parts))
        return "".join(r.choice(DIGIT_FORMS[c]) if c.isdigit() else r.choice(LOOKALIKE_DOTS) for c in dotted)
    if style == "special":
        return r.choice(["127.0.0.1", "0.0.0.0", "0", "10.0.0.1", "169.254.169.254", "255.255.255.255"])
    return ".".join(map(str, parts))


def ipv6_text(r: random.Random) -> str:
    value = ipaddress.IPv6Address(r.getrandbits(128))
    four = ipaddress.IPv4Address(r.getrandbits(32))
    kind = r.choice(["random", "mapped", "compat", "nat64", "loop", "zone", "upper", "bare"])
    written = {
        "random": value.compressed,
        "mapped": f"::ffff:{four}",
        "compat": f"::{four}",
        "nat64": f"64:ff9b::{four}",
        "loop": r.choice(["::1", "0:0:0:0:0:0:0:1", "::", "::ffff:7f00:1", "::ffff:127.0.0.1"]),
        "zone": f"fe80::{r.randint(1, 9)}%25eth0",
        "upper": value.exploded.upper(),
        "bare": value.compressed,
    }[kind]
    return written if kind == "bare" else f"[{written}]"


def name_text(r: random.Random) -> str:
    def one() -> str:
        roll = r.random()
        if roll < 0.6:
            return text(r, "abcdefghijklmnopqrstuvwxyz0123456789", 1, 10)
        if roll < 0.8:
            return text(r, LABEL, 0, 12)
        return text(r, UNICODE_LABEL, 1, 8)

    name = ".".join(one() for _ in range(r.randint(1, 4)))
    if r.random() < 0.5:
        name += r.choice([".", "..", "%2e", ".example", ".com", ".nip.io", ".internal", ".localhost"])
    if r.random() < 0.1:
        name = name.replace("a", "%61", 1)
    return name


def random_url(r: random.Random) -> str:
    """Mostly URLs the validator accepts (so the comparison has something to compare), with every
    trouble maker mixed in often enough."""
    scheme = r.choice(["http", "https"] * 12 + ["HTTP", "HtTpS", "ftp", "ws", "file", ""])
    sep = r.choice(["://"] * 30 + [":/", ":", ":///", ":\\\\", "//"])
    userinfo = r.choice([""] * 16 + ["user@", "user:pw@", "@", "a%40b@", "evil.example@"])
    maker = r.choice([ipv4_text] * 3 + [ipv6_text] * 2 + [name_text] * 4 + [junk_host])
    port = r.choice(["", "", "", "", "", f":{r.randint(0, 70000)}", f":{r.randint(1, 65535)}"])
    if r.random() < 0.05:
        port = r.choice([":", ":80:80", ":0x50", ":+80", ":８０", ":-1"])
    rest = r.choice(["/", "/", "/", "?", "#"]) + text(r, SAFE_REST, 0, 12)
    if r.random() < 0.05:
        spot = r.randint(0, len(rest))
        rest = rest[:spot] + r.choice(" \t\\\n@#") + rest[spot:]
    return f"{scheme}{sep}{userinfo}{maker(r)}{port}{rest}"


def junk_host(r: random.Random) -> str:
    return text(r, JUNK, 0, 16)


# -- the tests -------------------------------------------------------------------------------------


@settings(
    max_examples=max(URLS // BATCH, 1),
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(seed=st.integers(0, 2**64 - 1))
def test_the_host_checked_is_the_host_connected_to(differential: Differential, seed: int) -> None:
    """BATCH URLs per Hypothesis example (its per-example bookkeeping costs more than a URL's check)."""
    r = random.Random(seed)
    for index in range(BATCH):
        url = random_url(r)
        try:
            target = parse_url(url)
        except EgressBlocked:
            continue  # refused: nothing is sent, so nothing can differ
        problem = mismatch(target, differential.connected(url))
        assert problem is None, (seed, index, url, problem)
        # and the parsed URL the client really sends connects to the same place
        assert mismatch(target, differential.connected(str(target.url))) is None, (seed, index, url)


def test_the_generator_gives_the_comparison_something_to_compare() -> None:
    """A generator whose URLs were all refused would make the differential pass vacuously."""
    kinds: Counter[str] = Counter()
    for seed in range(2000):
        try:
            target = parse_url(random_url(random.Random(seed)))
        except EgressBlocked as exc:
            kinds[f"refused {exc.rule}"] += 1
        else:
            kinds["address" if target.address is not None else "name"] += 1
    assert kinds["address"] > 200 and kinds["name"] > 200, kinds
    assert all(kinds[f"refused {rule}"] > 20 for rule in ("url-syntax", "scheme", "userinfo")), kinds


@pytest.mark.parametrize("url", [u for u in all_urls() if not u.endswith(DNS_ONLY)])
def test_d1_strings_and_hosts_never_reach_a_private_address(differential: Differential, url: str) -> None:
    with pytest.raises(EgressBlocked):
        check_url(url, EgressPolicy())
    try:
        target = parse_url(url)
    except EgressBlocked:
        return
    assert mismatch(target, differential.connected(url)) is None


@pytest.mark.parametrize("url", [*SCHEMES, "HTTPS+unix://x/", "javascript:alert(1)", "mailto:a@b.example"])
def test_only_http_and_https(url: str) -> None:
    with pytest.raises(EgressBlocked) as info:
        check_url(url, EgressPolicy())
    assert info.value.rule == "scheme"


@pytest.mark.parametrize("url", CONFUSION)
def test_confusion_strings_name_no_address_in_the_message(url: str) -> None:
    with pytest.raises(EgressBlocked) as info:
        check_url(url, EgressPolicy())
    assert info.value.rule in ("url-syntax", "userinfo", "address", "scheme")
    assert "127.0.0.1" not in str(info.value) and "10.0.0.1" not in str(info.value)


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("https://Example.COM./a", "example.com"),
        ("https://straße.example/", "xn--strae-oqa.example"),  # IDNA 2008, as yarl (and so aiohttp) sends it
        ("https://ＥＸＡＭＰＬＥ．com/", "example.com"),
        ("http://[2606:4700::1111]:8080/", "2606:4700::1111"),
        ("https://8.8.8.8/", "8.8.8.8"),
        ("https://abc1.de/", "abc1.de"),  # hex-looking names are names
        ("https://0xcafe.be/", "0xcafe.be"),
    ],
)
def test_public_urls_pass_with_the_host_normalised(url: str, host: str, differential: Differential) -> None:
    target = check_url(url, EgressPolicy())
    assert target.host == host
    assert mismatch(target, differential.connected(url)) is None


@pytest.mark.parametrize(
    ("url", "claimed_host", "claimed_address"),
    [
        ("http://ex%61mple.com/", "example.com", None),  # a validator that decodes escapes (the old one)
        ("http://example.com./", "example.org", None),
        ("http://[::ffff:7f00:1]/", "8.8.8.8", "8.8.8.8"),
        ("https://example.com:8443/", "example.com", None),
    ],
)
def test_the_comparison_catches_a_validator_that_checked_something_else(
    differential: Differential, url: str, claimed_host: str, claimed_address: str | None
) -> None:
    """The oracle is not vacuous: a Target that names another host, address or port than the one
    aiohttp connects to is reported."""
    address = ipaddress.ip_address(claimed_address) if claimed_address else None
    parsed = URL(url)
    port = 443 if parsed.port == 8443 else parsed.port  # the last case claims the wrong port
    assert port is not None
    wrong = Target(parsed, parsed.scheme, claimed_host, port, address)
    assert mismatch(wrong, differential.connected(url)) is not None
    if "%" not in url:  # our validator refuses escaped hosts outright
        assert mismatch(parse_url(url), differential.connected(url)) is None
