"""API-13: inbound webhook triggers, signed, over real HTTP (uvicorn on 127.0.0.1, aiohttp), on SQLite and
PostgreSQL, with a real vault holding the signing secrets.

Guessed path tokens get 404; a missing, malformed or wrong signature and a timestamp 301 s off get 401
saying what is wrong (and nothing else); the same delivery twice starts 1 run; a 20 MiB body gets 413;
rotation keeps the previous secret valid for its grace period only; a secret sealed for one trigger
does not verify for another; a trigger made before signing existed keeps working unsigned until it gets
a secret. No rejected request starts a run or records a delivery.
"""

from __future__ import annotations

import asyncio
import re
import secrets
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select, update
from tests.integration.runtime.hook_harness import Hook, Server, serving

from cosmogen.api.webhooks import MAX_BODY_BYTES
from cosmogen.domain import webhook_signature as sig
from cosmogen.domain.schedule import WebhookSpec
from cosmogen.integrations import webhook_secrets as signing
from cosmogen.runtime import launches as launch_store
from cosmogen.runtime.service import RuntimeSettings
from cosmogen.store import Database, migrate
from cosmogen.store.tables import triggers, webhook_deliveries, webhook_secrets

TOKEN = re.compile(r"/hooks/([A-Za-z0-9_-]+)$")


@pytest.fixture(params=["sqlite", "postgresql"])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RuntimeSettings]:
    base = RuntimeSettings(data_dir=tmp_path / "data")
    if request.param == "sqlite":
        yield base
    else:
        yield replace(base, database_url=request.getfixturevalue("clean_pg_url"))


def run(settings: RuntimeSettings, body: Callable[[Server], Awaitable[None]]) -> None:
    async def main() -> None:
        assert settings.data_dir is not None
        async with serving(settings, settings.data_dir) as server:
            await body(server)

    asyncio.run(main())


def deliveries(server: Server) -> int:
    with server.db.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(webhook_deliveries)).scalar_one())


def test_a_signed_delivery_starts_its_run_and_the_secret_is_stored_sealed(settings: RuntimeSettings) -> None:
    async def body(server: Server) -> None:
        hook = await server.launch()
        assert hook.secret is not None and hook.secret.startswith(b"whsec_")
        assert len(hook.secret) == len("whsec_") + 43  # 256 bits, base64url
        status, answer, _ = await server.post(hook, {"order": 42}, headers={"X-Cosmogen-Delivery": "d-1"})
        assert status == 202, answer
        assert server.runs_of(hook) == 1
        assert server.start_run.calls[0].event == {"name": "webhook", "data": {"order": 42}}
        with server.db.engine.connect() as conn:
            spec = conn.execute(select(triggers.c.spec).where(triggers.c.id == hook.trigger_id)).scalar_one()
            rows = conn.execute(select(webhook_secrets)).all()
            # The secret is nowhere in clear: not in its row, nor in any trigger or launch column.
            every_value = [*(v for r in rows for v in r), *conn.execute(select(triggers)).one()]
        assert spec["signed"] is True
        assert len(rows) == 1 and rows[0].key_id == "k1" and rows[0].expires_at is None
        for value in every_value:
            as_bytes = value if isinstance(value, bytes) else str(value).encode()
            assert hook.secret not in as_bytes and hook.secret[6:] not in as_bytes
        if server.db.dialect == "sqlite":
            assert settings.data_dir is not None
            for path in settings.data_dir.glob("cosmogen.db*"):
                assert hook.secret[6:] not in path.read_bytes(), path

    run(settings, body)


def test_every_bad_signature_is_401_saying_what_is_wrong(settings: RuntimeSettings) -> None:
    async def body(server: Server) -> None:
        hook = await server.launch()
        assert hook.secret is not None
        other = b"whsec_" + secrets.token_urlsafe(32).encode()
        payload = b'{"n": 1}'
        cases: list[tuple[dict[str, object], str, str]] = [
            ({"sign_with": []}, "signature_missing", "this webhook requires a signature"),
            (
                {"headers": {sig.SIGNATURE_HEADER: "sha256=abc"}},
                "signature_malformed",
                "has no t=<Unix time>",
            ),
            ({"sign_with": [other]}, "signature_invalid", "does not match"),
            ({"age_s": 301}, "signature_expired", "301 s old"),
            ({"age_s": -301}, "signature_expired", "301 s in the future"),
        ]
        for kwargs, code, phrase in cases:
            if "headers" in kwargs:
                kwargs = {**kwargs, "sign_with": []}
            status, answer, headers = await server.post(hook, raw=payload, **kwargs)  # type: ignore[arg-type]
            assert status == 401, (kwargs, answer)
            assert answer["error"]["code"] == code
            assert phrase in answer["error"]["message"]
            assert headers["WWW-Authenticate"] == 'HMAC-SHA256 header="X-Cosmogen-Signature"'
            text = str(answer) + str(headers)
            assert hook.secret.decode() not in text and other.decode() not in text
            now = int(server.clock().timestamp())
            for t in (now, now - 301, now + 301):
                assert sig.compute(hook.secret, t, payload) not in text  # never the expected signature
        # A valid signature over other bytes than those sent.
        header = server.signature([hook.secret], b'{"n": 2}')
        status, answer, _ = await server.post(
            hook, raw=payload, sign_with=[], headers={sig.SIGNATURE_HEADER: header}
        )
        assert (status, answer["error"]["code"]) == (401, "signature_invalid")
        # A body that is not JSON at all, or the wrong content type, is still first refused as unsigned:
        # nothing about the launch or the body is said to a sender that is not authenticated.
        status, answer, _ = await server.post(hook, raw=b"not json", sign_with=[])
        assert (status, answer["error"]["code"]) == (401, "signature_missing")
        assert server.runs_of(hook) == 0 and deliveries(server) == 0
        # Right at the edge of the window it is accepted.
        status, _, _ = await server.post(hook, raw=payload, age_s=300)
        assert status == 202
        assert server.runs_of(hook) == 1

    run(settings, body)


