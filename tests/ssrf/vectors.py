"""reliability.md Part D.1: the addresses and strings the egress guard must refuse, in one place.

`HOSTS` go into `http://{host}/`; `URLS` are whole URLs (parser confusion and schemes). `DNS` is what the
sandbox's stub DNS server answers for names: the nip.io / sslip.io / lvh.me style names point at private
addresses as they do on the internet, and a few ordinary-looking names do too, so the connect-time check
is exercised, not only the name check.
"""

from __future__ import annotations

LOOPBACK_V4 = [
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
]
PRIVATE_V4 = ["10.0.0.1", "172.16.0.1", "172.31.255.255", "192.168.0.1"]
METADATA = [
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
]
SPECIAL_V4 = [
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
]
IPV6 = [
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
    "[2001:0:4136:e378:8000:63bf:80ff:fffe]",  # Teredo; its client part is 127.0.0.1
    "[ff02::1]",
]
NAMES = [
    "localhost",
    "LOCALHOST",
    "localhost.",
    "a.localhost",
    "localhost.localdomain",
    "10.0.0.1.nip.io",
    "127.0.0.1.nip.io",
    "169.254.169.254.nip.io",
    "127.0.0.1.sslip.io",
    "lvh.me",
    "app.lvh.me",
    # ordinary-looking names whose DNS answer is private: only the connect-time check can refuse them
    "intranet-wiki.example",
    "metadata-proxy.example",
    "ipv6-loopback.example",
    "dual-stack.example",  # A public, AAAA ::1
    "mixed-answer.example",  # A public and private in one answer
]
UNICODE = ["①②⑦.0.0.1", "127。0。0。1", "１２７.0.0.1"]
HOSTS = LOOPBACK_V4 + PRIVATE_V4 + METADATA + SPECIAL_V4 + IPV6 + NAMES + UNICODE

CONFUSION = [
    "http://evil.example@127.0.0.1/",
    "http://127.0.0.1#@evil.example/",
    "http://127.0.0.1\\@evil.example/",
    "http://[::ffff:127.0.0.1]/",
    "http://127.0.0.1:80:80/",
    "http://①②⑦.0.0.1/",
    "http://127。0。0。1/",
    "http://%31%32%37.0.0.1/",
    " http://127.0.0.1/",
    "http://127.0.0.1/ ",
    "\thttp://127.0.0.1/",
    "http://127.0.0.1/\t",
    "http://127.0.0.1\t/",
    "HtTp://127.0.0.1/",
    "http://user:pass@public-a.example/",
    "http://127.0.0.1%2f@public-a.example/",
    "http://public-a.example@10.0.0.1/",
    "http:/127.0.0.1/",
    "http:127.0.0.1/",
    "//127.0.0.1/",
]
SCHEMES = [
    "file:///etc/passwd",
    "gopher://127.0.0.1:6379/_INFO",
    "dict://127.0.0.1:11211/stat",
    "ftp://127.0.0.1/",
    "data:text/plain,hello",
    "jar:http://127.0.0.1!/",
    "netdoc:///etc/passwd",
    "ws://127.0.0.1/",
    "wss://127.0.0.1/",
]
URLS = CONFUSION + SCHEMES


def all_urls() -> list[str]:
    return [f"http://{host}/" for host in HOSTS] + URLS


# Public stand-ins: addresses bound to the sandbox's loopback interface (no packet leaves it).
PUBLIC_A = "1.2.3.4"
PUBLIC_B = "5.6.7.8"
PUBLIC_V6 = "2606:4700::1234"

DNS: dict[str, list[str]] = {
    "10.0.0.1.nip.io": ["10.0.0.1"],
    "127.0.0.1.nip.io": ["127.0.0.1"],
    "169.254.169.254.nip.io": ["169.254.169.254"],
    "127.0.0.1.sslip.io": ["127.0.0.1"],
    "lvh.me": ["127.0.0.1"],
    "app.lvh.me": ["127.0.0.1"],
    "metadata.google.internal": ["169.254.169.254"],
    "intranet-wiki.example": ["10.0.0.1"],
    "metadata-proxy.example": ["169.254.169.254"],
    "ipv6-loopback.example": ["::1"],
    "dual-stack.example": [PUBLIC_A, "::1"],
    "mixed-answer.example": [PUBLIC_A, "10.0.0.1"],
    "evil.example": [PUBLIC_A],
    "public-a.example": [PUBLIC_A],
    "public-b.example": [PUBLIC_B],
    "public-v6.example": [PUBLIC_V6],
    # SSRF-06: an allowlisted suffix, a name outside it, and one that only looks like it
    "api.corp.internal": ["10.9.9.9"],
    "deep.api.corp.internal": ["10.9.9.9"],
    "corp.internal": ["10.9.9.9"],
    "api.corp.internal.evil.example": ["10.9.9.9"],
}

# Addresses the sandbox binds on its loopback interface so that a connection to them would succeed:
# every unicast D.1 address, the public stand-ins, and SSRF-06's allowlisted and neighbouring hosts.
SANDBOX_V4 = [
    *PRIVATE_V4,
    "169.254.0.1",
    "169.254.169.254",
    "169.254.170.2",
    "169.254.169.253",
    "100.100.100.200",
    "192.0.0.192",
    "168.63.129.16",
    "100.64.0.1",
    "192.0.0.1",
    "192.0.2.1",
    "198.51.100.1",
    "203.0.113.1",
    "198.18.0.1",
    "10.1.2.3",
    "10.1.3.3",
    "10.9.9.9",
    PUBLIC_A,
    PUBLIC_B,
]
SANDBOX_V6 = [
    "fc00::1",
    "fd00::1",
    "fd00:ec2::254",
    "64:ff9b::a9fe:a9fe",
    "2002:7f00:1::",
    "2001:0:4136:e378:8000:63bf:80ff:fffe",
    PUBLIC_V6,
]
CANARY_PORTS = (80, 443, 6379, 11211, 21)
