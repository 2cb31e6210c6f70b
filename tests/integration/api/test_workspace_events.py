"""A workspace's own events on the live stream: an account's and a launch's status changes, made outside
any run, reach a client subscribed to the workspace (not one subscribed to a universe), in id order with
run events, resumable with the same cursor, with codes and names but no secret; on PostgreSQL a change
made by another process (the CLI) reaches serve's stream too."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect

from cosmogen.domain.roles import Role
from cosmogen.testing.simulator import DEFAULT_API_KEY, Simulator, ThreadedSimulator
from tests.integration.api import stream_client as sc
from tests.integration.api.accounts_helpers import member
from tests.integration.api.helpers import call
from tests.integration.conftest import EXAMPLES, ROOT, serving

Frames = list[dict[str, Any]]


@pytest.fixture
def sim(monkeypatch: pytest.MonkeyPatch) -> Iterator[Simulator]:
    monkeypatch.setenv("COSMOGEN_EGRESS_ALLOW_NETWORKS", "127.0.0.1/32")  # the simulator, on purpose
    with ThreadedSimulator() as server:
        yield server


def _statuses(frames: Frames, kind: str) -> list[str]:
    return [f["data"]["status"] for f in frames if f["type"] == kind]


def _account(url: str, token: str, sim: Simulator, name: str) -> dict[str, Any]:
    body = {"name": name, "provider": "openai", "base_url": sim.url, "secrets": {"api_key": DEFAULT_API_KEY}}
    status, _, made = call(url + "/api/v1/accounts", "POST", token=token, body=body)
    assert status == 201, made
    return dict(made)


def test_account_and_launch_status_reach_the_workspace_stream(tmp_path: Path, sim: Simulator) -> None:
    with serving(tmp_path, "--no-sandbox") as (url, _):
        _, admin = member(tmp_path / "cosmogen-data", None, "ada@example.com", Role.ADMIN)
        universe_id = sc.save_universe(url, admin, json.loads((EXAMPLES / "banking.json").read_text()))

        async def scenario() -> tuple[Frames, Frames, str]:
            async with (
                connect(sc.ws_url(url), additional_headers=sc.bearer(admin)) as workspace,
                connect(
                    sc.ws_url(url, f"universe={universe_id}"), additional_headers=sc.bearer(admin)
                ) as one,
            ):
                made = await asyncio.to_thread(_account, url, admin, sim, "gpt")
                account = f"{url}/api/v1/accounts/{made['id']}"
                assert (await asyncio.to_thread(call, account + "/disable", "POST", token=admin))[0] == 200
                assert (await asyncio.to_thread(call, account, "DELETE", token=admin))[0] == 204
                status, _, launch = await asyncio.to_thread(
                    call, url + "/api/v1/launches", "POST", token=admin, body={"universe_id": universe_id}
                )
                assert status == 201, launch
                paused = await asyncio.to_thread(
                    call, f"{url}/api/v1/launches/{launch['id']}/pause", "POST", token=admin
                )
                assert paused[0] == 200, paused
                frames = await sc.receive_until(
                    workspace, [], lambda f: "paused" in _statuses(f, "launch.status")
                )
                # The universe's own stream got none of that: its first frame is this run's.
                run_id = await asyncio.to_thread(sc.start_run, url, admin, universe_id)
                scoped = await sc.receive_until(one, [], sc.ended({run_id}))
                return frames, scoped, str(made["id"])

        frames, scoped, account_id = asyncio.run(scenario())
        assert _statuses(frames, "account.status") == ["pending", "connected", "disabled", "removed"]
        assert _statuses(frames, "launch.status")[-1] == "paused" and "live" in _statuses(
            frames, "launch.status"
        )
        for frame in frames:
            assert (frame["run"], frame["seq"], frame["universe"]) == (None, None, None)
            assert frame["workspace"] == "default" and frame["level"] == "info"
        accounts = [f["data"] for f in frames if f["type"] == "account.status"]
        assert {(a["account_id"], a["account"], a["provider"]) for a in accounts} == {
            (account_id, "gpt", "openai")
        }
        assert {f["data"]["universe_id"] for f in frames if f["type"] == "launch.status"} == {universe_id}
        assert DEFAULT_API_KEY not in json.dumps(frames)
        assert {f["run"] for f in scoped} == {scoped[0]["run"]} and scoped[0]["type"] == "run.queued"

        # The same cursor resumes both kinds: from the start, everything in id order.
        async def backlog() -> Frames:
            async with connect(sc.ws_url(url, "after=0"), additional_headers=sc.bearer(admin)) as ws:
                return await sc.receive_until(ws, [], lambda f: len(f) >= len(frames) + len(scoped))

        everything = asyncio.run(backlog())
        assert [f["id"] for f in everything] == sorted(f["id"] for f in frames + scoped)


def test_postgresql_another_process_changing_an_account_reaches_serve(
    tmp_path: Path, clean_pg_url: str, sim: Simulator
) -> None:
    with serving(tmp_path, "--database-url", clean_pg_url, "--no-sandbox") as (url, _):
        _, admin = member(tmp_path, clean_pg_url, "ada@example.com", Role.ADMIN)
        _account(url, admin, sim, "gpt")

        async def scenario() -> Frames:
            async with connect(sc.ws_url(url), additional_headers=sc.bearer(admin)) as ws:
                env = {**os.environ, "COSMOGEN_DATABASE_URL": clean_pg_url}
                done = await asyncio.to_thread(
                    subprocess.run, [sys.executable, "-m", "cosmogen", "accounts", "disable", "gpt"],
                    capture_output=True, text=True, timeout=120, env=env, cwd=ROOT,
                )  # fmt: skip
                assert done.returncode == 0, done.stderr
                return await sc.receive_until(ws, [], lambda f: "disabled" in _statuses(f, "account.status"))

        frames = asyncio.run(scenario())
        assert _statuses(frames, "account.status") == ["disabled"]
