"""The guarded HTTP client against real servers on 127.0.0.1 (127.0.0.2 plays a private address)."""

import asyncio
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

from cosmogen.domain.bindings import RenderedRequest
from cosmogen.integrations.egress import EgressPolicy
from cosmogen.integrations.http import MAX_BODY_BYTES, HttpCallError, HttpClient
from cosmogen.testing.echo import Answer, EchoServer

LOCAL = EgressPolicy.from_strings(networks="127.0.0.1/32")
CLOSE = {"Connection": "close"}  # a fresh connection, so a fresh lookup, for every request


def scenario(
    body: Callable[[EchoServer, HttpClient, list[float]], Awaitable[Any]],
    policy: EgressPolicy = LOCAL,
    resolver: AbstractResolver | None = None,
) -> Any:
    async def main() -> Any:
        server = EchoServer()
        await server.start()
        sleeps: list[float] = []

        async def fake_sleep(seconds: float) -> None:
            sleeps.append(seconds)

        client = HttpClient(
            policy, sleep=fake_sleep, random_unit=lambda: 0.5, resolver=resolver, dns_cache_s=0
        )
        await client.start()
        try:
            return await body(server, client, sleeps)
        finally:
            await client.close()
            await server.close()

    return asyncio.run(main())


def post(server: EchoServer, path: str = "/hook", **extra: Any) -> RenderedRequest:
    return RenderedRequest(
        extra.pop("method", "POST"),
        server.url + path,
        extra.pop("headers", {}),
        extra.pop("body", {"a": 1}),
        extra.pop("timeout_s", 5.0),
    )


def test_success_returns_status_and_json_body() -> None:
    async def body(server: EchoServer, client: HttpClient, sleeps: list[float]) -> None:
        response = await client.send(post(server, headers={"X-Test": "1"}))
        assert response.status == 200
        assert response.body == {"ok": True, "n": 1}
        assert response.attempts == 1
        assert server.requests[0].body == {"a": 1}
        assert server.requests[0].headers["X-Test"] == "1"

    scenario(body)


def test_idempotent_request_retries_5xx_with_backoff() -> None:
    async def body(server: EchoServer, client: HttpClient, sleeps: list[float]) -> None:
        server.script = [Answer(500, {"e": 1}), Answer(502, {"e": 2}), Answer(200, {"ok": 1})]
        response = await client.send(post(server, method="PUT"))
        assert response.attempts == 3
        assert sleeps == [0.75, 1.5]  # caps 1 s and 2 s, equal jitter at random_unit 0.5

    scenario(body)


def test_post_is_not_resent_after_a_500_without_a_key_but_is_with_one() -> None:
    async def body(server: EchoServer, client: HttpClient, sleeps: list[float]) -> None:
        server.script = [Answer(500, {"e": 1})]
        with pytest.raises(HttpCallError) as info:
            await client.send(post(server))
        assert (info.value.kind, info.value.status, info.value.attempts) == ("status", 500, 1)
        server.script = [Answer(500, {"e": 1}), Answer(200, {"ok": 1})]
        response = await client.send(post(server), idempotency_key="run1:n:b:0", key_header="Idempotency-Key")
        assert response.attempts == 2
        assert server.keys["run1:n:b:0"] == 2

    scenario(body)


def test_429_honours_retry_after() -> None:
    async def body(server: EchoServer, client: HttpClient, sleeps: list[float]) -> None:
        server.script = [Answer(429, {}, {"Retry-After": "7"}), Answer(200, {})]
        await client.send(post(server))
        assert sleeps == [7.0]

    scenario(body)


def test_client_errors_are_not_retried() -> None:
    async def body(server: EchoServer, client: HttpClient, sleeps: list[float]) -> None:
        server.script = [Answer(401, {"error": "bad token"})]
        with pytest.raises(HttpCallError) as info:
            await client.send(post(server, method="GET", body=None))
        assert info.value.status == 401
        assert info.value.body == {"error": "bad token"}
        assert len(server.requests) == 1

    scenario(body)


def test_retries_stop_after_three() -> None:
    async def body(server: EchoServer, client: HttpClient, sleeps: list[float]) -> None:
        server.script = [Answer(503)] * 5
        with pytest.raises(HttpCallError) as info:
            await client.send(post(server))
        assert info.value.attempts == 4
        assert sleeps == [0.75, 1.5, 3.0]  # caps 1, 2, 4 s; equal jitter at random_unit 0.5

    scenario(body)


