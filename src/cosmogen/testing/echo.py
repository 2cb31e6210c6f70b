"""A real HTTP server on 127.0.0.1 standing in for a provider until the simulator exists.

It answers 200 with a small JSON at once, or follows a script of answers; it records every request and
counts how often each `Idempotency-Key` arrived, which is how duplicate side effects are measured.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass(frozen=True, slots=True)
class Answer:
    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


class EchoServer:
    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.keys: Counter[str] = Counter()
        self.script: list[Answer] = []
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, port: int = 0) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        self.requests.append(Recorded(request.method, request.path, dict(request.headers), body))
        key = request.headers.get("Idempotency-Key")
        if key:
            self.keys[key] += 1
        answer = self.script.pop(0) if self.script else Answer(200, {"ok": True, "n": len(self.requests)})
        if answer.delay_s:
            await asyncio.sleep(answer.delay_s)
        return web.json_response(answer.body, status=answer.status, headers=answer.headers)
