"""The simulator: one aiohttp server on 127.0.0.1 that speaks every provider's API and the OAuth server.

Each request goes through the same steps, in this order, and the log records where it stopped:

1. the rate-limit bucket of its route (if a policy covers it): over policy is a 429 at once;
2. a scripted fault for its route, if one is due;
3. the credential: a static API key or a live access token issued by the OAuth server;
4. `Idempotency-Key` (OpenAI and webhook routes): a repeat gets the first answer again, or a 409 while
   the first is still being handled;
5. a scripted delay (`Fault.timeout`), then the route's own handler.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from cosmogen.testing.simulator import admin
from cosmogen.testing.simulator.dialects import Dialect, fault_reply
from cosmogen.testing.simulator.faults import Fault, FaultScript, ScriptedFault
from cosmogen.testing.simulator.limits import Limits, Policy
from cosmogen.testing.simulator.log import LoggedRequest, RequestLog
from cosmogen.testing.simulator.oauth import AuthorizationServer
from cosmogen.testing.simulator.providers import (
    DEFAULT_INSTAGRAM_USERS,
    DEFAULT_SLACK_CHANNELS,
    Effect,
    Providers,
)
from cosmogen.testing.simulator.reply import Reply
from cosmogen.testing.simulator.routes import (
    Call,
    CredentialOf,
    Handler,
    RouteSpec,
    anthropic_key,
    bearer,
    client_id_of,
    echo_detail,
    graph_token,
    optional_bearer,
    parse_body,
    slack_token,
)
from cosmogen.testing.simulator.targets import ANY

DEFAULT_API_KEY = "sim-key-0123456789"
DEFAULT_CLIENT_ID = "sim-client"
DEFAULT_CLIENT_SECRET = "sim-secret"  # noqa: S105 (the simulator's own fake credential)
GRAPH = r"/{version:v\d+\.\d+}"
SIDE_EFFECT_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@dataclass
class _Remembered:
    fingerprint: str
    reply: Reply | None = None  # None while the first request is still being handled


class Simulator:
    """The provider simulator. `async with Simulator() as sim:` or `await sim.start()` / `await sim.close()`.

    Its Python API (inject, limit, reset, oauth.*) is meant to be called between requests, from the
    test that owns it; a separately running process is steered through `/_sim/...` instead."""

    def __init__(
        self,
        *,
        name: str = "sim",
        api_keys: Iterable[str] = (DEFAULT_API_KEY,),
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        slack_channels: Iterable[str] = DEFAULT_SLACK_CHANNELS,
        instagram_users: Iterable[str] = DEFAULT_INSTAGRAM_USERS,
        expires_in: int | None = 3600,
        rotate_refresh_tokens: bool = True,
    ) -> None:
        self.name = name
        self.api_keys = set(api_keys)
        self.clock = clock  # arrival times, buckets, token expiry
        self.wall = wall  # epoch times the providers print (created, ts, post_at, x-ratelimit-reset)
        self.port = 0
        self.log = RequestLog()
        self.counts: Counter[str] = Counter()  # requests per route name, whatever their outcome
        self.keys: Counter[str] = Counter()  # how often each Idempotency-Key arrived
        self.faults = FaultScript()
        self.limits = Limits()
        self.oauth = AuthorizationServer(name, clock, lambda: self.url)
        self.oauth.expires_in = expires_in
        self.oauth.rotate_refresh_tokens = rotate_refresh_tokens
        self.oauth.register_client(DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET)
        self.providers = Providers(wall, lambda: self.url, slack_channels, instagram_users)
        self._remembered: dict[tuple[str, str, str], _Remembered] = {}
        self._seq = 0
        self._runner: web.AppRunner | None = None
        self._closing: asyncio.Event | None = None

    # Running

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, port: int = 0) -> None:
        self._closing = asyncio.Event()
        app = web.Application()
        app.add_routes(admin.routes(self))
        for spec in self._routes():
            app.router.add_route(spec.method, spec.path, self._handler(spec))
        # Delayed answers wake up on close (below); the timeout bounds anything else still running.
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=5.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    async def close(self) -> None:
        if self._closing is not None:
            self._closing.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Simulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # Steering

    def inject(
        self, fault: Fault, route: str = ANY, *, times: int | None = 1, after: int = 0
    ) -> ScriptedFault:
        """Answer the next `times` requests to `route` (a route name, a group or `*`) with `fault`, after
        letting `after` of them through; `times=None` keeps it until `faults.clear()`."""
        return self.faults.add(fault, route, times=times, after=after)

    def limit(self, route: str, rate: float, burst: int) -> Policy:
        """Enforce a token bucket of `rate`/s and `burst` per credential on `route` (name, group or `*`)."""
        return self.limits.set(route, rate, burst)

    def reset(self, *, oauth: bool = False) -> None:
        """Forget requests, counters, faults, bucket levels, idempotency records and effects. Settings,
        API keys, rate-limit policies and OAuth clients stay; codes and tokens go only with `oauth=True`."""
        self.log.clear()
        self.counts.clear()
        self.keys.clear()
        self.faults.clear()
        self.limits.refill()
        self.providers.reset()
        self._remembered.clear()
        self._seq = 0
        if oauth:
            self.oauth.reset()

    # Reading

    @property
    def effects(self) -> list[Effect]:
        return self.providers.effects

    def count_429(self, route: str = ANY) -> int:
        return self.log.count_429(route)

    def max_in_window(self, route: str = ANY, window: float = 1.0) -> int:
        return self.log.max_in_window(route, window)

    # The pipeline

    def _routes(self) -> list[RouteSpec]:
        p = self.providers
        o = self.oauth

        def spec(
            name: str,
            method: str,
            path: str,
            handler: Handler,
            dialect: Dialect,
            credential: CredentialOf,
            *,
            authenticated: bool = True,
            idempotent: bool = False,
        ) -> RouteSpec:
            group = name.split(".")[0]
            return RouteSpec(
                name, group, method, path, handler, dialect, credential, authenticated, idempotent
            )

        async def metadata(call: Call) -> Reply:
            return Reply(200, o.metadata())

        async def unknown(call: Call) -> Reply:
            message = f"no such route: {call.request.method} {call.request.path}"
            return p.generic.error(404, "not_found", message)

        def openai(name: str, path: str, handler: Handler) -> RouteSpec:
            return spec(name, "POST", path, handler, p.openai, bearer, idempotent=True)

        return [
            openai("openai.chat", "/v1/chat/completions", p.chat),
            openai("openai.responses", "/v1/responses", p.responses),
            openai("openai.embeddings", "/v1/embeddings", p.embeddings),
            openai("openai.images", "/v1/images/generations", p.images),
            # One path for both APIs (one host here): an x-api-key header means Anthropic's shape.
            spec("openai.models", "GET", "/v1/models", p.models, p.openai, anthropic_key),
            spec("anthropic.messages", "POST", "/v1/messages", p.messages, p.anthropic, anthropic_key),
            spec("slack.postMessage", "POST", "/api/chat.postMessage", p.post_message, p.slack, slack_token),
            spec(
                "slack.scheduleMessage",
                "POST",
                "/api/chat.scheduleMessage",
                p.schedule_message,
                p.slack,
                slack_token,
            ),
            spec("x.tweets", "POST", "/2/tweets", p.tweet, p.x, bearer),
            spec(
                "instagram.media", "POST", GRAPH + r"/{user:\d+}/media", p.create_media, p.graph, graph_token
            ),
            spec(
                "instagram.media_publish",
                "POST",
                GRAPH + r"/{user:\d+}/media_publish",
                p.publish_media,
                p.graph,
                graph_token,
            ),
            spec(
                "instagram.container", "GET", GRAPH + r"/{node:\d+}", p.container_status, p.graph, graph_token
            ),
            spec(
                "oauth.authorize",
                "GET",
                "/oauth/authorize",
                o.authorize,
                o.dialect,
                client_id_of,
                authenticated=False,
            ),
            spec(
                "oauth.token", "POST", "/oauth/token", o.token, o.dialect, client_id_of, authenticated=False
            ),
            spec(
                "oauth.revoke",
                "POST",
                "/oauth/revoke",
                o.revoke,
                o.dialect,
                client_id_of,
                authenticated=False,
            ),
            spec(
                "oauth.metadata",
                "GET",
                "/.well-known/oauth-authorization-server",
                metadata,
                o.dialect,
                client_id_of,
                authenticated=False,
            ),
            spec(
                "webhook",
                "*",
                "/webhook",
                p.webhook,
                p.generic,
                optional_bearer,
                authenticated=False,
                idempotent=True,
            ),
            spec(
                "webhook",
                "*",
                "/webhook/{tail:.*}",
                p.webhook,
                p.generic,
                optional_bearer,
                authenticated=False,
                idempotent=True,
            ),
            spec("files", "GET", "/files/{name}", p.file, p.generic, optional_bearer, authenticated=False),
            spec("unknown", "*", "/{tail:.*}", unknown, p.generic, optional_bearer, authenticated=False),
        ]

    def _handler(self, spec: RouteSpec) -> Callable[[web.Request], Any]:
        async def handle(request: web.Request) -> web.StreamResponse:
            return await self._dispatch(spec, request)

        return handle

    async def _dispatch(self, spec: RouteSpec, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        body = parse_body(raw, request.content_type)
        args: dict[str, Any] = dict(request.query)
        if isinstance(body, dict):
            args.update(body)
        credential = spec.credential(request, args)
        self._seq += 1
        entry = LoggedRequest(
            self._seq,
            self.clock(),
            request.method,
            request.path,
            dict(request.query),
            dict(request.headers),
            body,
            spec.name,
            spec.group,
            credential,
        )
        self.log.append(entry)
        self.counts[spec.name] += 1
        key = request.headers.get("Idempotency-Key")
        if key:
            self.keys[key] += 1
        reply = await self._answer(spec, Call(request, raw, body, args, credential, entry))
        entry.status = reply.status
        entry.outcome = reply.outcome
        return reply.to_response()

    async def _answer(self, spec: RouteSpec, call: Call) -> Reply:
        wait = self.limits.check(spec.name, spec.group, call.credential, self.clock())
        if wait is not None:
            call.entry.within_policy = wait == 0
            if wait > 0:
                reply = spec.dialect.rate_limited(wait, None)
                reply.outcome = "rate_limited"
                return reply
        fault = self.faults.take(spec.name, spec.group)
        delay_s = 0.0
        if fault is not None:
            call.entry.fault = fault.kind
            if fault.kind != "delay":
                return fault_reply(spec.dialect, fault, echo_detail(call.request, call.args), self.wall())
            delay_s = fault.delay_s
        if spec.authenticated:
            refusal = self._authenticate(spec, call.credential)
            if refusal is not None:
                return refusal
        key = call.request.headers.get("Idempotency-Key")
        if spec.idempotent and key and call.request.method in SIDE_EFFECT_METHODS:
            reply = await self._idempotent(spec, call, key, delay_s)
        else:
            reply = await self._handle(spec, call, delay_s)
        left = self.limits.left(spec.name, spec.group, call.credential) if wait is not None else None
        if left is not None:  # as providers do: how much of the limit is left after this request
            reply.headers.setdefault(spec.dialect.quota_headers[0], str(left[1]))
            reply.headers.setdefault(spec.dialect.quota_headers[1], str(left[0]))
        return reply

    async def _handle(self, spec: RouteSpec, call: Call, delay_s: float) -> Reply:
        """The handler, after a scripted delay: the request was accepted and is being worked on slowly,
        so a client that gives up meanwhile does not know whether it took effect."""
        if delay_s and await self._sleep(delay_s):
            reply = spec.dialect.status_error(503)  # the server is closing mid-delay: nothing was done
            reply.outcome = "fault"
            return reply
        return await spec.handler(call)

    def _authenticate(self, spec: RouteSpec, credential: str | None) -> Reply | None:
        if not credential:
            return spec.dialect.auth_error("missing", "")
        if credential in self.api_keys:
            return None
        state = self.oauth.check_access_token(credential)
        if state == "valid":
            return None
        if state == "unknown":
            return spec.dialect.auth_error("invalid", credential)
        return spec.dialect.auth_error(state, "")

    async def _idempotent(self, spec: RouteSpec, call: Call, key: str, delay_s: float) -> Reply:
        """Stripe's rules: the first answer (if it succeeded) is replayed for the same key and body; a
        different body is refused; a repeat while the first is still running is a 409."""
        slot = (spec.name, call.credential or "", key)
        fingerprint = hashlib.sha256(call.raw).hexdigest()
        remembered = self._remembered.get(slot)
        if remembered is None:
            remembered = self._remembered[slot] = _Remembered(fingerprint)
            try:
                reply = await self._handle(spec, call, delay_s)
            except BaseException:
                self._remembered.pop(slot, None)
                raise
            if reply.status < 400:
                remembered.reply = reply
            else:
                self._remembered.pop(
                    slot, None
                )  # only answers that took effect are kept (Stripe does the same)
            reply.headers["Idempotency-Key"] = key
            return reply
        if remembered.fingerprint != fingerprint:
            message = (
                "Keys for idempotent requests can only be used with the same parameters as the first use."
            )
            return spec.dialect.error(400, "idempotency_error", message)
        if remembered.reply is None:
            message = "A request with this Idempotency-Key is still being processed; retry later."
            return spec.dialect.error(409, "idempotency_conflict", message, outcome="conflict")
        headers = {**remembered.reply.headers, "Idempotency-Key": key, "Idempotent-Replayed": "true"}
        return dataclasses.replace(remembered.reply, headers=headers, outcome="replayed")

    async def _sleep(self, seconds: float) -> bool:
        """Sleep, but wake when the server closes; True when it did."""
        assert self._closing is not None
        try:
            await asyncio.wait_for(self._closing.wait(), timeout=seconds)
        except TimeoutError:
            return False
        return True


class ThreadedSimulator:
    """A Simulator on its own event loop in a background thread, for sync tests and other processes:
    `with ThreadedSimulator() as sim: ...` (keyword arguments go to Simulator)."""

    def __init__(self, port: int = 0, **options: Any) -> None:
        self.simulator = Simulator(**options)
        self._port = port
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="provider-simulator", daemon=True)

    def __enter__(self) -> Simulator:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.simulator.start(self._port), self._loop).result(timeout=10)
        return self.simulator

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.simulator.close(), self._loop).result(timeout=15)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()