def test_timeout_is_reported() -> None:
    async def body(server: EchoServer, client: HttpClient, sleeps: list[float]) -> None:
        server.script = [Answer(200, {}, delay_s=2.0)]
        with pytest.raises(HttpCallError) as info:
            await client.send(post(server, timeout_s=0.2))
        assert info.value.kind == "timeout"

    scenario(body)


def test_loopback_is_refused_without_an_allowlist_and_nothing_is_sent() -> None:
    async def body(server: EchoServer, client: HttpClient, sleeps: list[float]) -> None:
        with pytest.raises(HttpCallError) as info:
            await client.send(post(server))
        assert info.value.kind == "egress"
        with pytest.raises(HttpCallError) as named:
            await client.send(RenderedRequest("GET", f"http://localhost.:{server.port}/", {}, None, 2.0))
        assert named.value.kind == "egress"
        assert server.requests == []

    scenario(body, EgressPolicy())


def test_a_name_that_resolves_to_loopback_is_refused_at_connect_time() -> None:
    async def body(server: EchoServer, client: HttpClient, sleeps: list[float]) -> None:
        with pytest.raises(HttpCallError) as info:
            await client.send(
                RenderedRequest("GET", f"http://loopback.example:{server.port}/", {}, None, 2.0)
            )
        assert (info.value.kind, info.value.rule) == ("egress", "address")
        assert "127.0.0.1" not in str(info.value)
        assert server.requests == []
        assert sleeps == []

    scenario(body, EgressPolicy(), resolver=Answers([["127.0.0.1"]]))


def test_an_allowlisted_name_may_resolve_to_a_private_address_but_never_to_metadata() -> None:
    async def body(server: EchoServer, client: HttpClient, sleeps: list[float]) -> None:
        response = await client.send(
            RenderedRequest("GET", f"http://localhost:{server.port}/", {}, None, 2.0)
        )
        assert response.status == 200
        assert len(server.requests) == 1

    scenario(body, EgressPolicy.from_strings(hosts="localhost"))
    resolver = Answers([["169.254.169.254"]])
    with pytest.raises(HttpCallError) as info:
        asyncio.run(
            one_get("http://meta.corp.example/", EgressPolicy.from_strings(hosts="*.corp.example"), resolver)
        )
    assert info.value.rule == "metadata"
    assert "COSMOGEN_EGRESS_ALLOW_METADATA" in str(info.value)


