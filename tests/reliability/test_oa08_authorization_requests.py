"""OA-08: PKCE parameters of 10,000 authorization requests built the way a connection builds them (a fresh
state and verifier from `secrets`, the URL from domain.oauth.authorization_request), plus requests made
by the real start_connect on SQLite, whose sealed verifier must match the challenge it sent.

Pass bar: verifier length 43-128 from [A-Za-z0-9-._~] with >= 256 bits from `secrets`; challenge =
b64url(sha256(v)) without padding; method always S256, never plain; 0 duplicates."""

from __future__ import annotations

import base64
import hashlib
import re
import string
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select

from cosmogen.domain.capabilities import default_registry
from cosmogen.domain.oauth import authorization_request, requested_scopes, s256_challenge
from cosmogen.integrations import credentials, keystore
from cosmogen.integrations.oauth import new_state, new_verifier
from cosmogen.integrations.oauth_flow import ConnectRequest, new_session, start_connect
from cosmogen.integrations.vault import KeySource
from cosmogen.store import Database, GroupCommitWriter, migrate
from cosmogen.store.tables import oauth_flows, utcnow

ALPHABET = string.ascii_letters + string.digits + "-._~"
VERIFIER = re.compile(r"[A-Za-z0-9\-._~]{43,128}")


def b64url_sha256(text: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(text.encode("ascii")).digest()).decode().rstrip("=")


def check(url: str, verifier: str) -> dict[str, list[str]]:
    query = parse_qs(urlsplit(url).query, keep_blank_values=True)
    assert query["code_challenge_method"] == ["S256"]
    assert "plain" not in [value for values in query.values() for value in values]
    [challenge] = query["code_challenge"]
    assert challenge == b64url_sha256(verifier) and "=" not in challenge and len(challenge) == 43
    assert verifier not in url  # the verifier never leaves
    assert VERIFIER.fullmatch(verifier)
    return query


def test_oa08_ten_thousand_authorization_requests() -> None:
    verifiers, states, challenges = set(), set(), set()
    for _ in range(10_000):
        verifier, state = new_verifier(), new_state()
        url = authorization_request(
            "https://slack.com/oauth/v2/authorize",
            client_id="c1",
            redirect_uri="http://127.0.0.1:8420/oauth/callback",
            scopes=("chat:write",),
            state=state,
            verifier=verifier,
        ).url
        query = check(url, verifier)
        assert query["state"] == [state]
        # >= 256 bits: the verifier is 48 random bytes from `secrets` (384 bits), base64url-encoded.
        assert len(base64.urlsafe_b64decode(verifier + "=" * (-len(verifier) % 4))) * 8 >= 256
        verifiers.add(verifier)
        states.add(state)
        challenges.add(query["code_challenge"][0])
    assert len(verifiers) == len(states) == len(challenges) == 10_000  # 0 duplicates


def test_oa08_start_connect_sends_the_challenge_of_the_verifier_it_sealed(tmp_path: Path) -> None:
    db = Database.open(data_dir=tmp_path / "data")
    migrate.upgrade(db)
    vault = keystore.open_vault(db, KeySource.for_data_dir(tmp_path / "keys"))
    registry = default_registry()
    sent: dict[str, str] = {}
    with GroupCommitWriter(db) as writer:
        for i in range(200):
            request = ConnectRequest(
                workspace="default",
                name=f"team-{i}",
                provider=registry.providers["slack"],
                client_id="c1",
                client_secret=None,
                settings={},
                scopes=requested_scopes(registry, "slack"),
                redirect_uri="http://127.0.0.1:8420/oauth/callback",
                session=new_session(),
            )
            write, _ = start_connect(vault, request, utcnow)
            started = writer.submit(write).result()
            sent[started.state_hash] = started.authorization_url
    with db.engine.connect() as conn:
        for flow in conn.execute(select(oauth_flows)):
            workspace = "default"
            verifier = vault.decrypt(
                workspace,
                flow.account_id,
                credentials.oauth_verifier_field(flow.state_hash),
                bytes(flow.verifier_ciphertext),
                bytes(flow.verifier_wrapped_key),
                flow.key_id,
            ).reveal()
            check(sent.pop(flow.state_hash), verifier)
    db.close()
    assert sent == {}  # every request has its flow, and every flow its request


@given(st.text(alphabet=ALPHABET, min_size=43, max_size=128))
def test_oa08_the_challenge_of_any_valid_verifier_is_unpadded_b64url_sha256(verifier: str) -> None:
    assert s256_challenge(verifier) == b64url_sha256(verifier)
