"""SSRF-02: DNS rebinding. A stub DNS server answers a name alternately with a public address and a
private one (127.0.0.1, 169.254.169.254, 10.0.0.1, ::1, fd00:ec2::254 in turn), TTL 0, and the client
asks it through the production resolver (glibc getaddrinfo via aiohttp's ThreadedResolver).

Runs in the sandbox network namespace (tests/ssrf/sandbox.py): 1.2.3.4 is the public stand-in, bound on
the namespace's loopback like every private address, and a listener on every address records which
address each connection reached, its Host header and (TLS) the SNI name. So "the public test address"
is reachable without allowlisting anything, and a connection to a private address would be counted.

Passes when: 0 connections to private addresses; one lookup per request, and request n is refused exactly
when lookup n answered private (the address checked is the address connected to: no second lookup);
Host and SNI carry the name; answers mixing public and private addresses are refused outright. With the
production DNS cache (10 s) only checked answers are cached.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.ssrf import sandbox
from tests.ssrf.tls import write_certificates
from tests.ssrf.vectors import PUBLIC_A

REQUESTS = 200  # reliability.md: CI 200, soak 10,000
TLS_REQUESTS = 20


@pytest.fixture(scope="module")
def outcome(tmp_path_factory: pytest.TempPathFactory) -> dict:
    directory: Path = tmp_path_factory.mktemp("tls")
    ca, cert, key = write_certificates(directory, ["rebind-tls.example"])
    return sandbox.run(
        "ssrf02",
        env={"SSL_CERT_FILE": str(ca)},  # the client trusts this CA and nothing else
        requests=REQUESTS,
        tls_requests=TLS_REQUESTS,
        cert=str(cert),
        key=str(key),
    )


@pytest.mark.parametrize("part", ["plain", "tls"])
def test_each_request_is_decided_on_its_one_lookup(outcome: dict, part: str) -> None:
    outcomes, answers = outcome[part]["outcomes"], outcome[part]["answers"]
    assert len(answers) == len(outcomes) == (REQUESTS if part == "plain" else TLS_REQUESTS)
    for n, (answer, result) in enumerate(zip(answers, outcomes, strict=True)):
        if answer == PUBLIC_A:
            assert not result["refused"] and result["status"] == 200, (n, result)
            assert result["body"]["local"] == PUBLIC_A and result["body"]["path"] == f"/{n}"
        else:
            assert result["refused"] and result["kind"] == "egress", (n, answer, result)
            assert result["rule"] in ("address", "metadata")
            assert answer not in result["message"]
    assert sum(a != PUBLIC_A for a in answers) == len(answers) // 2  # the attack was really attempted


def test_no_connection_reaches_a_private_address(outcome: dict) -> None:
    assert {local for local, _ in outcome["accepted"]} == {PUBLIC_A}
    assert len(outcome["accepted"]) == REQUESTS // 2 + TLS_REQUESTS // 2 + 49


def test_host_and_sni_carry_the_name(outcome: dict) -> None:
    hosts = {(r["local"], r["host"]) for r in outcome["requests"]}
    assert hosts == {
        (PUBLIC_A, "rebind.example"),
        (PUBLIC_A, "rebind-tls.example:8443"),
        (PUBLIC_A, "rebind-cached.example"),
    }
    assert outcome["tls"]["sni"] == ["rebind-tls.example"] * (TLS_REQUESTS // 2)


def test_a_mixed_answer_is_refused_outright(outcome: dict) -> None:
    for name, result in outcome["mixed"].items():
        assert result["refused"] and result["kind"] == "egress", name
        assert "every address must be public" in result["message"]
    assert outcome["mixed_hits"] == []  # not even the public address of the answer was tried


def test_the_dns_cache_keeps_only_checked_answers(outcome: dict) -> None:
    cached = outcome["cached"]
    assert cached["answers"] == ["127.0.0.1", PUBLIC_A]  # refused answer not cached; the next one is
    assert [r["refused"] for r in cached["outcomes"]] == [True] + [False] * 49
