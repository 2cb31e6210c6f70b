"""Webhook ingress over real HTTP: a uvicorn server on 127.0.0.1, an aiohttp client, both dialects (unsigned
triggers here; signatures: tests/reliability/test_api13_webhook_signatures.py)."""

from __future__ import annotations

import asyncio
import io
import json
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import aiohttp
import uvicorn
from sqlalchemy import func, select
from starlette.applications import Starlette

from cosmogen.api.webhooks import MAX_BODY_BYTES, webhook_routes
from cosmogen.domain.launches import LaunchConfig
from cosmogen.domain.schedule import WebhookSpec
from cosmogen.runtime import launches as launch_store
from cosmogen.runtime.service import RuntimeSettings
from cosmogen.store import Database, GroupCommitWriter
from cosmogen.store.tables import webhook_deliveries
from tests.integration.runtime.launch_helpers import (
    T0,
    RecordingStartRun,
    VirtualClock,
    live_launch,
    open_store,
)


@dataclass
class Hook:
    base: str  # http://127.0.0.1:port
    url: str  # the webhook's full URL
    trigger_id: str
    launch_id: str
    db: Database
    writer: GroupCommitWriter
    clock: VirtualClock
    start_run: RecordingStartRun
    http: aiohttp.ClientSession

    async def post(
        self,
        body: Any = None,
        *,
        data: bytes | None = None,
        delivery: str | None = None,
        content_type: str = "application/json",
    ) -> tuple[int, Any]:
        headers = {"Content-Type": content_type}
        if delivery is not None:
            headers["X-Cosmogen-Delivery"] = delivery
        payload = io.BytesIO(json.dumps(body).encode() if data is None else data)
        async with self.http.post(self.url, data=payload, headers=headers) as response:
            return response.status, await response.json()

    def deliveries(self) -> int:
        with self.db.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(webhook_deliveries)).scalar_one())


@asynccontextmanager
async def serving(settings: RuntimeSettings) -> AsyncIterator[Hook]:
    with open_store(settings) as (db, writer):
        clock = VirtualClock(T0)
        created = await live_launch(writer, clock, [WebhookSpec(signed=False)])
        [(trigger_id, token)] = created.webhook_tokens.items()
        start_run = RecordingStartRun(clock)
        app = Starlette(routes=webhook_routes(db, writer, start_run, clock))
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        server = uvicorn.Server(uvicorn.Config(app, lifespan="off", log_level="warning", access_log=False))
        task = asyncio.create_task(server.serve(sockets=[sock]))
        try:
            async with asyncio.timeout(10):
                while not server.started:
                    await asyncio.sleep(0.01)
            base = f"http://127.0.0.1:{port}"
            async with aiohttp.ClientSession() as http:
                yield Hook(
                    base,
                    f"{base}/hooks/{token}",
                    trigger_id,
                    created.launch.id,
                    db,
                    writer,
                    clock,
                    start_run,
                    http,
                )
        finally:
            server.should_exit = True
            await task
            sock.close()


def run_with(settings: RuntimeSettings, body: Any) -> None:
    async def main() -> None:
        async with serving(settings) as hook:
            await body(hook)

    asyncio.run(main())


def test_a_delivery_starts_a_run_with_the_payload_as_its_event(settings: RuntimeSettings) -> None:
    async def body(hook: Hook) -> None:
        status, answer = await hook.post({"order": 42, "items": ["a"]}, delivery="d-1")
        assert status == 202
        assert answer == {"run_id": hook.start_run.run_ids[0]}
        [call] = hook.start_run.calls
        assert call.event == {"name": "webhook", "data": {"order": 42, "items": ["a"]}}
        assert (call.launch_id, call.trigger_id, call.dry_run) == (hook.launch_id, hook.trigger_id, True)
        assert call.config == LaunchConfig().to_dict()  # the launch's config goes with the run

    run_with(settings, body)


