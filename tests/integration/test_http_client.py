"""The guarded HTTP client against a real server on 127.0.0.1."""

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from cosmogen.domain.bindings import RenderedRequest
from cosmogen.integrations.egress import EgressPolicy
from cosmogen.integrations.http import HttpCallError, HttpClient
from cosmogen.testing.echo import Answer, EchoServer

LOCAL = EgressPolicy.from_strings(networks="127.0.0.1/32")


def scenario(
    body: Callable[[EchoServer, HttpClient, list[float]], Awaitable[Any]], policy: EgressPolicy = LOCAL
) -> Any:
    async def main() -> Any:
        server = EchoServer()
        await server.start()
        sleeps: list[float] = []

        async def fake_sleep(seconds: float) -> None:
            sleeps.append(seconds)

        client = HttpClient(policy, sleep=fake_sleep, random_unit=lambda: 0.5)
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
        assert sleeps == [1.0, 2.0]

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
        assert sleeps == [1.0, 2.0, 4.0]

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


def test_allowed_name_that_resolves_to_loopback_is_refused_at_connect_time() -> None:
    async def body(server: EchoServer, client: HttpClient, sleeps: list[float]) -> None:
        with pytest.raises(HttpCallError) as info:
            await client.send(RenderedRequest("GET", f"http://localhost:{server.port}/", {}, None, 2.0))
        assert info.value.kind == "egress"
        assert "127.0.0.1" not in str(info.value)
        assert server.requests == []
        assert sleeps == []

    scenario(body, EgressPolicy.from_strings(hosts="localhost"))
