"""API-07: CSRF on cookie authentication, over real HTTP against `cosmogen serve`.

Every unsafe operation in /openapi.json (read at run time, so routes added later are covered) gets, with
a live session cookie: a cross-site form POST in each of urlencoded, multipart and text/plain with a
foreign Origin and no custom header; the same from our own origin without the CSRF token; and with a
wrong token (signing in, which makes a new session, needs only our Origin). Each answers 403 `csrf` and
the store is byte-for-byte unchanged. A GET and a HEAD on every operation change nothing either. With our
Origin and the session's token the check passes; an API token (Authorization header) needs neither.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from tests.integration.api.helpers import call, member_with_token
from tests.integration.api.sessions_support import COOKIE, create_owner, request_status, store_fingerprint
from tests.integration.conftest import serving

from cosmogen.api.middleware import SIGN_IN
from cosmogen.domain.roles import Role

UNSAFE = ("post", "put", "patch", "delete")
SAMPLE_ID = "00000000000000000000000000"


def operations(spec: dict[str, Any]) -> list[tuple[str, str]]:
    return [(method.upper(), path) for path, item in spec["paths"].items() for method in item
            if method in (*UNSAFE, "get", "head")]  # fmt: skip


def concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", SAMPLE_ID, path)


def test_every_unsafe_route_refuses_cross_site_and_tokenless_requests(tmp_path: Path) -> None:
    data = tmp_path / "cosmogen-data"
    with serving(tmp_path) as (url, _):
        owner = create_owner(url, tmp_path / "serve.log")
        spec = call(url + "/openapi.json")[2]
        ops = operations(spec)
        unsafe = [(m, p) for m, p in ops if m.lower() in UNSAFE]
        assert ("POST", "/api/v1/tokens") in unsafe and ("DELETE", "/api/v1/session") in unsafe
        before = store_fingerprint(data)
        cookie = f"{COOKIE}={owner.cookie}"
        forged = {
            "application/x-www-form-urlencoded": b"name=x&role=admin",
            "multipart/form-data; boundary=b": (
                b'--b\r\nContent-Disposition: form-data; name="name"\r\n\r\nx\r\n--b--\r\n'
            ),
            "text/plain": b'{"name": "x"}',
        }
        refused = 0
        for method, path in unsafe:
            target = url + concrete(path)
            for content_type, payload in forged.items():
                forged_headers = {
                    "Cookie": cookie,
                    "Origin": "https://evil.example",
                    "Content-Type": content_type,
                }
                status, _, body = request_status(target, method, forged_headers, payload)
                assert (status, body["code"]) == (403, "csrf"), (method, path, content_type, body)
                refused += 1
            variants: list[dict[str, str]] = [{"X-CSRF-Token": owner.csrf}]  # no Origin
            if (method, path) not in SIGN_IN:  # signing in needs our Origin only (see middleware)
                variants += [{"Origin": url}, {"Origin": url, "X-CSRF-Token": "0" * 64}]
            for headers in variants:
                status, _, body = call(target, method, body={}, headers={"Cookie": cookie, **headers})
                assert (status, body["code"]) == (403, "csrf"), (method, path, headers, body)
                refused += 1
        assert store_fingerprint(data) == before
        # No route changes anything on GET or HEAD (with the session: every check passes).
        for method, path in ops:
            if method in ("GET", "HEAD"):
                browser = {"Cookie": cookie, "Origin": url, "X-CSRF-Token": owner.csrf}
                request_status(url + concrete(path), method, browser)
                request_status(url + concrete(path), "HEAD", browser)
        assert store_fingerprint(data) == before
        # The real thing passes: our origin and the session's token; and a token needs neither.
        status, _, made = owner.call("/api/v1/tokens", "POST", body={"name": "ci"})
        assert status == 201, made
        _, token = member_with_token(data, "bot@example.com", Role.EDITOR)
        status, _, body = call(url + "/api/v1/tokens", "POST", token=token, body={"name": "ci"},
                               headers={"Cookie": cookie})  # fmt: skip
        assert status == 201 and body["user_id"] != made["user_id"]
        # A foreign Origin is refused even without a cookie (login CSRF).
        status, _, body = call(url + "/api/v1/session", "POST", body={"email": "a@b.c", "password": "x" * 8},
                               headers={"Origin": "https://evil.example"})  # fmt: skip
        assert (status, body["code"]) == (403, "csrf")
    assert refused == 6 * len(unsafe) - 2 * len(SIGN_IN)
