"""The egress guard against the address and string list of reliability.md D.1 (URL and address checks)."""

import ipaddress

import pytest

from cosmogen.integrations.egress import EgressBlocked, EgressPolicy, check_address, check_url

POLICY = EgressPolicy()

BLOCKED_HOSTS = [
    "127.0.0.1",
    "127.1",
    "127.0.1",
    "127.255.255.254",
    "0.0.0.0",
    "0",
    "2130706433",
    "0x7f000001",
    "0x7f.0.0.1",
    "0177.0.0.1",
    "017700000001",
    "10.0.0.1",
    "172.16.0.1",
    "172.31.255.255",
    "192.168.0.1",
    "169.254.0.1",
    "169.254.169.254",
    "169.254.170.2",
    "169.254.169.253",
    "100.100.100.200",
    "192.0.0.192",
    "168.63.129.16",
    "metadata.google.internal",
    "metadata",
    "instance-data",
    "100.64.0.1",
    "192.0.0.1",
    "192.0.2.1",
    "198.51.100.1",
    "203.0.113.1",
    "198.18.0.1",
    "224.0.0.1",
    "239.255.255.250",
    "240.0.0.1",
    "255.255.255.255",
    "[::1]",
    "[::]",
    "[0:0:0:0:0:0:0:1]",
    "[::ffff:127.0.0.1]",
    "[::ffff:7f00:1]",
    "[::ffff:169.254.169.254]",
    "[::127.0.0.1]",
    "[fe80::1%25eth0]",
    "[fc00::1]",
    "[fd00::1]",
    "[fd00:ec2::254]",
    "[64:ff9b::a9fe:a9fe]",
    "[2002:7f00:1::]",
    "[2001:0:4136:e378:8000:63bf:80ff:fffe]",
    "[ff02::1]",
    "localhost",
    "LOCALHOST",
    "localhost.",
    "a.localhost",
    "localhost.localdomain",
    "10.0.0.1.nip.io",
    "127.0.0.1.sslip.io",
    "lvh.me",
    "①②⑦.0.0.1",
    "127。0。0。1",
]


@pytest.mark.parametrize("host", BLOCKED_HOSTS)
def test_d1_hosts_are_refused(host: str) -> None:
    with pytest.raises(EgressBlocked):
        check_url(f"http://{host}/path", POLICY)


@pytest.mark.parametrize(
    "url",
    [
        "http://evil.example@127.0.0.1/",
        "http://127.0.0.1#@evil.example/",
        "http://127.0.0.1\\@evil.example/",
        "http://[::ffff:127.0.0.1]/",
        "http://127.0.0.1:80:80/",
        "http://%31%32%37.0.0.1/",
        " http://example.com/",
        "http://example.com/\t",
        "HtTp://127.0.0.1/",
        "file:///etc/passwd",
        "gopher://127.0.0.1:6379/_x",
        "dict://127.0.0.1:11211/",
        "ftp://example.com/",
        "data:text/plain,hi",
        "jar:http://example.com!/",
        "netdoc:///etc/passwd",
        "ws://example.com/",
    ],
)
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
