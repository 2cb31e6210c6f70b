"""The one HTTP client for all egress: the egress guard, timeouts, redirects followed hop by hop, retries.

Every hop goes through the egress guard twice: `check_url` on its URL (the request's own, then each
`Location`), and `check_answer` on the DNS answer at connect time (`GuardedResolver`), so a name that
resolves, or re-resolves, to a private address is refused, and the address connected to is one that
was checked (aiohttp connects to the resolver's answer and never resolves again).

Redirects (at most MAX_REDIRECTS, then the call is refused):
- GET and HEAD follow 301, 302, 303, 307 and 308;
- any method follows 303 as a GET without the body (the server acted and points at the result);
- other methods follow 307 and 308 with method and body only when the request may be repeated (an
  idempotent method or an idempotency key), since the body is sent again; 301 and 302 are not followed
  for them (clients disagree on what they mean) and come back as the answer;
- a request with `follow_redirects=False` (an http binding's `request.follow_redirects: false`) gets the
  first 3xx as its answer.
Across origins (scheme, host, port) only the headers in `_KEPT_ACROSS_ORIGINS` and the idempotency key
go on: Authorization, Cookie, API-key headers and every other header the caller set are dropped. No
cookie jar: cookies from one call never ride along on another.
"""

from __future__ import annotations

import asyncio
import json
import random
import socket
import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from cosmogen.domain.bindings import RenderedRequest
from cosmogen.integrations.egress import (
    EgressBlocked,
    EgressPolicy,
    Target,
    check_answer,
    check_spelling,
    check_url,
)
from cosmogen.integrations.retry import Failure, RetryPolicy, Verdict, classify, parse_retry_after, repeatable

if TYPE_CHECKING:
    from cosmogen.integrations.ratelimit import Throttle

MAX_BODY_BYTES = 1024 * 1024
MAX_REDIRECTS = 5
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_KEPT_ACROSS_ORIGINS = frozenset(
    {
        "accept",
        "accept-encoding",
        "accept-language",
        "cache-control",
        "content-language",
        "content-type",
        "pragma",
        "user-agent",
    }
)


# True while this client's own requests connect (tasks aiohttp starts inherit it): lets the test suite's
# egress audit (tests/egress_audit.py) tell guarded connections from any other at socket level.
THROUGH_GUARD: ContextVar[bool] = ContextVar("cosmogen_through_egress_guard", default=False)


class EgressRefused(OSError):
    """Raised inside the resolver: an OSError so aiohttp carries it out as the connection error's cause."""

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(message)
        self.rule = rule
        self.message = message


class GuardedResolver(AbstractResolver):
    """Resolves names with `inner`, then refuses the whole answer unless every address passes the policy.

    What it returns is what aiohttp connects to: the checked addresses, pinned for this connection."""

    def __init__(self, policy: EgressPolicy, inner: AbstractResolver | None = None) -> None:
        self._policy = policy
        self._inner = inner or aiohttp.ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        name = host.lower().rstrip(".")
        try:
            check_answer(name, [result["host"] for result in results], self._policy)
        except EgressBlocked as exc:
            raise EgressRefused(exc.rule, str(exc)) from None
        return results

    async def close(self) -> None:
        await self._inner.close()


@dataclass(frozen=True, slots=True)
class HttpResponse:
    status: int
    headers: dict[str, str]
    body: Any
    attempts: int
    elapsed_ms: float
    url: str = ""  # where the answer came from (after redirects)
    redirects: int = 0


