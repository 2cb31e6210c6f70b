"""SSRF-01: every address and string of reliability.md D.1 is refused on every path that sends a request,
and no connection reaches a canary.

Runs in a fresh network namespace (tests/ssrf/sandbox.py) where the D.1 addresses really exist: 127.0.0.1,
::1, 10.0.0.1, 169.254.169.254, fd00:ec2::254 and the rest are bound on the namespace's loopback interface
and canary listeners accept on every address (ports 80, 443, 6379, 11211, 21), and a stub DNS server
answers the D.1 names (nip.io, sslip.io, lvh.me, names whose A or AAAA record is private) through the
production resolver. The guard runs with no configuration at all. Paths: an http binding run through the
runtime (URL filled from entity state), a provider account whose base URL is the vector (run through the
runtime), and an OAuth token endpoint (integrations/oauth.py token_call). A webhook-call node does not
exist yet; outbound notifications neither.

A control at the end opens the guard on purpose and reaches the canaries, so "0 connections" means the
guard refused, not that nothing was listening.
"""

from __future__ import annotations

import pytest
from tests.ssrf import sandbox
from tests.ssrf.vectors import DNS, METADATA, SCHEMES

RULES = {"scheme", "url-syntax", "userinfo", "host-name", "metadata", "address"}


@pytest.fixture(scope="module")
def outcome() -> dict:
    return sandbox.run("ssrf01")


@pytest.mark.parametrize("path", ["http_node", "provider_base_url", "oauth_token_url"])
def test_every_vector_is_refused_by_the_guard_naming_its_rule(outcome: dict, path: str) -> None:
    rows = outcome["paths"][path]
    assert len(rows) == len(outcome["urls"]) > 90
    wrong = {
        url: row
        for url, row in zip(outcome["urls"], rows, strict=True)
        if not (row["refused"] and row["kind"] == "egress" and row["rule"] in RULES)
        or f"egress blocked ({row['rule']})" not in row["message"]
    }
    assert wrong == {}


@pytest.mark.parametrize("path", ["http_node", "provider_base_url", "oauth_token_url"])
def test_rules_match_the_kind_of_vector(outcome: dict, path: str) -> None:
    rule = dict(zip(outcome["urls"], (row["rule"] for row in outcome["paths"][path]), strict=True))
    for url in SCHEMES:
        assert rule[url] == "scheme", url
    for host in METADATA:
        if host != "169.254.0.1":  # link-local, not a metadata endpoint: the address rule
            assert rule[f"http://{host}/"] == "metadata", host
    assert rule["http://metadata-proxy.example/"] == "metadata"  # only its DNS answer says so
    assert rule["http://intranet-wiki.example/"] == "address"
    assert rule["http://evil.example@127.0.0.1/"] == "userinfo"


@pytest.mark.parametrize("path", ["http_node", "provider_base_url", "oauth_token_url"])
def test_messages_never_show_a_resolved_address(outcome: dict, path: str) -> None:
    for url, row in zip(outcome["urls"], outcome["paths"][path], strict=True):
        name = url.split("//", 1)[-1].split("/", 1)[0]
        shown = row["message"].replace(name.lower(), "<host>")  # the host as written may be shown
        for address in DNS.get(name, []):
            assert address not in shown, (url, row["message"])
    mixed = outcome["paths"][path][outcome["urls"].index("http://mixed-answer.example/")]
    assert "every address must be public" in mixed["message"]


def test_no_canary_accepted_a_connection(outcome: dict) -> None:
    assert outcome["canary_hits"] == []
    assert outcome["dns_queries"] > 0  # the names were really resolved, then refused


def test_control_the_canaries_are_reachable_when_the_guard_is_opened_on_purpose(outcome: dict) -> None:
    assert {url: row["status"] for url, row in outcome["control"].items()} == dict.fromkeys(
        outcome["control"], 200
    )
    reached = {address for address, _ in outcome["control_hits"]}
    assert reached == {"127.0.0.1", "::1", "10.0.0.1", "169.254.169.254", "fd00:ec2::254"}
