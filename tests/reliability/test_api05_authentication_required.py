"""API-05: authentication is required, over real HTTP against `cosmogen serve`.

Reads /openapi.json at run time (so every route added later is covered) and calls every operation four
ways: without any credential, with an expired session, with a tampered session cookie (cookie calls
carry our Origin and the cookie's own CSRF token, so it is authentication that answers), and with a
revoked API token. Each answers 401 except the operations of the checked-in public allowlist
(snapshots/api05_public_operations.json), and the set of operations that answer without a credential
must equal that allowlist exactly: a new public route needs a reviewed snapshot change. The webhook
ingress `/hooks/{token}` (not in the spec: its path token is the credential) and `/openapi.json` are
public by design and checked too.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import update
from tests.integration.api.helpers import call, member_with_token
from tests.integration.api.sessions_support import (
    COOKIE,
    create_owner,
    login,
    member_with_password,
    request_status,
)
from tests.integration.conftest import serving

from cosmogen.domain.roles import Role
from cosmogen.identity import sessions
from cosmogen.identity.tokens import revoke_token
from cosmogen.store import Database
from cosmogen.store.tables import api_tokens
from cosmogen.store.tables import sessions as session_rows

SNAPSHOT = Path(__file__).parent / "snapshots" / "api05_public_operations.json"
METHODS = ("get", "post", "put", "patch", "delete", "head")
SAMPLE_ID = "00000000000000000000000000"


def operations(spec: dict[str, object]) -> list[tuple[str, str]]:
    paths = spec["paths"]
    assert isinstance(paths, dict)
    return sorted((m.upper(), p) for p, item in paths.items() for m in item if m in METHODS)


def _send(url: str, method: str, path: str, headers: dict[str, str]) -> int:
    target = url + re.sub(r"\{[^}]+\}", SAMPLE_ID, path)
    data = None
    if method in ("POST", "PUT", "PATCH", "DELETE"):
        data = b"{}"
        headers = {**headers, "Content-Type": "application/json"}
    return request_status(target, method, headers, data)[0]


def test_every_operation_needs_a_credential(tmp_path: Path) -> None:
    data = tmp_path / "cosmogen-data"
    allowlist = {tuple(op) for op in json.loads(SNAPSHOT.read_text())}
    with serving(tmp_path) as (url, _):
        create_owner(url, tmp_path / "serve.log")
        member_with_password(data, "expired@example.com", "a long enough passphrase")
        expired = login(url, "expired@example.com", "a long enough passphrase")
        live = login(url, "expired@example.com", "a long enough passphrase")
        tampered = live.cookie[:-1] + ("A" if live.cookie[-1] != "A" else "B")
        _, revoked = member_with_token(data, "revoked@example.com", Role.ADMIN)
        db = Database.open(data_dir=data)
        try:
            with db.engine.begin() as conn:
                past = datetime.now(UTC) - timedelta(seconds=1)
                mine = session_rows.c.session_hash == sessions.session_hash(expired.cookie)
                conn.execute(update(session_rows).where(mine).values(expires_at=past))
                token_id = conn.execute(api_tokens.select()).one().id
                revoke_token(token_id, past)(conn)
        finally:
            db.close()
        assert live.call("/api/v1/me")[0] == 200  # the untampered cookie works: tampering is what fails

        def with_cookie(value: str) -> dict[str, str]:
            return {"Cookie": f"{COOKIE}={value}", "Origin": url, "X-CSRF-Token": sessions.csrf_token(value)}

        ways = {
            "none": {},
            "expired session": with_cookie(expired.cookie),
            "tampered cookie": with_cookie(tampered),
            "revoked token": {"Authorization": f"Bearer {revoked}"},
        }
        spec = call(url + "/openapi.json")[2]
        ops = operations(spec)
        assert len(ops) >= 8 and ("GET", "/api/v1/me") in ops
        public: set[tuple[str, str]] = set()
        wrong: list[tuple[str, str, str, int]] = []
        for method, path in ops:
            for way, headers in ways.items():
                status = _send(url, method, path, headers)
                if way == "none" and status != 401:
                    public.add((method, path))
                if (method, path) not in allowlist and status != 401:
                    wrong.append((way, method, path, status))
        assert wrong == [], json.dumps(wrong)
        assert sorted(public) == sorted(allowlist)  # a new public operation needs a snapshot change
        assert allowlist <= set(ops), "the snapshot names an operation that no longer exists; update it"
        # Outside the spec: the webhook ingress answers on its path token alone, the spec is public.
        assert call(url + f"/hooks/{SAMPLE_ID}", "POST", body={})[0] == 404
        assert call(url + "/openapi.json")[0] == 200
