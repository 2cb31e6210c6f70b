"""LEAK-01 over the live event stream: the canary scenario of test_leak01_canaries.py (every credential
kind, providers echoing our credentials in 401 and 500 bodies, retries, a refresh, invalid_grant) runs
while a WebSocket client of the real app listens to the workspace; no frame carries any canary in raw,
hex, base64, base64url or percent-encoded form, nor any 12-character piece of one. Every frame is one
JSON object on one line (no raw control characters a log or terminal could be fooled by: LEAK-02's
framing half). The app is `create_app` served by uvicorn in this process, so the scenario's runtime is
the one streaming.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from pathlib import Path

import uvicorn
from sqlalchemy import func, select
from tests.integration.conftest import free_port
from tests.reliability.test_leak01_canaries import _canaries, _needles, _scan, _scenario, _vault_keys
from websockets.asyncio.client import connect

from cosmogen.api.app import create_app
from cosmogen.domain.roles import Role
from cosmogen.identity import tokens, users
from cosmogen.integrations.egress import EgressPolicy
from cosmogen.runtime.service import Runtime, RuntimeSettings
from cosmogen.store.tables import run_events
from cosmogen.testing.simulator import ThreadedSimulator


def _member(runtime: Runtime) -> str:
    with runtime.db.engine.begin() as conn:
        user_id = users.create_user("watcher@example.com", "watcher")(conn)
        users.add_member("default", user_id, Role.VIEWER)(conn)
        secret, write = tokens.create_token(
            user_id=user_id, workspace_id="default", name="t", role=Role.VIEWER
        )
        write(conn)
    return secret.reveal()


def test_no_canary_in_any_stream_frame(tmp_path: Path) -> None:
    settings = RuntimeSettings(
        data_dir=tmp_path / "data",
        egress=EgressPolicy.from_strings(networks="127.0.0.1/32"),
        poll_interval_s=0.05,
    )
    core = secrets.token_hex(12)
    raw_frames: list[str] = []

    with ThreadedSimulator(name=f"lk{core}") as sim:
        canaries = _canaries(sim)
        sim.api_keys.update(
            {canaries["openai"], canaries["anthropic"], canaries["x_bearer"], canaries["graph_token"]}
        )

        async def main() -> None:
            runtime = await Runtime.open(settings)

            async def opened() -> Runtime:
                return runtime

            port = free_port()
            server = uvicorn.Server(
                uvicorn.Config(create_app(opened), host="127.0.0.1", port=port, log_level="warning")
            )
            serving = asyncio.create_task(server.serve())
            try:
                while not server.started:
                    assert not serving.done(), "the server did not start"
                    await asyncio.sleep(0.05)
                token = _member(runtime)
                uri = f"ws://127.0.0.1:{port}/api/v1/events/ws"
                async with connect(
                    uri, proxy=None, additional_headers={"Authorization": f"Bearer {token}"}
                ) as ws:

                    async def receive() -> None:
                        async for message in ws:
                            assert isinstance(message, str)
                            raw_frames.append(message)

                    receiving = asyncio.create_task(receive())
                    await _scenario(runtime, sim, canaries)
                    with runtime.db.engine.connect() as conn:
                        last = conn.execute(select(func.max(run_events.c.id))).scalar()
                    for _ in range(200):
                        if raw_frames and json.loads(raw_frames[-1])["id"] == last:
                            break
                        await asyncio.sleep(0.05)
                    receiving.cancel()
            finally:
                server.should_exit = True
                await serving  # the app's lifespan closes the runtime

        asyncio.run(main())

    frames = [json.loads(f) for f in raw_frames]
    assert len(frames) > 50 and frames[-1]["id"] == len(frames), "the stream missed events"
    assert {"account.error", "run.succeeded"} <= {f["type"] for f in frames}
    for raw in raw_frames:
        assert raw.isprintable() and isinstance(json.loads(raw), dict)
    needles = _needles(canaries, _vault_keys(settings))
    blob = "\n".join(raw_frames).encode()
    assert _scan({"frames": blob}, needles) == []
    assert _scan({"frames": blob + canaries["openai"].encode()[:20]}, needles)  # the scan does find one