def test_a_repeated_delivery_id_starts_no_second_run(settings: RuntimeSettings) -> None:
    async def body(hook: Hook) -> None:
        first = await hook.post({"n": 1}, delivery="same")
        again = await hook.post({"n": 2}, delivery="same")
        assert first[0] == 202
        assert again == (200, {"duplicate": True})
        # Without a delivery id the body's hash is the key: an identical body is a replay.
        assert (await hook.post({"n": 3}))[0] == 202
        assert await hook.post({"n": 3}) == (200, {"duplicate": True})
        assert (await hook.post({"n": 3}, delivery="other"))[0] == 202
        assert len(hook.start_run.calls) == 3
        assert hook.deliveries() == 3

    run_with(settings, body)


def test_concurrent_copies_of_one_delivery_start_one_run(settings: RuntimeSettings) -> None:
    async def body(hook: Hook) -> None:
        results = await asyncio.gather(*(hook.post({"n": 1}, delivery="burst") for _ in range(8)))
        assert sorted(status for status, _ in results) == [200] * 7 + [202]
        assert len(hook.start_run.calls) == 1

    run_with(settings, body)


def test_an_unknown_token_is_a_generic_404(settings: RuntimeSettings) -> None:
    async def body(hook: Hook) -> None:
        for url in (hook.url + "x", f"{hook.base}/hooks/nothing-here"):
            async with hook.http.post(url, json={"n": 1}) as response:
                assert response.status == 404
                assert await response.json() == {
                    "error": {"code": "not_found", "message": "no webhook at this address"}
                }
        assert hook.start_run.calls == []
        assert hook.deliveries() == 0

    run_with(settings, body)


def test_a_paused_launch_answers_409_and_records_nothing(settings: RuntimeSettings) -> None:
    async def body(hook: Hook) -> None:
        await hook.writer.write(launch_store.pause(hook.launch_id, now=hook.clock()))
        status, answer = await hook.post({"n": 1})
        assert status == 409
        assert answer["error"]["code"] == "launch_not_live"
        assert "launch is paused; resume it" in answer["error"]["message"]
        await hook.writer.write(launch_store.stop(hook.launch_id, now=hook.clock() + timedelta(seconds=1)))
        status, answer = await hook.post({"n": 1})
        assert (status, "launch is draft; make it live" in answer["error"]["message"]) == (409, True)
        assert hook.start_run.calls == []
        assert hook.deliveries() == 0

    run_with(settings, body)


def test_a_body_over_one_mib_is_413(settings: RuntimeSettings) -> None:
    async def body(hook: Hook) -> None:
        big = b'{"pad": "' + b"x" * MAX_BODY_BYTES + b'"}'
        status, answer = await hook.post(data=big)
        assert status == 413
        assert "exceeds 1048576 bytes (1 MiB)" in answer["error"]["message"]

        # Without a Content-Length (chunked), the limit is enforced while reading.
        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(20):
                yield b" " * 100_000

        async with hook.http.post(
            hook.url, data=chunks(), headers={"Content-Type": "application/json"}
        ) as response:
            assert response.status == 413
        assert hook.start_run.calls == []

    run_with(settings, body)


def test_bad_json_and_wrong_content_type_are_refused_clearly(settings: RuntimeSettings) -> None:
    async def body(hook: Hook) -> None:
        status, answer = await hook.post(data=b'{"unterminated": ')
        assert status == 400
        assert answer["error"]["code"] == "invalid_json"
        assert "the body is not valid JSON" in answer["error"]["message"]
        status, answer = await hook.post(data=b"NaN")
        assert status == 400
        status, answer = await hook.post(data=b"order=42", content_type="application/x-www-form-urlencoded")
        assert status == 415
        assert "Content-Type: application/json" in answer["error"]["message"]
        status, answer = await hook.post({"n": 1}, delivery="x" * 201)
        assert (status, answer["error"]["code"]) == (400, "invalid_delivery_id")
        async with hook.http.get(hook.url) as response:
            assert response.status == 405
        assert hook.start_run.calls == []

    run_with(settings, body)


def test_a_failed_start_forgets_the_delivery_so_a_retry_works(settings: RuntimeSettings) -> None:
    async def body(hook: Hook) -> None:
        hook.start_run.fail = True
        status, answer = await hook.post({"n": 1}, delivery="retry-me")
        assert (status, answer["error"]["code"]) == (503, "unavailable")
        hook.start_run.fail = False
        assert (await hook.post({"n": 1}, delivery="retry-me"))[0] == 202

    run_with(settings, body)
