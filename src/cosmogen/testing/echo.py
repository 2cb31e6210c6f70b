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
        # How long unscripted answers take: a slow provider, for shutdown and back-pressure tests.
        self.default_delay_s = 0.0
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
        answer = (
            self.script.pop(0)
            if self.script
            else Answer(200, {"ok": True, "n": len(self.requests)}, delay_s=self.default_delay_s)
        )
        if answer.delay_s:
            await asyncio.sleep(answer.delay_s)
        return web.json_response(answer.body, status=answer.status, headers=answer.headers)


class ThreadedEchoServer:
    """An EchoServer on its own event loop in a background thread, for tests that drive other processes."""

    def __init__(self) -> None:
        import threading

        self.server = EchoServer()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="echo-server", daemon=True)

    def __enter__(self) -> EchoServer:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self._loop).result(timeout=10)
        return self.server

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.server.close(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()


def main() -> None:
    """`python -m cosmogen.testing.echo [PORT]`: serve until killed; prints the port on the first line."""
    import sys

    async def serve() -> None:
        server = EchoServer()
        await server.start(int(sys.argv[1]) if len(sys.argv) > 1 else 0)
        print(server.port, flush=True)
        await asyncio.Event().wait()

    asyncio.run(serve())


if __name__ == "__main__":
    main()
