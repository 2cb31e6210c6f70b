"""DUR-11: Idempotency-Key on webhook ingress, over real HTTP (uvicorn on 127.0.0.1, aiohttp), on SQLite and
PostgreSQL; runs are real rows counted in the database.

(a) the same key and body twice: the stored response, 1 run; (b) the same key with another body: 422;
(c) the same key while the first request is in flight: 409; (d) no key where the trigger requires one:
400; (e) another workspace's key: a new request (keys are scoped by workspace). Also: a failed request
frees its key, a dead holder's claim is taken over after its lease, keys expire after 24 h and the
runtime's cleanup deletes them, and the delivery-id replay protection keeps working beside keys.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select
from tests.integration.runtime.hook_harness import Server, serving

from cosmogen.domain.idempotency import Verdict, fingerprint
from cosmogen.domain.schedule import WebhookSpec
from cosmogen.runtime import idempotency
from cosmogen.runtime.service import Runtime, RuntimeSettings
from cosmogen.store.tables import idempotency_keys, utcnow

UNSIGNED = WebhookSpec(signed=False)


@pytest.fixture(params=["sqlite", "postgresql"])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RuntimeSettings]:
    base = RuntimeSettings(data_dir=tmp_path / "data", poll_interval_s=0.05)
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


def keyed(key: str, **more: str) -> dict[str, str]:
    return {"Idempotency-Key": key, **more}


def stored_keys(server: Server) -> int:
    with server.db.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(idempotency_keys)).scalar_one())


def test_a_same_key_and_body_twice_gives_the_stored_result_and_one_run(settings: RuntimeSettings) -> None:
    async def body(server: Server) -> None:
        hook = await server.launch(UNSIGNED)
        first = await server.post(hook, {"order": 1, "items": ["a"]}, headers=keyed("k-1"))
        assert first[0] == 202 and "Idempotent-Replayed" not in first[2]
        # The same JSON, serialised differently by the retrying client: the same request.
        again = await server.post(hook, raw=b'{ "items": ["a"],\n "order": 1 }', headers=keyed('"k-1"'))
        assert again[:2] == first[:2]
        assert again[2]["Idempotent-Replayed"] == "true"
        assert server.runs_of(hook) == 1
        # Keys replace the body-hash rule: another key with the same body is another request.
        assert (await server.post(hook, {"order": 1, "items": ["a"]}, headers=keyed("k-2")))[0] == 202
        assert server.runs_of(hook) == 2

    run(settings, body)


def test_b_same_key_with_another_body_is_422(settings: RuntimeSettings) -> None:
    async def body(server: Server) -> None:
        hook = await server.launch(UNSIGNED)
        assert (await server.post(hook, {"n": 1}, headers=keyed("k")))[0] == 202
        status, answer, _ = await server.post(hook, {"n": 2}, headers=keyed("k"))
        assert status == 422
        assert answer["error"]["code"] == "idempotency_key_reused"
        assert "use a new key for a new request" in answer["error"]["message"]
        assert server.runs_of(hook) == 1
        # ...and the key still answers its own request.
        assert (await server.post(hook, {"n": 1}, headers=keyed("k")))[2]["Idempotent-Replayed"] == "true"

    run(settings, body)


def test_c_same_key_while_the_first_is_in_flight_is_409(settings: RuntimeSettings) -> None:
    async def body(server: Server) -> None:
        hook = await server.launch(UNSIGNED)
        server.gate.hold = asyncio.Event()
        first = asyncio.create_task(server.post(hook, {"n": 1}, headers=keyed("slow")))
        async with asyncio.timeout(10):
            await server.gate.entered.wait()  # the first request is inside start_run, its key claimed
        status, answer, headers = await server.post(hook, {"n": 1}, headers=keyed("slow"))
        assert status == 409
        assert answer["error"]["code"] == "idempotency_key_in_flight"
        assert headers["Retry-After"] == "1"
        # Another body under the key is a misuse whatever the first request's state: 422.
        assert (await server.post(hook, {"n": 2}, headers=keyed("slow")))[0] == 422
        server.gate.hold.set()
        done = await first
        assert done[0] == 202
        replay = await server.post(hook, {"n": 1}, headers=keyed("slow"))
        assert replay[:2] == done[:2]
        assert server.runs_of(hook) == 1

    run(settings, body)


def test_a_burst_of_one_key_starts_one_run(settings: RuntimeSettings) -> None:
    async def body(server: Server) -> None:
        hook = await server.launch(UNSIGNED)
        results = await asyncio.gather(
            *(server.post(hook, {"n": 1}, headers=keyed("burst")) for _ in range(8))
        )
        fresh = [r for r in results if r[0] == 202 and "Idempotent-Replayed" not in r[2]]
        assert len(fresh) == 1
        assert {r[0] for r in results} <= {202, 409}
        assert all(r[1] == fresh[0][1] for r in results if r[0] == 202)
        assert server.runs_of(hook) == 1

    run(settings, body)


def test_d_a_trigger_that_requires_a_key_refuses_a_request_without_one(settings: RuntimeSettings) -> None:
    async def body(server: Server) -> None:
        hook = await server.launch(WebhookSpec(signed=False, idempotency_key="required"))
        status, answer, _ = await server.post(hook, {"n": 1})
        assert status == 400
        assert answer["error"]["code"] == "idempotency_key_missing"
        assert "requires an Idempotency-Key header" in answer["error"]["message"]
        status, answer, _ = await server.post(hook, {"n": 1}, headers=keyed("x" * 256))
        assert (status, answer["error"]["code"]) == (400, "idempotency_key_invalid")
        assert server.runs_of(hook) == 0 and stored_keys(server) == 0
        assert (await server.post(hook, {"n": 1}, headers=keyed("present")))[0] == 202
        # Where keys are optional, a request without one is fine (the delivery rules apply).
        optional = await server.launch(UNSIGNED, name="optional")
        assert (await server.post(optional, {"n": 1}))[0] == 202
        assert server.runs_of(hook) == 1

    run(settings, body)


def test_e_another_workspace_sending_the_same_key_is_a_new_request(settings: RuntimeSettings) -> None:
    async def body(server: Server) -> None:
        a = await server.launch(UNSIGNED, workspace="wa", name="shop")
        b = await server.launch(UNSIGNED, workspace="wb", name="shop")
        answer_a = await server.post(a, {"n": 1}, headers=keyed("shared"))
        answer_b = await server.post(b, {"n": 1}, headers=keyed("shared"))
        assert answer_a[0] == answer_b[0] == 202
        assert answer_a[1] != answer_b[1]  # B gets its own run, never A's stored result
        assert "Idempotent-Replayed" not in answer_b[2]
        assert server.runs_of(a) == server.runs_of(b) == 1
        # The store itself scopes by workspace: the same (scope, key) in two workspaces are two keys.
        now = server.clock()
        ref_a = idempotency.KeyRef("wa", "POST /runs", "k")
        ref_b = idempotency.KeyRef("wb", "POST /runs", "k")
        claim_a = await server.writer.write(idempotency.begin(ref_a, fingerprint({"x": 1}), now))
        claim_b = await server.writer.write(idempotency.begin(ref_b, fingerprint({"x": 1}), now))
        assert claim_a.verdict is claim_b.verdict is Verdict.PROCEED
        assert claim_a.owner is not None
        assert await server.writer.write(idempotency.complete(ref_a, claim_a.owner, 201, {"run": "A"}))
        again_b = await server.writer.write(idempotency.begin(ref_b, fingerprint({"x": 1}), now))
        assert again_b.verdict is Verdict.IN_FLIGHT and again_b.body is None
        with server.db.engine.connect() as conn:
            rows = conn.execute(
                select(idempotency_keys.c.workspace_id).order_by(idempotency_keys.c.workspace_id)
            )
            workspaces = [r.workspace_id for r in rows]
        assert workspaces == ["wa", "wa", "wb", "wb"]

    run(settings, body)


def test_a_failed_request_frees_its_key_and_a_dead_holder_is_taken_over(settings: RuntimeSettings) -> None:
    async def body(server: Server) -> None:
        hook = await server.launch(UNSIGNED)
        server.start_run.fail = True
        status, answer, _ = await server.post(hook, {"n": 1}, headers=keyed("retry-me"))
        assert (status, answer["error"]["code"]) == (503, "unavailable")
        server.start_run.fail = False
        retried = await server.post(hook, {"n": 1}, headers=keyed("retry-me"))
        assert retried[0] == 202 and "Idempotent-Replayed" not in retried[2]  # not the 503, not a 409
        # A request that claimed a key and died (no completion, no release): 409 during its lease...
        ref = idempotency.KeyRef("default", f"webhook:{hook.trigger_id}", "orphan")
        claim = await server.writer.write(idempotency.begin(ref, fingerprint({"n": 2}), server.clock()))
        assert claim.verdict is Verdict.PROCEED
        assert (await server.post(hook, {"n": 2}, headers=keyed("orphan")))[0] == 409
        # ...then the key is taken over, and the dead holder can no longer store its result.
        server.clock.advance(seconds=61)
        assert (await server.post(hook, {"n": 2}, headers=keyed("orphan")))[0] == 202
        assert claim.owner is not None
        assert not await server.writer.write(idempotency.complete(ref, claim.owner, 500, {"late": True}))
        replay = await server.post(hook, {"n": 2}, headers=keyed("orphan"))
        assert replay[0] == 202 and replay[2]["Idempotent-Replayed"] == "true"
        assert server.runs_of(hook) == 2

    run(settings, body)


def test_keys_expire_after_24_hours_and_the_cleanup_deletes_them(settings: RuntimeSettings) -> None:
    async def body(server: Server) -> None:
        hook = await server.launch(UNSIGNED)
        first = await server.post(hook, {"n": 1}, headers=keyed("daily"))
        await server.post(hook, {"n": 1}, headers=keyed("other"))
        server.clock.advance(hours=23, minutes=59)
        assert (await server.post(hook, {"n": 1}, headers=keyed("daily")))[2]["Idempotent-Replayed"] == "true"
        server.clock.advance(minutes=1)
        later = await server.post(hook, {"n": 1}, headers=keyed("daily"))  # expired: a new request
        assert later[0] == 202 and later[1] != first[1] and "Idempotent-Replayed" not in later[2]
        assert server.runs_of(hook) == 3
        assert stored_keys(server) == 2
        purged = await idempotency.purge_all(server.writer, server.clock(), limit=1)  # batches of one
        assert purged == 1  # "other" expired; "daily" was renewed by its new request
        assert stored_keys(server) == 1

    run(settings, body)


def test_the_delivery_id_rules_still_apply_beside_a_key(settings: RuntimeSettings) -> None:
    async def body(server: Server) -> None:
        hook = await server.launch(UNSIGNED)
        assert (await server.post(hook, {"n": 1}, headers=keyed("k1", **{"X-Cosmogen-Delivery": "d"})))[
            0
        ] == 202
        # A repeated delivery id under a new key: still a duplicate (and that answer is the key's result).
        dup = await server.post(hook, {"n": 1}, headers=keyed("k2", **{"X-Cosmogen-Delivery": "d"}))
        assert dup[:2] == (200, {"duplicate": True})
        replay = await server.post(hook, {"n": 1}, headers=keyed("k2", **{"X-Cosmogen-Delivery": "d"}))
        assert replay[:2] == (200, {"duplicate": True}) and replay[2]["Idempotent-Replayed"] == "true"
        # Without any key or id, the body's hash is the delivery key, as before.
        assert (await server.post(hook, {"n": 9}))[0] == 202
        assert (await server.post(hook, {"n": 9}))[:2] == (200, {"duplicate": True})
        assert server.runs_of(hook) == 2

    run(settings, body)


def test_signed_and_keyed_a_retry_signed_afresh_gets_the_stored_result(settings: RuntimeSettings) -> None:
    async def body(server: Server) -> None:
        hook = await server.launch()  # signed
        first = await server.post(hook, {"n": 1}, headers=keyed("s"))
        server.clock.advance(seconds=120)
        again = await server.post(hook, {"n": 1}, headers=keyed("s"))
        assert first[0] == 202 and again[:2] == first[:2] and again[2]["Idempotent-Replayed"] == "true"
        # An unsigned copy learns nothing, not even the replay.
        status, answer, _ = await server.post(hook, {"n": 1}, sign_with=[], headers=keyed("s"))
        assert (status, answer["error"]["code"]) == (401, "signature_missing")
        assert server.runs_of(hook) == 1

    run(settings, body)


def test_the_runtime_purges_expired_keys_on_its_own(settings: RuntimeSettings) -> None:
    """serve (start_polling, SQLite) and workers (start_worker, PostgreSQL) run the cleanup."""

    async def main() -> None:
        runtime = await Runtime.open(settings)
        try:
            old = utcnow() - timedelta(days=2)
            for key in ("gone-1", "gone-2"):
                ref = idempotency.KeyRef("default", "POST /runs", key)
                await runtime.writer.write(idempotency.begin(ref, fingerprint(key), old))
            fresh = idempotency.KeyRef("default", "POST /runs", "kept")
            await runtime.writer.write(idempotency.begin(fresh, fingerprint("kept"), utcnow()))
            if runtime.queued:
                await runtime.start_worker()
            else:
                runtime.start_polling()
            async with asyncio.timeout(20):
                while True:
                    with runtime.db.engine.connect() as conn:
                        left = [r.key for r in conn.execute(select(idempotency_keys.c.key))]
                    if left == ["kept"]:
                        break
                    await asyncio.sleep(0.05)
        finally:
            await runtime.close()

    asyncio.run(main())
