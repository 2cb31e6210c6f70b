"""OA-07 (refresh window), OA-08 (PKCE parameters) and OA-11 (open redirect after connecting)."""

from __future__ import annotations

import base64
import hashlib
import re
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cosmogen.domain.oauth import (
    OAuthError,
    authorization_request,
    expiry_from,
    refresh_due,
    s256_challenge,
    safe_return_to,
    state_hash,
)
from cosmogen.integrations.oauth import new_state, new_verifier

T = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def test_oa08_ten_thousand_verifiers_are_valid_distinct_and_their_challenges_are_s256() -> None:
    verifiers = [new_verifier() for _ in range(10_000)]
    assert len(set(verifiers)) == 10_000
    for verifier in verifiers[:2000]:
        assert 43 <= len(verifier) <= 128
        assert re.fullmatch(r"[A-Za-z0-9\-._~]+", verifier)
        digest = hashlib.sha256(verifier.encode()).digest()
        assert s256_challenge(verifier) == base64.urlsafe_b64encode(digest).decode().rstrip("=")
        assert "=" not in s256_challenge(verifier)
    # 48 random bytes: 384 bits, above the 256 bits asked for.
    assert len(base64.urlsafe_b64decode(verifiers[0] + "=" * (-len(verifiers[0]) % 4))) == 48


def test_the_rfc_7636_example_challenge() -> None:
    assert s256_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk") == (
        "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    )


@pytest.mark.parametrize("bad", ["", "short", "a" * 42, "a" * 129, "a" * 42 + "!", "ä" * 43])
def test_bad_verifiers_are_refused(bad: str) -> None:
    with pytest.raises(OAuthError, match="43 to 128"):
        s256_challenge(bad)


def test_authorization_request_sends_state_and_s256_challenge_never_the_verifier() -> None:
    verifier, state = new_verifier(), new_state()
    request = authorization_request(
        "https://as.example/authorize",
        client_id="c1",
        redirect_uri="https://studio.example/oauth/callback",
        scopes=("chat:write", "channels:read"),
        state=state,
        verifier=verifier,
    )
    query = parse_qs(urlsplit(request.url).query)
    assert query["code_challenge_method"] == ["S256"]
    assert query["code_challenge"] == [s256_challenge(verifier)]
    assert query["state"] == [state]
    assert query["scope"] == ["chat:write channels:read"]
    assert verifier not in request.url
    assert len(state) >= 22 and len(state_hash(state)) == 64


def test_a_short_state_or_a_plain_http_endpoint_is_refused() -> None:
    with pytest.raises(OAuthError, match="state"):
        authorization_request(
            "https://as.example/a",
            client_id="c",
            redirect_uri="r",
            scopes=(),
            state="abc",
            verifier=new_verifier(),
        )
    with pytest.raises(OAuthError, match="https"):
        authorization_request(
            "http://as.example/a",
            client_id="c",
            redirect_uri="r",
            scopes=(),
            state=new_state(),
            verifier=new_verifier(),
        )


def test_oa07_refresh_at_four_fifty_nine_not_at_five_oh_one() -> None:
    expires = T + timedelta(hours=1)
    assert not refresh_due(expires - timedelta(minutes=5, seconds=1), expires)
    assert refresh_due(expires - timedelta(minutes=4, seconds=59), expires)
    assert refresh_due(expires + timedelta(seconds=1), expires)
    assert not refresh_due(T, None)  # no expiry: only a 401 triggers a refresh
    assert not refresh_due(expires - timedelta(minutes=3), expires, window=timedelta(minutes=2))


@pytest.mark.parametrize(
    ("expires_in", "expected"),
    [
        (3600, T + timedelta(hours=1)),
        ("3600", T + timedelta(hours=1)),
        (None, None),
        ("soon", None),
        (0, None),
        (-5, None),
        (True, None),
        (10**12, None),
    ],
)
def test_expiry_from_token_responses(expires_in: object, expected: datetime | None) -> None:
    assert expiry_from(T, expires_in) == expected


OPEN_REDIRECTS = [
    "//evil.com",
    "/\\evil.com",
    "\\\\evil.com",
    "https:evil.com",
    "https://evil.com",
    "http://evil.com/",
    "%2F%2Fevil.com",
    "%2f%2fevil.com",
    "/%2F/evil.com",
    "/%5Cevil.com",
    "%252F%252Fevil.com",
    "javascript:alert(1)",
    "JavaScript:alert(1)",
    "data:text/html,x",
    "vbscript:x",
    "//evil.com/%2F..",
    "///evil.com",
    "////evil.com",
    "/\t/evil.com",
    "/\n/evil.com",
    "/%09/evil.com",
    "/%0d%0a/evil.com",
    "https://user@evil.com",
    "//user:pass@evil.com",
    "/ /evil.com",
    "evil.com",
    "@evil.com",
    "./evil",
    "../evil",
    " /x",
    "/x\x00",
    "\u3002evil.com",
    "//evil%E3%80%82com",
    "/\u2028/evil.com",
    "//\u200bevil.com",
    "/\u200b/evil.com",
    "http:/evil.com",
    "http:\\\\evil.com",
    "ftp://evil.com",
    "//evil.com?next=/",
    "https:/\\evil.com",
    "/%5C%5Cevil.com",
    "%5C%5Cevil.com",
    "%00//evil.com",
    "//localhost",
    "//127.0.0.1",
    "//[::1]",
    "file:///etc/passwd",
    "/" + "a" * 3000,
    "",
]


def test_oa11_fifty_open_redirect_payloads_all_become_root() -> None:
    assert len(OPEN_REDIRECTS) >= 50
    assert [p for p in OPEN_REDIRECTS if safe_return_to(p) != "/"] == []
    assert safe_return_to(None) == "/"


@pytest.mark.parametrize("good", ["/", "/studio", "/universes/abc?tab=runs#top", "/a/b-c_d.e~f"])
def test_same_origin_paths_are_kept(good: str) -> None:
    assert safe_return_to(good) == good


@given(st.text(max_size=60))
def test_whatever_safe_return_to_keeps_has_no_host(value: str) -> None:
    kept = safe_return_to(value)
    parts = urlsplit(kept)
    assert kept.startswith("/") and not kept.startswith("//")
    assert not parts.scheme and not parts.netloc
