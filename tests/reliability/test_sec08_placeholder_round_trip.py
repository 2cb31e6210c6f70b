"""SEC-08, the placeholder round trip, over real HTTP against `cosmogen serve` on SQLite and PostgreSQL:

- a GET shows every stored secret field as the placeholder "********" (never the value, never the
  ciphertext), and the OpenAPI document marks every secret input `writeOnly`;
- a PATCH that sends the GET's placeholders back (with other changes) keeps each stored secret: the
  ciphertext rows are byte-for-byte the same, and the provider still accepts the key (a test call);
- a PATCH with a new value replaces it (new ciphertext; the provider's verdict follows the new value);
- nothing stores the placeholder as a value: a new account or a field that holds no secret yet is
  refused (422), and no row is written.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from tests.integration.api.accounts_helpers import member, open_store
from tests.integration.api.helpers import call
from tests.integration.conftest import serving

from cosmogen.domain.roles import Role
from cosmogen.store.tables import accounts, credentials
from cosmogen.testing.simulator import DEFAULT_API_KEY, Simulator, ThreadedSimulator

PLACEHOLDER = "********"


@pytest.fixture
def sim(monkeypatch: pytest.MonkeyPatch) -> Iterator[Simulator]:
    monkeypatch.setenv("COSMOGEN_EGRESS_ALLOW_NETWORKS", "127.0.0.1/32")  # the simulator, on purpose
    with ThreadedSimulator() as server:
        yield server


@pytest.fixture(params=["sqlite", "postgresql"])
def served_store(
    request: pytest.FixtureRequest, tmp_path: Path, sim: Simulator
) -> Iterator[tuple[str, str | None]]:
    database_url = request.getfixturevalue("clean_pg_url") if request.param == "postgresql" else None
    args = ["--no-sandbox"] + (["--database-url", database_url] if database_url else [])
    with serving(tmp_path, *args) as (url, _):
        yield url, database_url


def stored_rows(data: Path, database_url: str | None) -> dict[tuple[str, str], tuple[bytes, bytes]]:
    db = open_store(data, database_url)
    try:
        with db.engine.connect() as conn:
            rows = conn.execute(select(credentials)).all()
            return {(r.account_id, r.field): (bytes(r.ciphertext), bytes(r.wrapped_key)) for r in rows}
    finally:
        db.close()


def write_only_paths(spec: dict[str, Any]) -> set[str]:
    """Schema properties marked writeOnly, as "Model.property"."""
    found = set()
    for name, schema in spec["components"]["schemas"].items():
        for prop, value in (schema.get("properties") or {}).items():
            if value.get("writeOnly") is True:
                found.add(f"{name}.{prop}")
    return found


def test_sec08_placeholder_round_trip(
    served_store: tuple[str, str | None], sim: Simulator, tmp_path: Path
) -> None:
    url, database_url = served_store
    data = tmp_path / "cosmogen-data"
    _, admin = member(data, database_url, "ada@example.com", Role.ADMIN)
    accounts_url = url + "/api/v1/accounts"
    spec = call(url + "/openapi.json")[2]
    assert {"AccountCreate.secrets", "AccountPatch.secrets", "OAuthStart.client_secret"} <= write_only_paths(
        spec
    )

    api_key = {
        "name": "gpt",
        "provider": "openai",
        "base_url": sim.url,
        "secrets": {"api_key": DEFAULT_API_KEY},
    }
    basic = {"name": "site", "provider": "http", "auth_kind": "basic",
             "secrets": {"password": "pw-0c7e1d5b9a", "username": "robot"}}  # fmt: skip
    made = [call(accounts_url, "POST", token=admin, body=b)[2] for b in (api_key, basic)]
    assert [m.get("status") for m in made] == ["connected", "connected"], made
    listed = call(accounts_url, token=admin)[2]["accounts"]
    shown = {a["name"]: a["secrets"] for a in listed}
    assert shown == {
        "gpt": {"api_key": PLACEHOLDER},
        "site": {"password": PLACEHOLDER, "username": PLACEHOLDER},
    }
    text = json.dumps(listed)
    for secret in (DEFAULT_API_KEY, "pw-0c7e1d5b9a", "robot"):
        assert secret not in text
    before = stored_rows(data, database_url)
    assert len(before) == 3
    for ciphertext, wrapped in before.values():  # no ciphertext in any form either
        assert ciphertext.hex() not in text and wrapped.hex() not in text

    # The round trip: GET, change a little, PATCH the whole thing back, placeholders included.
    for account in made:
        got = call(f"{accounts_url}/{account['id']}", token=admin)[2]
        sent = {"tier": "production", "settings": {"note": "round trip"}, "secrets": got["secrets"]}
        status, _, patched = call(f"{accounts_url}/{account['id']}", "PATCH", token=admin, body=sent)
        assert status == 200, patched
        assert (patched["tier"], patched["secrets"]) == ("production", got["secrets"])
    assert stored_rows(data, database_url) == before  # every secret kept, byte for byte
    probes = sim.counts["openai.models"]
    tested = call(f"{accounts_url}/{made[0]['id']}/test", "POST", token=admin)
    assert tested[0] == 200 and tested[2]["status"] == "connected"  # the provider still takes the kept key
    assert sim.counts["openai.models"] == probes + 1

    # A new value replaces the stored one (and is tested: this one the provider refuses).
    status, _, problem = call(f"{accounts_url}/{made[0]['id']}", "PATCH", token=admin,
                              body={"secrets": {"api_key": "sk-replaced-0000"}})  # fmt: skip
    after = stored_rows(data, database_url)
    assert status == 422 and problem["code"] == "test_call_refused"
    assert after[(made[0]["id"], "api_key")] != before[(made[0]["id"], "api_key")]
    assert after[(made[1]["id"], "password")] == before[(made[1]["id"], "password")]

    # Nothing stores the placeholder as a value.
    refused = [
        (accounts_url, "POST", {**api_key, "name": "copy", "secrets": {"api_key": PLACEHOLDER}}),
        (accounts_url, "POST", {**basic, "name": "copy2", "secrets": {"password": PLACEHOLDER}}),
    ]
    db = open_store(data, database_url)
    try:
        with db.engine.begin() as conn:  # a basic account without a stored user name
            conn.execute(credentials.delete().where(credentials.c.field == "username"))
    finally:
        db.close()
    refused.append((f"{accounts_url}/{made[1]['id']}", "PATCH", {"secrets": {"username": PLACEHOLDER}}))
    rows = stored_rows(data, database_url)
    for target, method, body in refused:
        status, _, problem = call(target, method, token=admin, body=body)
        assert (status, problem["code"]) == (422, "placeholder_secret"), (body, problem)
    assert stored_rows(data, database_url) == rows
    db = open_store(data, database_url)
    try:
        with db.engine.connect() as conn:
            names = sorted(conn.execute(select(accounts.c.name)).scalars())
    finally:
        db.close()
    assert names == ["gpt", "site"]