def test_a_paused_launch_is_revealed_only_to_a_signed_request(settings: RuntimeSettings) -> None:
    async def body(server: Server) -> None:
        hook = await server.launch()
        await server.writer.write(launch_store.pause(hook.launch_id, now=server.clock()))
        status, answer, _ = await server.post(hook, {"n": 1}, sign_with=[])
        assert (status, answer["error"]["code"]) == (401, "signature_missing")
        status, answer, _ = await server.post(hook, {"n": 1})
        assert (status, answer["error"]["code"]) == (409, "launch_not_live")
        assert server.runs_of(hook) == 0

    run(settings, body)


def test_guessed_tokens_get_the_same_404_and_tokens_carry_256_bits(settings: RuntimeSettings) -> None:
    async def body(server: Server) -> None:
        hook = await server.launch()
        match = TOKEN.search(hook.url)
        assert match is not None
        token = match.group(1)
        assert len(token) == 43  # secrets.token_urlsafe(32): 256 bits, far above API-13's 128
        guesses = [secrets.token_urlsafe(32) for _ in range(50)] + [token[:-1], token + "A", token.upper()]
        for guess in guesses:
            async with server.http.post(
                f"{server.base}/hooks/{guess}", data=b"{}", headers={"Content-Type": "application/json"}
            ) as response:
                assert response.status == 404
                assert await response.json() == {
                    "error": {"code": "not_found", "message": "no webhook at this address"}
                }
        assert server.runs_of(hook) == 0

    run(settings, body)


def test_the_same_delivery_twice_starts_one_run_and_20_mib_is_413(settings: RuntimeSettings) -> None:
    async def body(server: Server) -> None:
        hook = await server.launch()
        first = await server.post(hook, {"n": 1}, headers={"X-Cosmogen-Delivery": "once"})
        server.clock.advance(seconds=30)  # a retry, signed afresh
        again = await server.post(hook, {"n": 1}, headers={"X-Cosmogen-Delivery": "once"})
        assert (first[0], again[:2]) == (202, (200, {"duplicate": True}))
        assert server.runs_of(hook) == 1
        big = b'{"pad": "' + b"x" * (20 * 1024 * 1024) + b'"}'
        status, answer, _ = await server.post(hook, raw=big)
        assert (status, answer["error"]["code"]) == (413, "too_large")
        assert str(MAX_BODY_BYTES) in answer["error"]["message"]
        assert server.runs_of(hook) == 1

    run(settings, body)


def test_rotation_keeps_the_previous_secret_for_its_grace_only(settings: RuntimeSettings) -> None:
    async def body(server: Server) -> None:
        hook = await server.launch()
        assert hook.secret is not None
        old = hook.secret
        new = await server.writer.write(
            launch_store.rotate_webhook_secret(
                server.vault, hook.trigger_id, grace=timedelta(hours=1), now=server.clock()
            )
        )
        new_key = new.reveal().encode()
        assert new_key != old
        with server.db.engine.connect() as conn:
            shown = launch_store.reveal_webhook_secrets(
                conn, server.vault, hook.trigger_id, now=server.clock()
            )
        assert [s.secret.reveal().encode() for s in shown] == [new_key, old]  # current first
        assert shown[0].expires_at is None and shown[1].expires_at == server.clock() + timedelta(hours=1)
        for i, key in enumerate([old, new_key]):
            assert (await server.post(hook, {"i": i}, sign_with=[key]))[0] == 202
        # A sender signing with both while it switches over is accepted too.
        assert (await server.post(hook, {"i": 2}, sign_with=[old, new_key]))[0] == 202
        server.clock.advance(hours=1, seconds=1)
        status, answer, _ = await server.post(hook, {"i": 3}, sign_with=[old])
        assert (status, answer["error"]["code"]) == (401, "signature_invalid")
        assert (await server.post(hook, {"i": 4}, sign_with=[new_key]))[0] == 202
        # Two rotations in a row: only the last two secrets work; with no grace, only the newest.
        newer = await server.writer.write(
            launch_store.rotate_webhook_secret(server.vault, hook.trigger_id, now=server.clock())
        )
        newest = await server.writer.write(
            launch_store.rotate_webhook_secret(
                server.vault, hook.trigger_id, grace=timedelta(0), now=server.clock()
            )
        )
        for key, expected in (
            (new_key, 401),
            (newer.reveal().encode(), 401),
            (newest.reveal().encode(), 202),
        ):
            assert (await server.post(hook, {"k": key.decode()[-6:]}, sign_with=[key]))[0] == expected
        with server.db.engine.connect() as conn:
            left = conn.execute(select(func.count()).select_from(webhook_secrets)).scalar_one()
        assert left == 1
        assert server.runs_of(hook) == 5

    run(settings, body)


