"""API-12: security headers on every answer, over real HTTP against `cosmogen serve`.

A snapshot of the headers on a public route, an API route, a credential route (login) and an error:
CSP with object-src 'none', base-uri 'none', frame-ancestors 'none'; nosniff; Referrer-Policy;
`Cache-Control: no-store` on the API; HSTS (max-age >= 1 year) only when the request came over TLS (here
through the trusted local proxy's X-Forwarded-Proto, which uvicorn honours from 127.0.0.1 only); TRACE
refused; no CORS (a preflight from another origin gets no Access-Control-Allow-* at all).
"""

from __future__ import annotations

from pathlib import Path

from tests.integration.api.helpers import call
from tests.integration.api.sessions_support import create_owner
from tests.integration.conftest import serving

from cosmogen.api.middleware import CSP

EXPECTED = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
}


def _lower(headers: dict[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


def test_headers_on_every_kind_of_answer(tmp_path: Path) -> None:
    with serving(tmp_path) as (url, _):
        owner = create_owner(url, tmp_path / "serve.log")
        answers = {
            "health": call(url + "/healthz"),
            "spec": call(url + "/openapi.json"),
            "api": owner.call("/api/v1/me"),
            "login": call(url + "/api/v1/session", "POST", body={"email": "x@y.z", "password": "wrong-pass"}),
            "unauthenticated": call(url + "/api/v1/me"),
            "not found": call(url + "/nothing"),
        }
        for name, (_, headers, _) in answers.items():
            got = _lower(headers)
            for key, value in EXPECTED.items():
                assert got.get(key) == value, (name, key, got.get(key))
            assert "strict-transport-security" not in got, name  # plain http: no HSTS
            assert "access-control-allow-origin" not in got, name
            if name in ("api", "login", "unauthenticated"):
                assert got["cache-control"] == "no-store", name
        for directive in ("object-src 'none'", "base-uri 'none'", "frame-ancestors 'none'"):
            assert directive in CSP
        assert answers["login"][0] == 401
        # Over TLS (a trusted proxy in front says so): HSTS for a year.
        _, headers, _ = call(url + "/healthz", headers={"X-Forwarded-Proto": "https"})
        hsts = _lower(headers)["strict-transport-security"]
        assert int(hsts.split("max-age=")[1].split(";")[0]) >= 31536000
        # TRACE refused everywhere, and no CORS preflight answer.
        for path in ("/healthz", "/api/v1/me", "/nothing"):
            status, headers, body = call(url + path, "TRACE")
            assert status == 405 and body["code"] == "method_not_allowed"
        status, headers, _ = call(url + "/api/v1/me", "OPTIONS", headers={
            "Origin": "https://evil.example", "Access-Control-Request-Method": "GET"})  # fmt: skip
        assert not [k for k in _lower(headers) if k.startswith("access-control-")]
