"""The egress guard's decisions (pure): reliability.md D.1 (tests/ssrf/vectors.py), tables, allowlist."""

import ipaddress

import pytest

from cosmogen.integrations.egress import (
    EgressBlocked,
    EgressPolicy,
    check_address,
    check_answer,
    check_url,
)
from tests.ssrf.vectors import DNS, HOSTS, URLS

POLICY = EgressPolicy()
# Names only their DNS answer makes private are refused at connect time (check_answer), not here.
DNS_ONLY = {"intranet-wiki.example", "metadata-proxy.example", "ipv6-loopback.example", "dual-stack.example"}
BLOCKED_HOSTS = [h for h in HOSTS if h not in DNS_ONLY and h != "mixed-answer.example"]


@pytest.mark.parametrize("host", BLOCKED_HOSTS)
def test_d1_hosts_are_refused(host: str) -> None:
    with pytest.raises(EgressBlocked):
        check_url(f"http://{host}/path", POLICY)


@pytest.mark.parametrize("url", URLS)
def test_d1_parser_confusion_and_schemes_are_refused(url: str) -> None:
    with pytest.raises(EgressBlocked) as info:
        check_url(url, POLICY)
    assert info.value.rule
    assert "127.0.0.1" not in str(info.value)


@pytest.mark.parametrize(
    "url", ["https://api.openai.com/v1/chat", "http://example.com:8080/x", "https://8.8.8.8/"]
)
def test_public_urls_pass(url: str) -> None:
    target = check_url(url, POLICY)
    assert target.scheme in ("http", "https")


def test_resolved_private_address_is_refused_at_connect_time() -> None:
    for text in ("10.1.2.3", "::1", "::ffff:192.168.1.1", "64:ff9b::7f00:1"):
        with pytest.raises(EgressBlocked):
            check_address(ipaddress.ip_address(text), POLICY)
    check_address(ipaddress.ip_address("93.184.216.34"), POLICY)


def test_allowlisted_network_opens_only_itself() -> None:
    policy = EgressPolicy.from_strings(networks="127.0.0.1/32")
    assert check_url("http://127.0.0.1:8080/x", policy).port == 8080
    with pytest.raises(EgressBlocked):
        check_url("http://127.0.0.2/", policy)
    with pytest.raises(EgressBlocked):
        check_url("http://10.0.0.1/", policy)


def test_allowlisted_host_name() -> None:
    policy = EgressPolicy.from_strings(hosts="simulator.local")
    assert check_url("http://simulator.local:9000/", policy).host == "simulator.local"


def test_dns_answers_for_the_d1_names_are_refused() -> None:
    for name, addresses in DNS.items():
        if name in ("public-a.example", "public-b.example", "public-v6.example", "evil.example"):
            check_answer(name, addresses, POLICY)
            continue
        with pytest.raises(EgressBlocked) as info:
            check_answer(name, addresses, POLICY)
        assert info.value.rule in ("address", "metadata"), name
        for address in addresses:
            assert address not in str(info.value).replace(name, "")