def test_a_secret_moved_to_another_trigger_does_not_verify_there(settings: RuntimeSettings) -> None:
    """The associated data binds (workspace, trigger, secret id): an attacker with write access to the
    database who copies trigger A's sealed secret over trigger B's gains nothing."""

    async def body(server: Server) -> None:
        a = await server.launch(name="a")
        b = await server.launch(name="b", workspace="other")
        assert a.secret is not None and b.secret is not None

        with server.db.engine.begin() as conn:
            row = conn.execute(
                select(webhook_secrets).where(webhook_secrets.c.trigger_id == a.trigger_id)
            ).one()
            conn.execute(
                update(webhook_secrets)
                .where(webhook_secrets.c.trigger_id == b.trigger_id)
                .values(ciphertext=row.ciphertext, wrapped_key=row.wrapped_key, key_id=row.key_id)
            )
        for key in (a.secret, b.secret):
            status, answer, _ = await server.post(b, {"n": 1}, sign_with=[key])
            assert (status, answer["error"]["code"]) == (401, "signature_invalid")
        assert (await server.post(a, {"n": 1}))[0] == 202  # A's own row is untouched
        assert server.runs_of(b) == 0

    run(settings, body)


def test_an_unsigned_trigger_keeps_working_until_it_gets_a_secret(settings: RuntimeSettings) -> None:
    async def body(server: Server) -> None:
        hook = await server.launch(WebhookSpec(signed=False))
        assert hook.secret is None
        assert (await server.post(hook, {"n": 1}))[0] == 202  # no signature needed
        secret = await server.writer.write(
            launch_store.rotate_webhook_secret(server.vault, hook.trigger_id, now=server.clock())
        )
        # The trigger is signed from now on (the spec says so; find_webhook reads it per request).
        status, answer, _ = await server.post(hook, {"n": 2})
        assert (status, answer["error"]["code"]) == (401, "signature_missing")
        signed = Hook(hook.trigger_id, hook.launch_id, hook.url, secret.reveal().encode())
        assert (await server.post(signed, {"n": 2}))[0] == 202
        with pytest.raises(signing.NoSuchWebhook, match="no webhook trigger 'nope'"):
            await server.writer.write(launch_store.rotate_webhook_secret(server.vault, "nope"))
        assert server.runs_of(hook) == 2

    run(settings, body)


def test_a_webhook_trigger_from_before_revision_0009_is_migrated_to_unsigned(tmp_path: Path) -> None:
    """Revision 0009 marks existing webhook triggers `"signed": false` (they have no secret); anything
    else would lock their senders out on upgrade. New triggers are signed."""
    db = Database.open(data_dir=tmp_path / "data")
    try:
        migrate.upgrade(db, "0008")
        with db.engine.begin() as conn:
            conn.exec_driver_sql(
                "INSERT INTO universes (id, workspace_id, name, created_at, updated_at, deployment_status) "
                "VALUES ('u', 'default', 'old', '2030-01-01 00:00:00', '2030-01-01 00:00:00', 'live')"
            )
            conn.exec_driver_sql(
                "INSERT INTO universe_versions (id, universe_id, number, document, document_sha256, "
                "created_at) VALUES ('v', 'u', 1, '{}', 'x', '2030-01-01 00:00:00')"
            )
            conn.exec_driver_sql(
                "INSERT INTO launches (id, universe_id, version_id, config, status, created_at, updated_at) "
                "VALUES ('l', 'u', 'v', '{}', 'live', '2030-01-01 00:00:00', '2030-01-01 00:00:00')"
            )
            conn.exec_driver_sql(
                "INSERT INTO triggers (id, launch_id, kind, spec, webhook_token_hash, enabled) VALUES "
                "('t', 'l', 'webhook', '{\"kind\": \"webhook\"}', ?, 1), "
                "('c', 'l', 'interval', '{\"kind\": \"interval\", \"every_s\": 60}', NULL, 1)",
                (launch_store.hash_token("old-token"),),
            )
        migrate.upgrade(db)
        with db.engine.connect() as conn:
            target = launch_store.find_webhook(conn, "old-token")
            specs = dict(conn.execute(select(triggers.c.id, triggers.c.spec)).all())
        assert target is not None and target.signed is False
        assert specs["t"] == {"kind": "webhook", "signed": False}
        assert specs["c"] == {"kind": "interval", "every_s": 60}  # other kinds untouched
        migrate.downgrade(db, "0008")
        with db.engine.connect() as conn:
            back = conn.execute(select(triggers.c.spec).where(triggers.c.id == "t")).scalar_one()
        assert back == {"kind": "webhook"}
    finally:
        db.close()