class Answers(AbstractResolver):
    """A stub resolver: the n-th lookup gets answers[n % len(answers)]; counts lookups."""

    def __init__(self, answers: list[list[str]]) -> None:
        self.answers = answers
        self.calls = 0

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        chosen = self.answers[self.calls % len(self.answers)]
        self.calls += 1
        return [
            ResolveResult(
                hostname=host,
                host=address,
                port=port,
                family=socket.AF_INET6 if ":" in address else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for address in chosen
        ]

    async def close(self) -> None:
        return None


async def one_get(url: str, policy: EgressPolicy, resolver: AbstractResolver | None = None) -> Any:
    client = HttpClient(policy, resolver=resolver, dns_cache_s=0)
    await client.start()
    try:
        return await client.send(RenderedRequest("GET", url, {}, None, 2.0))
    finally:
        await client.close()


class Canary:
    """A TCP listener that only counts accepted connections."""

    def __init__(self) -> None:
        self.accepted = 0
        self._server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> None:
        self._server = await asyncio.start_server(self._accept, host, port)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        writer.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


def test_rebinding_with_a_stub_resolver_never_reaches_the_private_listener() -> None:
    """SSRF-02 without a namespace (the full test is tests/reliability/test_ssrf02_dns_rebinding.py).

    No address here is public, so the allowlisted 127.0.0.1 (the echo server) plays the public answer
    and 127.0.0.2, not allowlisted, the private one; a canary listens there on the same port. The stub
    resolver alternates the two on every lookup (no DNS cache), and answers both at once for the mixed
    case."""

    async def body(server: EchoServer, client: HttpClient, sleeps: list[float]) -> None:
        canary = Canary()
        await canary.start("127.0.0.2", server.port)
        try:
            kinds = []
            for i in range(40):
                try:
                    await client.send(
                        RenderedRequest("GET", f"http://rebind.example:{server.port}/{i}", CLOSE, None, 2.0)
                    )
                except HttpCallError as exc:
                    kinds.append(exc.kind)
            assert kinds == ["egress"] * 20
            assert [r.path for r in server.requests] == [f"/{i}" for i in range(0, 40, 2)]
            assert {r.headers["Host"] for r in server.requests} == {f"rebind.example:{server.port}"}
            assert resolver.calls == 40  # one lookup per request: the address checked is the one used
            mixed.answers = [["127.0.0.1", "127.0.0.2"]]
            with pytest.raises(HttpCallError) as info:
                await one_get(f"http://mixed.example:{server.port}/", LOCAL, mixed)
            assert "every address must be public" in str(info.value)
            assert len(server.requests) == 20
            assert canary.accepted == 0
        finally:
            await canary.close()

    resolver = Answers([["127.0.0.1"], ["127.0.0.2"]])
    mixed = Answers([])
    scenario(body, LOCAL, resolver=resolver)


def test_redirects_are_followed_and_each_hop_is_checked() -> None:
    async def body(server: EchoServer, client: HttpClient, sleeps: list[float]) -> None:
        canary = Canary()
        await canary.start("127.0.0.2", server.port)
        try:
            server.script = [Answer(302, None, {"Location": "/landed"}), Answer(200, {"ok": 1})]
            response = await client.send(post(server, method="GET", body=None))
            assert (response.status, response.redirects, server.requests[-1].path) == (200, 1, "/landed")
            server.script = [Answer(302, None, {"Location": f"http://127.0.0.2:{server.port}/x"})]
            with pytest.raises(HttpCallError) as info:
                await client.send(post(server, method="GET", body=None))
            assert (info.value.kind, info.value.rule) == ("egress", "address")
            assert "at redirect 1" in str(info.value)
            server.script = [Answer(302, None, {"Location": f"/{n}"}) for n in range(6)]
            with pytest.raises(HttpCallError) as chain:
                await client.send(post(server, method="GET", body=None))
            assert chain.value.rule == "redirect"
            assert canary.accepted == 0
        finally:
            await canary.close()

    scenario(body)


def test_credentials_are_dropped_on_a_redirect_to_another_origin() -> None:
    async def body(server: EchoServer, client: HttpClient, sleeps: list[float]) -> None:
        other = EchoServer()
        await other.start()
        try:
            secret = {
                "Authorization": "Bearer sk-x",
                "Cookie": "s=1",
                "X-Api-Key": "k",
                "Accept": "text/plain",
            }
            server.script = [Answer(307, None, {"Location": f"{other.url}/there"})]
            await client.send(post(server, method="GET", body=None, headers=dict(secret)))
            arrived = other.requests[0].headers
            assert "Authorization" not in arrived and "Cookie" not in arrived and "X-Api-Key" not in arrived
            assert arrived["Accept"] == "text/plain"
            server.script = [Answer(307, None, {"Location": "/here"})]
            await client.send(post(server, method="GET", body=None, headers=dict(secret)))
            assert server.requests[-1].headers["Authorization"] == "Bearer sk-x"  # same origin: kept
        finally:
            await other.close()

    scenario(body)


def test_cookies_are_never_kept_between_calls() -> None:
    async def body(server: EchoServer, client: HttpClient, sleeps: list[float]) -> None:
        server.script = [Answer(200, {}, {"Set-Cookie": "session=abc; Path=/"})]
        await client.send(post(server, method="GET", body=None))
        await client.send(post(server, method="GET", body=None))
        assert "Cookie" not in server.requests[1].headers

    scenario(body)


def test_answers_larger_than_the_cap_are_truncated() -> None:
    async def body(server: EchoServer, client: HttpClient, sleeps: list[float]) -> None:
        server.script = [Answer(200, "x" * (MAX_BODY_BYTES + 1000))]
        response = await client.send(post(server, method="GET", body=None))
        assert isinstance(response.body, str) and response.body.endswith("[truncated]")
        assert len(response.body.encode()) < MAX_BODY_BYTES + 100

    scenario(body)
