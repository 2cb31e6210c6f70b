"""SSRF-03: redirects are followed hop by hop under the same checks, at most 5.

In the sandbox network namespace (tests/ssrf/sandbox.py) a public mock (public-a.example, 1.2.3.4)
answers 302 (and 301, 303, 307, 308) to every D.1 address and string, redirects in chains, redirects to a
URL with user information, and redirects to a second public host (public-b.example, 5.6.7.8) and to
another port, while the request carries Authorization, Cookie and API-key headers. Canary listeners on
every D.1 address count connections.

Which redirects are followed (integrations/http.py): GET/HEAD all five; 303 as a GET for any method;
307/308 keep method and body only for a request that may be repeated (idempotent method or idempotency
key); 301/302 of other methods, and anything with follow_redirects=False, come back as the answer.
"""

from __future__ import annotations

import pytest
from tests.ssrf import sandbox
from tests.ssrf.vectors import PUBLIC_A, PUBLIC_B

CREDENTIALS = {"authorization", "cookie", "proxy-authorization", "x-api-key", "x-custom-token"}
# RFC 3986 reads a same-scheme reference without "//" as relative: these stay on the public host.
RELATIVE = {"http:/127.0.0.1/", "http:127.0.0.1/"}


@pytest.fixture(scope="module")
def outcome() -> dict:
    return sandbox.run("ssrf03")


def test_a_redirect_to_any_d1_vector_is_refused_at_that_hop(outcome: dict) -> None:
    vectors = outcome["vectors"]
    assert len(vectors) > 85
    for url, result in vectors.items():
        if url in RELATIVE:
            assert result["body"]["local"] == PUBLIC_A and result["url"].startswith(
                "http://public-a.example/"
            )
            continue
        assert result["refused"] and result["kind"] == "egress", (url, result)
        assert f"egress blocked ({result['rule']}) at redirect 1:" in result["message"], url
    assert outcome["vector_hits"] == [] and outcome["all_hits"] == []


def test_every_redirect_status_is_checked_when_followed(outcome: dict) -> None:
    for case, result in outcome["statuses"].items():
        status, method = case.split()
        followed = method == "GET" or status in ("303", "307", "308")  # PUT and POST carry a key here
        if followed:
            assert result["refused"] and result["rule"] == "address", case
            assert "at redirect 1" in result["message"]
        else:
            assert result["status"] == int(status), case  # handed back, never followed


def test_the_sixth_redirect_is_refused(outcome: dict) -> None:
    assert outcome["chain5"]["status"] == 200 and outcome["chain5"]["redirects"] == 5
    assert outcome["chain6"]["refused"] and outcome["chain6"]["rule"] == "redirect"
    assert "at redirect 6" in outcome["chain6"]["message"]
    six = [f"/chain/{n}" for n in range(6, 0, -1)]
    assert outcome["chain_paths"] == [f"/chain/{n}" for n in range(5, -1, -1)] + six  # /chain/0 never asked


def test_userinfo_in_location_is_refused_before_connecting(outcome: dict) -> None:
    assert outcome["userinfo"]["refused"] and outcome["userinfo"]["rule"] == "userinfo"
    assert [local for local, _ in outcome["userinfo_requests"]] == [PUBLIC_A]  # nothing reached public-b
    assert "secret" not in outcome["userinfo"]["message"]


@pytest.mark.parametrize("case", ["cross_host", "cross_port"])
def test_credentials_are_dropped_across_origins(outcome: dict, case: str) -> None:
    result = outcome[case]
    assert result["status"] == 200 and result["redirects"] == 1
    arrived = result["body"]["headers"]
    assert CREDENTIALS.isdisjoint(arrived), arrived
    assert arrived["accept"] == "application/json" and arrived["user-agent"] == "cosmogen-test"
    assert arrived["idempotency-key"] == "key-123"
    assert result["body"]["local"] == (PUBLIC_B if case == "cross_host" else PUBLIC_A)


def test_credentials_stay_on_the_same_origin(outcome: dict) -> None:
    arrived = outcome["same_origin"]["body"]["headers"]
    assert set(arrived) >= CREDENTIALS


def test_methods_and_bodies_follow_the_rules(outcome: dict) -> None:
    assert outcome["post_303"]["body"]["method"] == "GET" and outcome["post_303"]["body"]["body"] == ""
    assert "content-type" not in outcome["post_303"]["body"]["headers"]
    assert outcome["post_307_keyed"]["body"]["method"] == "POST"
    assert outcome["post_307_keyed"]["body"]["body"] == '{"a": 1}'
    assert outcome["put_308"]["body"]["method"] == "PUT" and outcome["put_308"]["body"]["body"] == '{"a": 2}'
    assert outcome["post_307_bare"]["status"] == 307  # a bare POST is not sent twice
    assert outcome["post_302"]["status"] == 302


def test_follow_redirects_false_returns_the_redirect(outcome: dict) -> None:
    assert outcome["not_followed"]["status"] == 302 and outcome["not_followed_requests"] == 1


def test_the_http_node_follows_and_refuses_or_opts_out(outcome: dict) -> None:
    followed, opted_out = outcome["node"]
    assert followed["refused"] and followed["kind"] == "egress" and followed["rule"] == "address"
    assert "at redirect 1" in followed["message"]
    assert not opted_out["refused"] and opted_out["status"] == 302