def test_a_mixed_answer_is_refused_whole() -> None:
    check_answer("ok.example", ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946"], POLICY)
    with pytest.raises(EgressBlocked, match="every address must be public"):
        check_answer("mixed.example", ["93.184.216.34", "10.0.0.1"], POLICY)
    with pytest.raises(EgressBlocked):
        check_answer("empty.example", [], POLICY)


def test_wildcard_patterns_open_names_under_the_suffix_only() -> None:
    policy = EgressPolicy.from_strings(hosts="*.corp.internal, api.example.net")
    for host in ("a.corp.internal", "x.y.corp.internal", "API.CORP.INTERNAL.", "api.example.net"):
        assert policy.allows_host(host), host
    for host in ("corp.internal", "acorp.internal", "a.corp.internal.evil.example", "b.example.net"):
        assert not policy.allows_host(host), host
    assert check_url("http://svc.corp.internal:8080/", policy).host == "svc.corp.internal"
    with pytest.raises(EgressBlocked):
        check_url("http://corp.internal/", policy)


def test_an_opened_name_may_resolve_privately_but_never_to_metadata() -> None:
    policy = EgressPolicy.from_strings(hosts="*.corp.internal")
    check_answer("api.corp.internal", ["10.9.9.9", "fd12::1"], policy)
    with pytest.raises(EgressBlocked) as info:
        check_answer("meta.corp.internal", ["169.254.169.254"], policy)
    assert info.value.rule == "metadata"
    with pytest.raises(EgressBlocked):
        check_answer("other.example", ["10.9.9.9"], policy)


@pytest.mark.parametrize(
    "address", ["169.254.169.254", "fd00:ec2::254", "100.100.100.200", "192.0.0.192", "168.63.129.16"]
)
def test_metadata_needs_both_the_allowlist_and_the_flag(address: str) -> None:
    ip = ipaddress.ip_address(address)
    covering = EgressPolicy.from_strings("0.0.0.0/0,::/0")
    with pytest.raises(EgressBlocked) as info:
        check_address(ip, covering)
    assert info.value.rule == "metadata" and "COSMOGEN_EGRESS_ALLOW_METADATA=1" in str(info.value)
    with pytest.raises(EgressBlocked):
        check_address(ip, EgressPolicy(allow_metadata=True))
    check_address(ip, EgressPolicy.from_strings("0.0.0.0/0,::/0", allow_metadata=True))


@pytest.mark.parametrize("host", ["abc1.de", "3d.be", "0xcafe.be", "deadbeef.example", "1x.example"])
def test_names_that_look_hexadecimal_are_names(host: str) -> None:
    assert check_url(f"https://{host}/", POLICY).address is None


@pytest.mark.parametrize("host", ["8.8.8.8.", "08.8.8.8", "8.8.2056", "134744072", "0x8.8.8.8"])
def test_public_addresses_in_legacy_notation_are_refused_too(host: str) -> None:
    with pytest.raises(EgressBlocked) as info:
        check_url(f"http://{host}/", POLICY)
    assert info.value.rule == "url-syntax"


@pytest.mark.parametrize(
    ("networks", "hosts"),
    [
        ("10.0.0.0/33", ""),
        ("nonsense", ""),
        ("", "*.com"),
        ("", "*"),
        ("", "a..b"),
        ("", "10.1.2.3"),
        ("", "x y"),
    ],
)
def test_bad_allowlist_entries_are_refused(networks: str, hosts: str) -> None:
    with pytest.raises(ValueError, match="COSMOGEN_EGRESS_ALLOW_"):
        EgressPolicy.from_strings(networks, hosts)


def test_from_env_reads_the_three_settings() -> None:
    assert EgressPolicy.from_env({}) == EgressPolicy()
    policy = EgressPolicy.from_env(
        {
            "COSMOGEN_EGRESS_ALLOW_NETWORKS": "10.1.2.0/24",
            "COSMOGEN_EGRESS_ALLOW_HOSTS": "*.corp.internal",
            "COSMOGEN_EGRESS_ALLOW_METADATA": "1",
        }
    )
    assert policy.allow_metadata and policy.allow_host_patterns == (".corp.internal",)
    assert policy.allows_address(ipaddress.ip_address("10.1.2.200"))


def test_an_endpoint_opens_one_port_of_one_address_and_never_metadata() -> None:
    policy = EgressPolicy().with_endpoint("127.0.0.1", 8421)
    assert check_url("http://127.0.0.1:8421/v1/models", policy).port == 8421
    for refused in (
        "http://127.0.0.1:8420/",
        "http://127.0.0.1/",
        "http://127.0.0.2:8421/",
        "http://[::1]:8421/",
    ):
        with pytest.raises(EgressBlocked):
            check_url(refused, policy)
    metadata = EgressPolicy().with_endpoint("169.254.169.254", 80)
    with pytest.raises(EgressBlocked) as refused_metadata:
        check_url("http://169.254.169.254/latest/meta-data/", metadata)
    assert refused_metadata.value.rule == "metadata"