class HttpCallError(Exception):
    """A call that did not succeed. `kind` is egress | status | connect | timeout | disconnect; an egress
    refusal also names the guard's `rule` (scheme, url-syntax, userinfo, host-name, metadata, address,
    redirect)."""

    def __init__(
        self,
        kind: str,
        message: str,
        *,
        attempts: int,
        status: int | None = None,
        body: Any = None,
        rule: str | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.status = status
        self.attempts = attempts
        self.body = body
        self.rule = rule


def egress_error(rule: str, message: str, attempts: int, where: str = "") -> HttpCallError:
    return HttpCallError("egress", f"egress blocked ({rule}){where}: {message}", attempts=attempts, rule=rule)


@dataclass(frozen=True, slots=True)
class _Answer:
    status: int
    headers: dict[str, str]
    body: Any
    url: str
    redirects: int


@dataclass(frozen=True, slots=True)
class _Hop:
    """The state of one request along a redirect chain."""

    target: Target
    method: str
    headers: dict[str, str]
    body: Any
    redirects: int = 0


@dataclass
class HttpClient:
    """Owns one aiohttp session; `start` and `close` bracket its life (the composition root does both).

    `resolver` is the DNS resolver the guard wraps (aiohttp's threaded getaddrinfo by default);
    `dns_cache_s` how long aiohttp keeps an answer (only checked answers are kept; 0 asks DNS on
    every new connection)."""

    policy: EgressPolicy
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    random_unit: Callable[[], float] = random.random
    now: Callable[[], datetime] = lambda: datetime.now(UTC)
    max_connections: int = 100
    resolver: AbstractResolver | None = None
    dns_cache_s: int = 10
    _session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(
            limit=self.max_connections,
            resolver=GuardedResolver(self.policy, self.resolver),
            use_dns_cache=self.dns_cache_s > 0,
            ttl_dns_cache=self.dns_cache_s or None,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            trust_env=False,  # no proxy from the environment: it would connect on our behalf, unchecked
            auto_decompress=True,
            cookie_jar=aiohttp.DummyCookieJar(),
        )

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
        safe_to_repeat: bool = False,
    ) -> HttpResponse:
        """Send with the retry policy (the client's, or `retry` for this call: the OAuth token manager
        passes one with no retries because it backs off itself). A request is repeated after a timeout
        or a 5xx only when that is safe: an idempotent method, an idempotency key, or `safe_to_repeat`
        (the caller knows the call only reads, e.g. a chat completion sent as a POST). With a
        `throttle`, every attempt (retries too) first takes a token of its key, and a 429 that says until
        when (Retry-After, x-ratelimit-reset) blocks the key for every process before this call's own
        retry waits.

        A body goes out as JSON, or form-encoded when the request's Content-Type says
        application/x-www-form-urlencoded (OAuth token and revocation endpoints). Redirects are followed
        as the module docstring says; an attempt is the whole chain."""
        if self._session is None:
            raise RuntimeError("HttpClient.start() was not called")
        try:
            target = check_url(request.url, self.policy)
        except EgressBlocked as exc:
            raise egress_error(exc.rule, str(exc), attempts=0) from None
        headers = dict(request.headers)
        if key_header and idempotency_key:
            headers[key_header] = idempotency_key
        can_repeat = safe_to_repeat or repeatable(request.method, bool(key_header and idempotency_key))
        first = _Hop(target, request.method.upper(), headers, request.body)
        policy = retry or self.retry
        started = time.perf_counter()
        attempt = 0
        while True:
            attempt += 1
            if throttle is not None:
                await throttle.acquire()
            status, failure, answer, retry_after = await self._attempt(
                first, request, key_header, can_repeat, attempt
            )
            if throttle is not None and status == 429 and answer is not None:
                await throttle.block_from(answer.headers)
            verdict = classify(status, failure, repeatable_request=can_repeat)
            if verdict is Verdict.SUCCESS and answer is not None:
                elapsed = (time.perf_counter() - started) * 1000
                return HttpResponse(
                    answer.status, answer.headers, answer.body, attempt, elapsed, answer.url, answer.redirects
                )
            if verdict is Verdict.RETRY and attempt <= policy.max_retries:
                await self.sleep(policy.backoff(attempt, self.random_unit(), retry_after))
                continue
            raise _failure(status, failure, answer, attempt)

    async def _attempt(
        self, hop: _Hop, request: RenderedRequest, key_header: str | None, can_repeat: bool, attempt: int
    ) -> tuple[int | None, Failure | None, _Answer | None, float | None]:
        """One attempt: the request and the redirects it is allowed to follow, under one timeout."""
        deadline = time.monotonic() + request.timeout_s
        follow = request.follow_redirects
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None, Failure.TIMEOUT, None, None
            try:
                outcome = await self._hop(hop, remaining, follow, can_repeat)
            except TimeoutError:
                return None, Failure.TIMEOUT, None, None
            except (aiohttp.ClientConnectorError, aiohttp.ClientSSLError) as exc:
                refused = getattr(exc, "os_error", None)
                if isinstance(refused, EgressRefused):
                    where = f" at redirect {hop.redirects}" if hop.redirects else ""
                    raise egress_error(refused.rule, refused.message, attempt, where) from None
                return None, Failure.CONNECT, None, None
            except (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError, aiohttp.ClientOSError):
                return None, Failure.DISCONNECT, None, None
            if isinstance(outcome, _Answer):
                retry_after = parse_retry_after(outcome.headers.get("Retry-After"), self.now())
                return outcome.status, None, outcome, retry_after
            status, location = outcome
            hop = _next_hop(hop, status, location, self.policy, key_header, attempt)

    async def _hop(
        self, hop: _Hop, timeout_s: float, follow: bool, can_repeat: bool
    ) -> _Answer | tuple[int, str]:
        """One request; a redirect to follow comes back as (status, Location) with the answer unread."""
        assert self._session is not None
        send_body = hop.body is not None and hop.method not in ("GET", "HEAD")
        as_form = send_body and _is_form(hop.headers)
        marked = THROUGH_GUARD.set(True)
        try:
            return await self._send_hop(hop, timeout_s, follow, can_repeat, send_body, as_form)
        finally:
            THROUGH_GUARD.reset(marked)

    async def _send_hop(
        self, hop: _Hop, timeout_s: float, follow: bool, can_repeat: bool, send_body: bool, as_form: bool
    ) -> _Answer | tuple[int, str]:
        assert self._session is not None
        async with self._session.request(
            hop.method,
            hop.target.url,  # the URL the guard checked, not a re-parse of the string
            json=hop.body if send_body and not as_form else None,
            data=hop.body if as_form else None,
            headers=hop.headers,
            timeout=aiohttp.ClientTimeout(total=timeout_s),
            allow_redirects=False,
        ) as resp:
            location = resp.headers.get("Location")
            if follow and location and redirect_method(hop.method, resp.status, can_repeat) is not None:
                return resp.status, location
            body = await _read_body(resp)
            return _Answer(resp.status, dict(resp.headers), body, str(hop.target.url), hop.redirects)


