"""A webhook server for the API-13 and DUR-11 tests: the real routes (api/webhooks.py) served by uvicorn on
127.0.0.1, a real store (SQLite or PostgreSQL), a real vault with its key file, a virtual clock, and a
start_run that writes real run rows (so the tests count runs in the database)."""

from __future__ import annotations

import asyncio
import io
import json
import socket
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import uvicorn
from multidict import CIMultiDict
from sqlalchemy import func, select
from starlette.applications import Starlette

from cosmogen.api.webhooks import webhook_routes
from cosmogen.domain import webhook_signature as sig
from cosmogen.domain.launches import LaunchConfig
from cosmogen.domain.schedule import WebhookSpec
from cosmogen.integrations import keystore
from cosmogen.integrations.vault import KeySource, Vault
from cosmogen.runtime import launches as launch_store
from cosmogen.runtime.service import RuntimeSettings
from cosmogen.store import Database, GroupCommitWriter, repos
from cosmogen.store.tables import runs
from cosmogen.testing.builders import document
from tests.integration.runtime.launch_helpers import T0, RecordingStartRun, VirtualClock, open_store


@dataclass
class Gate:
    """start_run with a door: while `hold` is set-able and unset, calls wait inside start_run (in flight)."""

    inner: RecordingStartRun
    hold: asyncio.Event | None = None
    entered: asyncio.Event = field(default_factory=asyncio.Event)

    async def __call__(self, *args: Any, **kwargs: Any) -> str:
        self.entered.set()
        if self.hold is not None:
            await self.hold.wait()
        return await self.inner(*args, **kwargs)


@dataclass(frozen=True)
class Hook:
    trigger_id: str
    launch_id: str
    url: str
    secret: bytes | None  # the signing secret shown at creation (None: unsigned)


@dataclass
class Server:
    base: str
    db: Database
    writer: GroupCommitWriter
    vault: Vault
    clock: VirtualClock
    start_run: RecordingStartRun
    gate: Gate
    http: aiohttp.ClientSession
    data_dir: Path

    async def launch(
        self, spec: WebhookSpec | None = None, *, workspace: str = "default", name: str = "hooked"
    ) -> Hook:
        doc = document(
            [{"id": "open", "type": "begin", "entity": "acct:1", "properties": {"balance": 1}}], name=name
        )
        saved = await self.writer.write(
            lambda conn: repos.save_version(conn, workspace_id=workspace, name=name, document=doc)
        )
        created = await self.writer.write(
            launch_store.create_launch(
                saved.universe_id,
                saved.version_id,
                LaunchConfig(),
                [spec or WebhookSpec()],
                now=self.clock(),
                vault=self.vault,
            )
        )
        await self.writer.write(launch_store.go_live(created.launch.id, now=self.clock()))
        [(trigger_id, token)] = created.webhook_tokens.items()
        secret = created.webhook_secrets.get(trigger_id)
        return Hook(
            trigger_id,
            created.launch.id,
            f"{self.base}/hooks/{token}",
            None if secret is None else secret.reveal().encode(),
        )

    def signature(self, secrets: list[bytes], body: bytes, age_s: int = 0) -> str:
        return sig.header_value(secrets, int(self.clock().timestamp()) - age_s, body)

    async def post(
        self,
        hook: Hook,
        body: Any = None,
        *,
        raw: bytes | None = None,
        sign_with: list[bytes] | None = None,
        age_s: int = 0,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, Any, Mapping[str, str]]:
        """POST JSON (or `raw` bytes); signed with the hook's secret unless `sign_with` says otherwise
        (an empty list: no signature header)."""
        data = json.dumps(body).encode() if raw is None else raw
        keys = sign_with if sign_with is not None else ([hook.secret] if hook.secret else [])
        sent = {"Content-Type": "application/json", **(headers or {})}
        if keys:
            sent[sig.SIGNATURE_HEADER] = self.signature(keys, data, age_s)
        async with self.http.post(hook.url, data=io.BytesIO(data), headers=sent) as response:
            return response.status, await response.json(), CIMultiDict(response.headers)

    def runs_of(self, hook: Hook) -> int:
        with self.db.engine.connect() as conn:
            query = select(func.count()).select_from(runs).where(runs.c.trigger_id == hook.trigger_id)
            return int(conn.execute(query).scalar_one())


def vault_for(db: Database, data_dir: Path) -> Vault:
    return keystore.open_vault(db, KeySource.for_data_dir(data_dir))


@asynccontextmanager
async def serving(settings: RuntimeSettings, data_dir: Path) -> AsyncIterator[Server]:
    with open_store(settings) as (db, writer):
        vault = vault_for(db, data_dir)
        clock = VirtualClock(T0)
        start_run = RecordingStartRun(clock, writer)
        gate = Gate(start_run)
        app = Starlette(routes=webhook_routes(db, writer, gate, clock, lambda: vault))
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        server = uvicorn.Server(uvicorn.Config(app, lifespan="off", log_level="critical", access_log=False))
        task = asyncio.create_task(server.serve(sockets=[sock]))
        try:
            async with asyncio.timeout(10):
                while not server.started:
                    await asyncio.sleep(0.01)
            async with aiohttp.ClientSession() as http:
                yield Server(
                    f"http://127.0.0.1:{port}", db, writer, vault, clock, start_run, gate, http, data_dir
                )
        finally:
            server.should_exit = True
            await task
            sock.close()
