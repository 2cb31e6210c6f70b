"""The one HTTP client for all egress: the egress guard, timeouts, no automatic redirects, retries.

Every attempt goes through `EgressPolicy` twice: the URL before sending, and each address the resolver
returns at connect time (`GuardedResolver`), so a name that resolves to a private address is refused.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import random
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from cosmogen.domain.bindings import RenderedRequest
from cosmogen.integrations.egress import EgressBlocked, EgressPolicy, check_address, check_url
from cosmogen.integrations.retry import Failure, RetryPolicy, Verdict, classify, parse_retry_after, repeatable

if TYPE_CHECKING:
    from cosmogen.integrations.ratelimit import Throttle

MAX_BODY_BYTES = 1024 * 1024


class EgressRefused(OSError):
    """Raised inside the resolver: an OSError so aiohttp carries it out as the connection error's cause."""


class GuardedResolver(AbstractResolver):
    """Resolves names, then drops every address the policy refuses; none left means the call is refused."""

    def __init__(self, policy: EgressPolicy, inner: AbstractResolver | None = None) -> None:
        self._policy = policy
        self._inner = inner or aiohttp.ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        allowed = []
        for result in results:
            try:
                check_address(ipaddress.ip_address(result["host"]), self._policy)
            except (EgressBlocked, ValueError):
                continue
            allowed.append(result)
        if not allowed:
            # An OSError, so aiohttp reports it as a connection error that names no address.
            raise EgressRefused(
                f"egress blocked: {host} resolves only to private, local or reserved addresses"
            )
        return allowed

    async def close(self) -> None:
        await self._inner.close()


@dataclass(frozen=True, slots=True)
class HttpResponse:
    status: int
    headers: dict[str, str]
    body: Any
    attempts: int
    elapsed_ms: float


class HttpCallError(Exception):
    """A call that did not succeed. `kind` is egress | status | connect | timeout | disconnect."""

    def __init__(
        self, kind: str, message: str, *, attempts: int, status: int | None = None, body: Any = None
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.status = status
        self.attempts = attempts
        self.body = body


@dataclass
class HttpClient:
    """Owns one aiohttp session; `start` and `close` bracket its life (the composition root does both)."""

    policy: EgressPolicy
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    random_unit: Callable[[], float] = random.random
    now: Callable[[], datetime] = lambda: datetime.now(UTC)
    max_connections: int = 100
    _session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=self.max_connections, resolver=GuardedResolver(self.policy))
        self._session = aiohttp.ClientSession(connector=connector, trust_env=False, auto_decompress=True)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def send(
        self,
        request: RenderedRequest,
        *,
        idempotency_key: str | None = None,
        key_header: str | None = None,
        throttle: Throttle | None = None,
        retry: RetryPolicy | None = None,
    ) -> HttpResponse:
        """Send with the retry policy (the client's, or `retry` for this call: the OAuth token manager
        passes one with no retries because it backs off itself). With a `throttle`, every attempt (retries
        too) first takes a token of its key, and a 429 that says until when (Retry-After,
        x-ratelimit-reset) blocks the key for every process before this call's own retry waits.

        A body goes out as JSON, or form-encoded when the request's Content-Type says
        application/x-www-form-urlencoded (OAuth token and revocation endpoints)."""
        if self._session is None:
            raise RuntimeError("HttpClient.start() was not called")
        try:
            check_url(request.url, self.policy)
        except EgressBlocked as exc:
            raise HttpCallError("egress", f"egress blocked ({exc.rule}): {exc}", attempts=0) from None
        headers = dict(request.headers)
        if key_header and idempotency_key:
            headers[key_header] = idempotency_key
        can_repeat = repeatable(request.method, bool(key_header and idempotency_key))
        policy = retry or self.retry
        started = time.perf_counter()
        attempt = 0
        while True:
            attempt += 1
            if throttle is not None:
                await throttle.acquire()
            status, failure, response, retry_after = await self._attempt(request, headers)
            if throttle is not None and status == 429 and response is not None:
                await throttle.block_from(response[1])
            verdict = classify(status, failure, repeatable_request=can_repeat)
            if verdict is Verdict.SUCCESS and response is not None:
                elapsed = (time.perf_counter() - started) * 1000
                return HttpResponse(response[0], response[1], response[2], attempt, elapsed)
            if verdict is Verdict.RETRY and attempt <= policy.max_retries:
                await self.sleep(policy.backoff(attempt, self.random_unit(), retry_after))
                continue
            raise _failure(status, failure, response, attempt)

    async def _attempt(
        self, request: RenderedRequest, headers: dict[str, str]
    ) -> tuple[int | None, Failure | None, tuple[int, dict[str, str], Any] | None, float | None]:
        assert self._session is not None
        send_body = request.body is not None and request.method not in ("GET", "HEAD")
        as_form = send_body and _is_form(headers)
        try:
            async with self._session.request(
                request.method,
                request.url,
                json=request.body if send_body and not as_form else None,
                data=request.body if as_form else None,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=request.timeout_s),
                allow_redirects=False,
            ) as resp:
                body = await _read_body(resp)
                answer = (resp.status, dict(resp.headers), body)
                return (
                    resp.status,
                    None,
                    answer,
                    parse_retry_after(resp.headers.get("Retry-After"), self.now()),
                )
        except TimeoutError:
            return None, Failure.TIMEOUT, None, None
        except (aiohttp.ClientConnectorError, aiohttp.ClientSSLError) as exc:
            if isinstance(getattr(exc, "os_error", None), EgressRefused):
                raise HttpCallError(
                    "egress",
                    "egress blocked (address): the host resolves to a private, local or reserved address",
                    attempts=1,
                ) from None
            return None, Failure.CONNECT, None, None
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError, aiohttp.ClientOSError):
            return None, Failure.DISCONNECT, None, None


def _is_form(headers: dict[str, str]) -> bool:
    return any(
        k.lower() == "content-type" and v.split(";")[0].strip() == "application/x-www-form-urlencoded"
        for k, v in headers.items()
    )


async def _read_body(resp: aiohttp.ClientResponse) -> Any:
    raw = await resp.content.read(MAX_BODY_BYTES + 1)
    truncated = len(raw) > MAX_BODY_BYTES
    raw = raw[:MAX_BODY_BYTES]
    text = raw.decode(resp.charset or "utf-8", errors="replace")
    if not truncated and "json" in (resp.content_type or ""):
        try:
            return json.loads(text)
        except ValueError:
            return text
    return text + ("…[truncated]" if truncated else "")


def _failure(status: int | None, failure: Failure | None, response: Any, attempts: int) -> HttpCallError:
    if failure is not None:
        messages = {
            Failure.CONNECT: "could not connect",
            Failure.TIMEOUT: "no answer before the timeout",
            Failure.DISCONNECT: "the connection broke during the call",
        }
        return HttpCallError(
            failure.value, f"{messages[failure]} (after {attempts} attempts)", attempts=attempts
        )
    body = response[2] if response else None
    return HttpCallError(
        "status", f"HTTP {status} (after {attempts} attempts)", attempts=attempts, status=status, body=body
    )
