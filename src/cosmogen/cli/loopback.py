"""The loopback redirect of RFC 8252 §7.3, as `gh auth login` and `gcloud auth login` do it: a temporary
HTTP listener on 127.0.0.1 that receives the browser's redirect back from the authorization server.

It listens on 127.0.0.1 only (never 0.0.0.0), serves one path, and answers the browser with a short page
that holds no code, token or state; `Referrer-Policy: no-referrer` keeps the callback URL (which holds the
authorization code) out of any later request's Referer.
"""

from __future__ import annotations

import html
from collections.abc import Awaitable, Callable, Mapping

from aiohttp import web

CALLBACK_PATH = "/oauth/callback"
_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'",
}

# What the browser is shown: (HTTP status, a sentence). The handler decides, the listener renders.
Page = tuple[int, str]
Handler = Callable[[Mapping[str, str]], Awaitable[Page]]


class PortInUse(OSError):
    pass


class LoopbackListener:
    def __init__(self, handler: Handler, port: int = 0) -> None:
        self._handler = handler
        self._port = port
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def redirect_uri(self) -> str:
        return f"http://127.0.0.1:{self.port}{CALLBACK_PATH}"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get(CALLBACK_PATH, self._callback)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self._port)
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            self._runner = None
            raise PortInUse(f"cannot listen on 127.0.0.1:{self._port}: {exc.strerror}") from None
        self.port = int(self._runner.addresses[0][1])

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _callback(self, request: web.Request) -> web.Response:
        status, sentence = await self._handler(dict(request.query))
        title = "Connected" if status == 200 else "Not connected"
        body = (
            f"<!doctype html><meta charset=utf-8><title>cosmogen: {title}</title>"
            f"<h1>{title}</h1><p>{html.escape(sentence)}</p>"
        )
        return web.Response(status=status, text=body, content_type="text/html", headers=_HEADERS)