def redirect_method(method: str, status: int, can_repeat: bool) -> str | None:
    """The method to follow a redirect with, or None to hand the 3xx back as the answer."""
    if status not in REDIRECT_STATUSES:
        return None
    if method in ("GET", "HEAD"):
        return method
    if status == 303:
        return "GET"
    if status in (307, 308) and can_repeat:
        return method
    return None


def _next_hop(
    hop: _Hop, status: int, location: str, policy: EgressPolicy, key_header: str | None, attempt: int
) -> _Hop:
    """Check the redirect's target like a new request; raise an egress error to stop the chain."""
    number = hop.redirects + 1
    where = f" at redirect {number}"
    if number > MAX_REDIRECTS:
        raise egress_error(
            "redirect",
            f"more than {MAX_REDIRECTS} redirects; the chain was stopped (a binding with "
            "request.follow_redirects: false gets the first redirect as its answer)",
            attempt,
            where,
        )
    try:
        check_spelling(location)
        joined = str(hop.target.url.join(URL(location)))
        target = check_url(joined, policy)
    except EgressBlocked as exc:
        raise egress_error(exc.rule, str(exc), attempt, where) from None
    except Exception:  # the URL parser's own failures (ValueError, IndexError...) refuse the hop
        raise egress_error(
            "url-syntax", "the redirect's Location could not be parsed", attempt, where
        ) from None
    method = redirect_method(hop.method, status, True) or hop.method
    body = hop.body if method == hop.method else None
    headers = dict(hop.headers)
    if body is None:
        headers = {k: v for k, v in headers.items() if k.lower() not in ("content-type", "content-length")}
    if target.origin != hop.target.origin:
        kept = _KEPT_ACROSS_ORIGINS | ({key_header.lower()} if key_header else set())
        headers = {k: v for k, v in headers.items() if k.lower() in kept}
    return _Hop(target, method, headers, body, number)


def _is_form(headers: dict[str, str]) -> bool:
    return any(
        k.lower() == "content-type" and v.split(";")[0].strip() == "application/x-www-form-urlencoded"
        for k, v in headers.items()
    )


async def _read_body(resp: aiohttp.ClientResponse) -> Any:
    # read(n) returns what has arrived so far, not n bytes: read until the end or just past the cap.
    chunks: list[bytes] = []
    size = 0
    while size <= MAX_BODY_BYTES:
        chunk = await resp.content.read(MAX_BODY_BYTES + 1 - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    raw = b"".join(chunks)
    truncated = len(raw) > MAX_BODY_BYTES
    raw = raw[:MAX_BODY_BYTES]
    text = raw.decode(resp.charset or "utf-8", errors="replace")
    if not truncated and "json" in (resp.content_type or ""):
        try:
            return json.loads(text)
        except ValueError:
            return text
    return text + ("…[truncated]" if truncated else "")


def _failure(
    status: int | None, failure: Failure | None, answer: _Answer | None, attempts: int
) -> HttpCallError:
    if failure is not None:
        messages = {
            Failure.CONNECT: "could not connect",
            Failure.TIMEOUT: "no answer before the timeout",
            Failure.DISCONNECT: "the connection broke during the call",
        }
        return HttpCallError(
            failure.value, f"{messages[failure]} (after {attempts} attempts)", attempts=attempts
        )
    body = answer.body if answer is not None else None
    return HttpCallError(
        "status", f"HTTP {status} (after {attempts} attempts)", attempts=attempts, status=status, body=body
    )
