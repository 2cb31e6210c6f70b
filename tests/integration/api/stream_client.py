"""Clients of the live event stream for tests: WebSocket (the `websockets` library) and SSE (aiohttp),
plus making members and saving universes on either dialect."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
from sqlalchemy import select
from websockets.asyncio.client import ClientConnection

from cosmogen.domain.roles import Role
from cosmogen.identity import tokens, users
from cosmogen.store import Database
from cosmogen.store.tables import workspaces
from tests.integration.api.helpers import call

Frames = list[dict[str, Any]]


def open_store(where: Path | str) -> Database:
    return Database.open(data_dir=where) if isinstance(where, Path) else Database.open(url=where)


def member(where: Path | str, email: str, role: Role = Role.EDITOR, workspace: str = "default") -> str:
    """A member of `workspace` and their API token (SQLite data dir or PostgreSQL URL)."""
    db = open_store(where)
    try:
        with db.engine.begin() as conn:
            # A truncated PostgreSQL test database has not even "default".
            if conn.execute(select(workspaces.c.id).where(workspaces.c.id == workspace)).first() is None:
                conn.execute(workspaces.insert().values(id=workspace, name=workspace))
            user_id = users.create_user(email, email.split("@")[0])(conn)
            users.add_member(workspace, user_id, role)(conn)
            secret, write = tokens.create_token(user_id=user_id, workspace_id=workspace, name="t", role=role)
            write(conn)
    finally:
        db.close()
    return secret.reveal()


def save_universe(url: str, token: str, document: dict[str, Any]) -> str:
    status, _, saved = call(url + "/api/v1/universes", "POST", token=token, body={"document": document})
    assert status == 201, saved
    return str(saved["universe"]["id"])


def start_run(url: str, token: str, universe_id: str) -> str:
    status, _, started = call(url + "/api/v1/runs", "POST", token=token, body={"universe_id": universe_id})
    assert status == 201, started
    return str(started["run_id"])


def ws_url(url: str, query: str = "") -> str:
    return url.replace("http://", "ws://") + "/api/v1/events/ws" + (f"?{query}" if query else "")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def receive_until(
    ws: ClientConnection, frames: Frames, done: Callable[[Frames], bool], timeout_s: float = 60.0
) -> Frames:
    deadline = time.monotonic() + timeout_s
    while not done(frames):
        left = deadline - time.monotonic()
        assert left > 0, f"timed out; got {[(f['run'][-6:], f['seq'], f['type']) for f in frames]}"
        frames.append(json.loads(await asyncio.wait_for(ws.recv(), left)))
    return frames


def ended(run_ids: set[str]) -> Callable[[Frames], bool]:
    """Done when every run in `run_ids` has logged an end."""
    ends = {"run.succeeded", "run.failed", "run.cancelled"}
    return lambda frames: run_ids <= {f["run"] for f in frames if f["type"] in ends}


async def sse_until(
    url: str, headers: dict[str, str], done: Callable[[Frames], bool], *,
    started: asyncio.Event | None = None, timeout_s: float = 60.0,
) -> Frames:  # fmt: skip
    """Reads the SSE stream until `done`; every frame's `id:` must match its envelope's id."""
    frames: Frames = []
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as response:
        assert response.status == 200, await response.text()
        assert response.headers["content-type"].startswith("text/event-stream")
        if started is not None:
            started.set()
        fields: dict[str, str] = {}
        deadline = time.monotonic() + timeout_s
        while not done(frames):
            line = (await asyncio.wait_for(response.content.readline(), deadline - time.monotonic())).decode()
            if line in ("\n", ""):
                if "data" in fields and "event" in fields:
                    envelope = json.loads(fields["data"])
                    assert fields["id"] == str(envelope["id"]) and fields["event"] == envelope["type"]
                    frames.append(envelope)
                fields = {}
                assert line, "the stream ended"
                continue
            if line.startswith(":"):
                continue
            name, _, value = line.rstrip("\n").partition(": ")
            fields[name] = value
    return frames


def assert_complete(frames: Frames, logs: dict[str, list[dict[str, Any]]]) -> None:
    """Each run's frames are exactly its journal (types and seqs, in order) and ids strictly rise."""
    ids = [f["id"] for f in frames]
    assert ids == sorted(set(ids)), "an event came twice or out of order"
    for run_id, journal in logs.items():
        got = [(f["seq"], f["type"]) for f in frames if f["run"] == run_id]
        assert got == [(e["seq"], e["type"]) for e in journal], run_id
    for f in frames:
        assert f["v"] == 1 and f["workspace"] == "default" and isinstance(f["data"], dict)


def journal_of(url: str, token: str, run_id: str) -> list[dict[str, Any]]:
    status, _, events = call(url + f"/api/v1/runs/{run_id}/events", token=token)
    assert status == 200, events
    return list(events)
