"""The provider simulator, over real HTTP on 127.0.0.1: every provider route's happy path and error
shape, the OAuth server (PKCE, rotation, reuse detection, revocation), each scripted fault, the token
bucket, the request log and the three ways of running it."""

from __future__ import annotations

import asyncio
import base64
import json
import math
import struct
import subprocess
import sys
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest

from cosmogen.testing.simulator import (
    DEFAULT_API_KEY,
    AdminClient,
    Fault,
    ManualClock,
    Simulator,
    ThreadedSimulator,
    max_in_window,
    s256,
)

ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")
KEY = DEFAULT_API_KEY
AUTH = {"Authorization": f"Bearer {KEY}"}
WALL = 1_700_000_000.0
CLIENT, SECRET = "app", "app-secret"
REDIRECT = "http://127.0.0.1:9/callback"
VERIFIER = "v3rifier-" + "A" * 40  # 49 characters from the unreserved set
CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hello world"}]}
IG_USER = "17841400000000001"


@dataclass
class Answer:
    status: int
    headers: Mapping[str, str]  # case-insensitive, as HTTP headers are
    body: Any


def scenario(body: Callable[[Simulator, aiohttp.ClientSession], Awaitable[T]], **options: Any) -> T:
    async def main() -> T:
        options.setdefault("wall", lambda: WALL)
        async with Simulator(**options) as sim, aiohttp.ClientSession() as http:
            sim.oauth.register_client(CLIENT, SECRET, [REDIRECT])
            return await body(sim, http)

    return asyncio.run(main())


async def send(
    http: aiohttp.ClientSession, method: str, url: str, *, timeout: float = 5.0, **options: Any
) -> Answer:
    async with http.request(
        method, url, allow_redirects=False, timeout=aiohttp.ClientTimeout(total=timeout), **options
    ) as resp:
        text = await resp.text()
        body: Any = json.loads(text) if text and "json" in resp.content_type else text
        return Answer(resp.status, resp.headers, body)


def basic(client_id: str = CLIENT, secret: str = SECRET) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()}


async def authorize(sim: Simulator, http: aiohttp.ClientSession, **overrides: str) -> Answer:
    params = {
        "response_type": "code",
        "client_id": CLIENT,
        "redirect_uri": REDIRECT,
        "state": "state-1",
        "scope": "read write",
        "code_challenge": s256(VERIFIER),
        "code_challenge_method": "S256",
        **overrides,
    }
    return await send(
        http, "GET", sim.url + "/oauth/authorize", params={k: v for k, v in params.items() if v}
    )


def redirect_params(answer: Answer) -> dict[str, str]:
    assert answer.status == 302
    location = answer.headers["Location"]
    assert location.startswith(REDIRECT + "?")
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


async def token(
    sim: Simulator, http: aiohttp.ClientSession, form: dict[str, str], headers: dict[str, str] | None = None
) -> Answer:
    return await send(
        http, "POST", sim.url + "/oauth/token", data=form, headers=basic() if headers is None else headers
    )


async def chat(sim: Simulator, http: aiohttp.ClientSession, credential: str = KEY, **options: Any) -> Answer:
    headers = {"Authorization": f"Bearer {credential}", **options.pop("headers", {})}
    return await send(
        http,
        "POST",
        sim.url + "/v1/chat/completions",
        json=options.pop("json", CHAT),
        headers=headers,
        **options,
    )


# Providers


def test_openai_chat_is_deterministic_and_logged_as_sent() -> None:
    async def body(sim: Simulator, http: aiohttp.ClientSession) -> None:
        first = await chat(sim, http)
        second = await chat(sim, http, json={**CHAT, "max_tokens": 2})
        assert first.status == 200
        assert first.body["id"] == "chatcmpl-sim000001"
        assert first.body["created"] == int(WALL)
        assert first.body["choices"][0]["message"] == {
            "role": "assistant",
            "content": "Simulated reply 1: hello world",
            "refusal": None,
        }
        assert first.body["choices"][0]["finish_reason"] == "stop"
        assert first.body["usage"] == {"prompt_tokens": 2, "completion_tokens": 5, "total_tokens": 7}
        assert second.body["id"] == "chatcmpl-sim000002"
        assert second.body["choices"][0] == {
            "index": 0,
            "message": {"role": "assistant", "content": "Simulated reply", "refusal": None},
            "logprobs": None,
            "finish_reason": "length",
        }
        entry = sim.log.entries[0]
        assert (entry.method, entry.path, entry.route, entry.group) == (
            "POST",
            "/v1/chat/completions",
            "openai.chat",
            "openai",
        )
        assert entry.headers["Authorization"] == f"Bearer {KEY}"
        assert entry.body == CHAT
        assert (entry.credential, entry.status, entry.outcome, entry.within_policy) == (KEY, 200, "ok", None)
        assert sim.counts["openai.chat"] == 2
        assert [e.id for e in sim.effects] == ["chatcmpl-sim000001", "chatcmpl-sim000002"]

    scenario(body)


def test_openai_errors_have_the_openai_shape() -> None:
    async def body(sim: Simulator, http: aiohttp.ClientSession) -> None:
        url = sim.url + "/v1/chat/completions"
        missing = await send(http, "POST", url, json=CHAT)
        wrong = await chat(sim, http, credential="sk-wrong-0123456789abcdef")
        no_model = await chat(sim, http, json={"messages": CHAT["messages"]})
        assert missing.status == 401
        assert missing.body["error"]["type"] == "invalid_request_error"
        assert missing.body["error"]["code"] is None
        assert "didn't provide an API key" in missing.body["error"]["message"]
        assert wrong.status == 401
        assert set(wrong.body["error"]) == {"message", "type", "param", "code"}
        assert wrong.body["error"]["code"] == "invalid_api_key"
        assert "sk-wrong-0123456789abcdef" not in wrong.body["error"]["message"]  # masked, as OpenAI does
        assert wrong.body["error"]["message"].endswith("cdef.")
        assert no_model.status == 400
        assert no_model.body["error"]["param"] == "model"
        assert [e.outcome for e in sim.log.entries] == ["unauthorized", "unauthorized", "error"]
        assert sim.effects == []

    scenario(body)


def test_openai_responses_embeddings_and_images() -> None:
    async def body(sim: Simulator, http: aiohttp.ClientSession) -> None:
        responses = await send(
            http,
            "POST",
            sim.url + "/v1/responses",
            json={"model": "gpt-4o", "input": "tell me"},
            headers=AUTH,
        )
        assert responses.status == 200
        assert responses.body["id"] == "resp_sim000001"
        assert responses.body["status"] == "completed"
        assert responses.body["output"][0]["content"][0]["text"] == "Simulated response 1: tell me"
        short = await send(
            http,
            "POST",
            sim.url + "/v1/responses",
            json={"model": "gpt-4o", "input": [{"role": "user", "content": "a b c"}], "max_output_tokens": 1},
            headers=AUTH,
        )
        assert short.body["status"] == "incomplete"
        assert short.body["output"][0]["content"][0]["text"] == "Simulated"

        url = sim.url + "/v1/embeddings"
        many = await send(
            http, "POST", url, json={"model": "e", "input": ["cat", "dog"], "dimensions": 8}, headers=AUTH
        )
        again = await send(
            http, "POST", url, json={"model": "e", "input": "cat", "dimensions": 8}, headers=AUTH
        )
        packed = await send(
            http,
            "POST",
            url,
            json={"model": "e", "input": "cat", "dimensions": 8, "encoding_format": "base64"},
            headers=AUTH,
        )
        cat, dog = (d["embedding"] for d in many.body["data"])
        assert len(cat) == 8 and cat != dog
        assert again.body["data"][0]["embedding"] == cat
        assert math.isclose(sum(v * v for v in cat), 1.0, abs_tol=1e-4)
        unpacked = struct.unpack("<8f", base64.b64decode(packed.body["data"][0]["embedding"]))
        assert all(math.isclose(a, b, abs_tol=1e-6) for a, b in zip(unpacked, cat, strict=True))

        url = sim.url + "/v1/images/generations"
        images = await send(http, "POST", url, json={"prompt": "a fox", "n": 2}, headers=AUTH)
        assert [d["url"] for d in images.body["data"]] == [
            f"{sim.url}/files/image-1.png",
            f"{sim.url}/files/image-2.png",
        ]
        picture = await http.get(images.body["data"][0]["url"])
        assert (await picture.read()).startswith(b"\x89PNG\r\n")
        inline = await send(
            http, "POST", url, json={"prompt": "a fox", "response_format": "b64_json"}, headers=AUTH
        )
        assert base64.b64decode(inline.body["data"][0]["b64_json"]).startswith(b"\x89PNG")
        bad = await send(http, "POST", url, json={"prompt": "a fox", "size": "3x3"}, headers=AUTH)
        assert bad.status == 400 and bad.body["error"]["param"] == "size"

    scenario(body)


def test_idempotency_key_replays_the_first_answer() -> None:
    async def body(sim: Simulator, http: aiohttp.ClientSession) -> None:
        first = await chat(sim, http, headers={"Idempotency-Key": "k1"})
        repeat = await chat(sim, http, headers={"Idempotency-Key": "k1"})
        other_body = await chat(sim, http, headers={"Idempotency-Key": "k1"}, json={**CHAT, "model": "o3"})
        fresh = await chat(sim, http, headers={"Idempotency-Key": "k2"})
        assert first.body == repeat.body
        assert first.headers["Idempotency-Key"] == "k1" and "Idempotent-Replayed" not in first.headers
        assert repeat.headers["Idempotent-Replayed"] == "true"
        assert other_body.status == 400 and other_body.body["error"]["code"] == "idempotency_error"
        assert fresh.body["id"] == "chatcmpl-sim000002"
        assert [e.outcome for e in sim.log.entries] == ["ok", "replayed", "error", "ok"]
        assert len(sim.effects) == 2
        assert sim.keys == Counter({"k1": 3, "k2": 1})

    scenario(body)


def test_anthropic_messages() -> None:
    async def body(sim: Simulator, http: aiohttp.ClientSession) -> None:
        url = sim.url + "/v1/messages"
        request = {
            "model": "claude-sonnet-4-5",
            "max_tokens": 64,
            "messages": [{"role": "user", "content": "hi"}],
        }
        headers = {"x-api-key": KEY, "anthropic-version": "2023-06-01"}
        ok = await send(http, "POST", url, json=request, headers=headers)
        assert ok.status == 200
        assert ok.body["id"] == "msg_sim000001"
        assert ok.body["content"] == [{"type": "text", "text": "Simulated message 1: hi"}]
        assert ok.body["stop_reason"] == "end_turn"
        assert ok.body["usage"] == {"input_tokens": 1, "output_tokens": 4}
        capped = await send(http, "POST", url, json={**request, "max_tokens": 1}, headers=headers)
        assert capped.body["stop_reason"] == "max_tokens"

        no_version = await send(http, "POST", url, json=request, headers={"x-api-key": KEY})
        assert no_version.status == 400
        assert no_version.body == {
            "type": "error",
            "error": {"type": "invalid_request_error", "message": "anthropic-version: header is required"},
        }
        no_key = await send(http, "POST", url, json=request, headers={"anthropic-version": "2023-06-01"})
        assert no_key.status == 401
        assert no_key.body["error"] == {
            "type": "authentication_error",
            "message": "x-api-key header is required",
        }
        assistant_first = {**request, "messages": [{"role": "assistant", "content": "hi"}]}
        assert (await send(http, "POST", url, json=assistant_first, headers=headers)).status == 400
        assert len(sim.effects) == 2

    scenario(body)


def test_slack_post_and_schedule_messages() -> None:
    async def body(sim: Simulator, http: aiohttp.ClientSession) -> None:
        post = sim.url + "/api/chat.postMessage"
        as_json = await send(http, "POST", post, json={"channel": "C0SIM00001", "text": "hi"}, headers=AUTH)
        as_form = await send(http, "POST", post, data={"channel": "#general", "text": "yo", "token": KEY})
        assert as_json.status == 200
        assert as_json.body["ok"] is True
        assert as_json.body["ts"] == f"{int(WALL)}.000001"
        assert as_json.body["message"]["text"] == "hi"
        assert as_form.body["ok"] is True and as_form.body["channel"] == "general"

        bad_token = await send(
            http,
            "POST",
            post,
            json={"channel": "general", "text": "x"},
            headers={"Authorization": "Bearer no"},
        )
        no_token = await send(http, "POST", post, json={"channel": "general", "text": "x"})
        no_channel = await send(http, "POST", post, json={"channel": "C0NOPE", "text": "x"}, headers=AUTH)
        no_text = await send(http, "POST", post, json={"channel": "general"}, headers=AUTH)
        # Slack refuses with HTTP 200 and ok=false.
        assert [(a.status, a.body) for a in (bad_token, no_token, no_channel, no_text)] == [
            (200, {"ok": False, "error": "invalid_auth"}),
            (200, {"ok": False, "error": "not_authed"}),
            (200, {"ok": False, "error": "channel_not_found"}),
            (200, {"ok": False, "error": "no_text"}),
        ]
        assert [e.outcome for e in sim.log.entries[2:]] == ["unauthorized", "unauthorized", "error", "error"]

        schedule = sim.url + "/api/chat.scheduleMessage"
        later = await send(
            http,
            "POST",
            schedule,
            json={"channel": "general", "text": "later", "post_at": int(WALL) + 60},
            headers=AUTH,
        )
        assert later.body["ok"] is True
        assert later.body["scheduled_message_id"] == "Q0000000001"
        assert later.body["post_at"] == str(int(WALL) + 60)
        past = await send(
            http, "POST", schedule, json={"channel": "general", "text": "x", "post_at": 1}, headers=AUTH
        )
        assert past.body == {"ok": False, "error": "time_in_past"}
        assert [e.route for e in sim.effects] == [
            "slack.postMessage",
            "slack.postMessage",
            "slack.scheduleMessage",
        ]

    scenario(body)


def test_x_tweets() -> None:
    async def body(sim: Simulator, http: aiohttp.ClientSession) -> None:
        url = sim.url + "/2/tweets"
        created = await send(http, "POST", url, json={"text": "hello"}, headers=AUTH)
        assert created.status == 201
        assert created.body == {
            "data": {
                "id": "1850000000000000001",
                "text": "hello",
                "edit_history_tweet_ids": ["1850000000000000001"],
            }
        }
        duplicate = await send(http, "POST", url, json={"text": "hello"}, headers=AUTH)
        assert duplicate.status == 403
        assert "duplicate content" in duplicate.body["detail"]
        too_long = await send(http, "POST", url, json={"text": "x" * 281}, headers=AUTH)
        assert too_long.status == 400
        assert too_long.body["title"] == "Invalid Request" and too_long.body["errors"][0]["parameters"] == {
            "text": []
        }
        anonymous = await send(http, "POST", url, json={"text": "hi"})
        assert anonymous.status == 401
        assert anonymous.headers["Content-Type"].startswith("application/problem+json")
        assert anonymous.body == {
            "title": "Unauthorized",
            "detail": "Unauthorized",
            "type": "about:blank",
            "status": 401,
        }
        assert len(sim.effects) == 1

    scenario(body)


def test_instagram_container_then_publish_posts_and_stories() -> None:
    async def body(sim: Simulator, http: aiohttp.ClientSession) -> None:
        base = f"{sim.url}/v21.0/{IG_USER}"
        image = {"image_url": "https://example.test/a.png", "caption": "hi"}
        container = await send(http, "POST", base + "/media", data={**image, "access_token": KEY})
        assert container.status == 200 and container.body == {"id": "17900000000000001"}
        status = await send(http, "GET", f"{sim.url}/v21.0/17900000000000001", params={"access_token": KEY})
        assert status.body == {"status_code": "FINISHED", "id": "17900000000000001"}
        published = await send(
            http, "POST", base + "/media_publish", json={"creation_id": "17900000000000001"}, headers=AUTH
        )
        assert published.body == {"id": "18000000000000001"}
        again = await send(
            http, "POST", base + "/media_publish", json={"creation_id": "17900000000000001"}, headers=AUTH
        )
        assert again.status == 400 and again.body["error"]["code"] == 9007

        story = await send(
            http, "POST", base + "/media", params={**image, "media_type": "STORIES", "access_token": KEY}
        )
        story_post = await send(
            http,
            "POST",
            base + "/media_publish",
            params={"creation_id": story.body["id"], "access_token": KEY},
        )
        assert story_post.status == 200
        assert [(e.route, e.data.get("media_type")) for e in sim.effects] == [
            ("instagram.media", "IMAGE"),
            ("instagram.media_publish", "IMAGE"),
            ("instagram.media", "STORIES"),
            ("instagram.media_publish", "STORIES"),
        ]

        stranger = await send(http, "POST", f"{sim.url}/v21.0/999/media", data={**image, "access_token": KEY})
        assert stranger.status == 400
        error = stranger.body["error"]
        assert set(error) == {"message", "type", "code", "error_subcode", "fbtrace_id"}
        assert (error["type"], error["code"], error["error_subcode"]) == ("GraphMethodException", 100, 33)
        no_image = await send(http, "POST", base + "/media", data={"caption": "x", "access_token": KEY})
        assert no_image.body["error"]["message"] == "(#100) The parameter image_url is required."
        bad_token = await send(http, "POST", base + "/media", data={**image, "access_token": "nope"})
        assert bad_token.status == 400
        assert (bad_token.body["error"]["type"], bad_token.body["error"]["code"]) == ("OAuthException", 190)

    scenario(body)


def test_webhook_echoes_any_method_and_unknown_routes_are_logged_404s() -> None:
    async def body(sim: Simulator, http: aiohttp.ClientSession) -> None:
        put = await send(http, "PUT", sim.url + "/webhook/a/b", params={"x": "1"}, json={"k": [1, 2]})
        get = await send(http, "GET", sim.url + "/webhook")
        assert put.body == {
            "ok": True,
            "n": 1,
            "method": "PUT",
            "path": "/webhook/a/b",
            "query": {"x": "1"},
            "body": {"k": [1, 2]},
        }
        assert get.body["n"] == 2 and get.body["method"] == "GET"
        missing = await send(http, "POST", sim.url + "/v2/chat/completions", json={})
        assert missing.status == 404 and "no such route: POST /v2/chat/completions" in missing.body["message"]
        assert [(e.route, e.status) for e in sim.log.entries] == [
            ("webhook", 200),
            ("webhook", 200),
            ("unknown", 404),
        ]

    scenario(body)


# OAuth


def test_oauth_code_flow_with_pkce_and_single_use_codes() -> None:
    async def body(sim: Simulator, http: aiohttp.ClientSession) -> None:
        metadata = await send(http, "GET", sim.url + "/.well-known/oauth-authorization-server")
        assert metadata.body["code_challenge_methods_supported"] == ["S256"]
        assert metadata.body["token_endpoint"] == sim.url + "/oauth/token"

        params = redirect_params(await authorize(sim, http))
        assert params["state"] == "state-1"
        assert params["iss"] == sim.url
        assert params["code"] == "sim-code-000001"
        form = {
            "grant_type": "authorization_code",
            "code": params["code"],
            "redirect_uri": REDIRECT,
            "code_verifier": VERIFIER,
        }
        issued = await token(sim, http, form)
        assert issued.status == 200
        assert issued.headers["Cache-Control"] == "no-store"
        assert issued.body == {
            "access_token": "sim-at-000001",
            "token_type": "Bearer",
            "expires_in": 3600,
            "refresh_token": "sim-rt-000001",
            "scope": "read write",
        }
        assert (await chat(sim, http, issued.body["access_token"])).status == 200
        assert sim.log.select("openai.chat")[0].credential == "sim-at-000001"

        replayed = await token(sim, http, form)
        assert replayed.status == 400 and replayed.body["error"] == "invalid_grant"
        # A second use of a code revokes what the first use issued (RFC 6749 §4.1.2).
        after = await chat(sim, http, issued.body["access_token"])
        assert after.status == 401 and after.body["error"]["code"] == "token_revoked"
        assert sim.oauth.revocations == [("sim-family-000001", "code_reuse")]
        assert sim.counts["oauth.token"] == 2
        assert [e.credential for e in sim.log.select("oauth")] == [None, CLIENT, CLIENT, CLIENT]

    scenario(body)


def test_authorize_refuses_bad_requests() -> None:
    async def body(sim: Simulator, http: aiohttp.ClientSession) -> None:
        # A 43-character verifier is also a well-formed challenge: only the method makes it wrong.
        plain = redirect_params(
            await authorize(sim, http, code_challenge_method="plain", code_challenge=VERIFIER[:43])
        )
        assert plain["error"] == "invalid_request" and "code" not in plain
        assert "S256" in plain["error_description"]
        assert plain["state"] == "state-1" and plain["iss"] == sim.url
        implicit_plain = redirect_params(await authorize(sim, http, code_challenge_method=""))
        assert implicit_plain["error"] == "invalid_request"
        no_pkce = redirect_params(await authorize(sim, http, code_challenge="", code_challenge_method=""))
        assert "code_challenge" in no_pkce["error_description"]
        no_state = redirect_params(await authorize(sim, http, state=""))
        assert no_state["error"] == "invalid_request" and "state" not in no_state
        implicit = redirect_params(await authorize(sim, http, response_type="token"))
        assert implicit["error"] == "unsupported_response_type"
        # Never redirect to an unknown client's or an unregistered URI (no open redirector).
        for bad in (
            await authorize(sim, http, client_id="nobody"),
            await authorize(sim, http, redirect_uri="http://evil.test/"),
        ):
            assert bad.status == 400 and "Location" not in bad.headers
            assert bad.body["error"] == "invalid_request"
        assert sim.oauth.codes == {}

    scenario(body)


def test_token_endpoint_checks_verifier_redirect_and_client() -> None:
    async def body(sim: Simulator, http: aiohttp.ClientSession) -> None:
        async def code() -> str:
            return redirect_params(await authorize(sim, http))["code"]

        def form(code: str, **extra: str) -> dict[str, str]:
            return {
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": REDIRECT,
                "code_verifier": VERIFIER,
                **extra,
            }

        spent = await code()
        wrong_verifier = await token(sim, http, form(spent, code_verifier="B" * 43))
        assert (wrong_verifier.status, wrong_verifier.body["error"]) == (400, "invalid_grant")
        assert (await token(sim, http, form(spent))).body[
            "error"
        ] == "invalid_grant"  # any attempt spends the code
        wrong_redirect = await token(sim, http, form(await code(), redirect_uri=REDIRECT + "x"))
        assert wrong_redirect.body["error"] == "invalid_grant"

        wrong_secret = await token(sim, http, form(await code()), headers=basic(secret="nope"))  # noqa: S106 (a wrong fake secret)
        assert wrong_secret.status == 401 and wrong_secret.body["error"] == "invalid_client"
        assert wrong_secret.headers["WWW-Authenticate"].startswith("Basic")
        both = await token(sim, http, form(await code(), client_secret=SECRET))
        assert (both.status, both.body["error"]) == (400, "invalid_request")
        posted = await token(
            sim, http, form(await code(), client_id=CLIENT, client_secret=SECRET), headers={}
        )
        assert posted.status == 200 and "refresh_token" in posted.body  # client_secret_post
        as_json = await send(http, "POST", sim.url + "/oauth/token", json=form(await code()), headers=basic())
        assert (as_json.status, as_json.body["error"]) == (400, "invalid_request")
        password = await token(sim, http, {"grant_type": "password", "username": "u", "password": "p"})
        assert password.body["error"] == "unsupported_grant_type"

    scenario(body)


def test_authorization_codes_expire() -> None:
    clock = ManualClock(100.0)

    async def body(sim: Simulator, http: aiohttp.ClientSession) -> None:
        code = redirect_params(await authorize(sim, http))["code"]
        clock.advance(61)
        late = await token(
            sim,
            http,
            {
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": REDIRECT,
                "code_verifier": VERIFIER,
            },
        )
        assert late.body == {"error": "invalid_grant", "error_description": "authorization code expired"}

    scenario(body, clock=clock)


def test_refresh_rotation_and_reuse_revokes_the_family() -> None:
    async def body(sim: Simulator, http: aiohttp.ClientSession) -> None:
        grant = sim.oauth.issue(CLIENT, "read write")
        assert grant.refresh_token is not None

        def refresh(rt: str, **extra: str) -> Awaitable[Answer]:
            return token(sim, http, {"grant_type": "refresh_token", "refresh_token": rt, **extra})

        second = await refresh(grant.refresh_token)
        assert second.status == 200
        assert second.body["refresh_token"] not in (None, grant.refresh_token)
        assert second.body["access_token"] != grant.access_token
        third = await refresh(second.body["refresh_token"], scope="read")
        assert third.body["scope"] == "read"
        wider = await refresh(third.body["refresh_token"], scope="read admin")
        assert wider.body["error"] == "invalid_scope"
        assert (await chat(sim, http, third.body["access_token"])).status == 200

        reused = await refresh(grant.refresh_token)  # rotated away two refreshes ago
        assert reused.status == 400 and reused.body["error"] == "invalid_grant"
        assert "reuse" in reused.body["error_description"]
        # The whole family is gone: the newest refresh token and every access token too.
        assert (await refresh(third.body["refresh_token"])).body["error"] == "invalid_grant"
        for access in (grant.access_token, second.body["access_token"], third.body["access_token"]):
            refused = await chat(sim, http, access)
            assert refused.status == 401 and refused.body["error"]["code"] == "token_revoked"
        assert sim.oauth.revocations == [("sim-family-000001", "reuse")]
        assert sim.counts["oauth.token"] == 5

    scenario(body)


def test_refresh_without_rotation_and_without_expiry() -> None:
    async def body(sim: Simulator, http: aiohttp.ClientSession) -> None:
        grant = sim.oauth.issue(CLIENT)
        assert grant.refresh_token is not None and "expires_in" not in grant.to_json()
        for _ in range(3):
            again = await token(
                sim, http, {"grant_type": "refresh_token", "refresh_token": grant.refresh_token}
            )
            assert again.status == 200
            assert set(again.body) == {"access_token", "token_type"}  # no expires_in, no new refresh token
        assert sim.oauth.revocations == []
        assert sim.oauth.check_access_token(grant.access_token) == "valid"

    scenario(body, rotate_refresh_tokens=False, expires_in=None)


def test_access_tokens_expire_on_the_simulator_clock() -> None:
    clock = ManualClock()

    async def body(sim: Simulator, http: aiohttp.ClientSession) -> None:
        grant = sim.oauth.issue(CLIENT)
        assert grant.expires_in == 60
        clock.now = 59.9
        assert (await chat(sim, http, grant.access_token)).status == 200
        clock.now = 60.0
        expired = await chat(sim, http, grant.access_token)
        assert expired.status == 401 and expired.body["error"]["code"] == "token_expired"
        slack = await send(
            http,
            "POST",
            sim.url + "/api/chat.postMessage",
            json={"channel": "general", "text": "x"},
            headers={"Authorization": f"Bearer {grant.access_token}"},
        )
        assert slack.body == {"ok": False, "error": "token_expired"}
        graph = await send(
            http,
            "POST",
            f"{sim.url}/v21.0/{IG_USER}/media",
            data={"image_url": "u", "access_token": grant.access_token},
        )
        assert (graph.status, graph.body["error"]["code"], graph.body["error"]["error_subcode"]) == (
            400,
            190,
            463,
        )

        assert grant.refresh_token is not None
        renewed = await token(
            sim, http, {"grant_type": "refresh_token", "refresh_token": grant.refresh_token}
        )
        assert (await chat(sim, http, renewed.body["access_token"])).status == 200
        assert sim.oauth.expire(renewed.body["access_token"]) == 1
        assert (await chat(sim, http, renewed.body["access_token"])).body["error"]["code"] == "token_expired"

    scenario(body, clock=clock, expires_in=60)


def test_revocation_endpoint() -> None:
    async def body(sim: Simulator, http: aiohttp.ClientSession) -> None:
        url = sim.url + "/oauth/revoke"
        unknown = await send(http, "POST", url, data={"token": "never-issued"}, headers=basic())
        assert (unknown.status, unknown.body) == (200, "")

        grant = sim.oauth.issue(CLIENT)
        in_url = await send(http, "POST", url, params={"token": grant.access_token}, data={}, headers=basic())
        assert in_url.status == 400 and "body" in in_url.body["error_description"]
        anonymous = await send(http, "POST", url, data={"token": grant.access_token})
        assert anonymous.status == 401
        assert sim.oauth.check_access_token(grant.access_token) == "valid"

        access_only = await send(
            http,
            "POST",
            url,
            data={"token": grant.access_token, "token_type_hint": "access_token"},
            headers=basic(),
        )
        assert access_only.status == 200
        assert (await chat(sim, http, grant.access_token)).status == 401
        assert grant.refresh_token is not None
        renewed = await token(
            sim, http, {"grant_type": "refresh_token", "refresh_token": grant.refresh_token}
        )
        assert renewed.status == 200  # revoking an access token leaves the grant

        posted = await send(
            http,
            "POST",
            url,
            data={"token": renewed.body["refresh_token"], "client_id": CLIENT, "client_secret": SECRET},
        )
        assert posted.status == 200
        assert (await chat(sim, http, renewed.body["access_token"])).status == 401
        gone = await token(
            sim, http, {"grant_type": "refresh_token", "refresh_token": renewed.body["refresh_token"]}
        )
        assert gone.body["error"] == "invalid_grant"
        assert sim.oauth.revocations == [("sim-family-000001", "revoked")]

    scenario(body)


# Faults


def test_rate_limit_fault_n_times_then_normal_answers() -> None:
    async def body(sim: Simulator, http: aiohttp.ClientSession) -> None:
        scripted = sim.inject(Fault.rate_limited(retry_after=7), "openai.chat", times=2)
        answers = [await chat(sim, http) for _ in range(3)]
        assert [a.status for a in answers] == [429, 429, 200]
        assert answers[0].headers["Retry-After"] == "7"
        assert answers[0].body["error"]["code"] == "rate_limit_exceeded"
        assert (scripted.fired, scripted.exhausted) == (2, True)
        assert [(e.outcome, e.fault) for e in sim.log.entries] == [
            ("fault", "rate_limit"),
            ("fault", "rate_limit"),
            ("ok", None),
        ]
        assert sim.count_429() == 2 and len(sim.effects) == 1

        sim.inject(Fault.rate_limited(retry_after=None, reset_after=30), "x")
        tweet = await send(http, "POST", sim.url + "/2/tweets", json={"text": "x"}, headers=AUTH)
        assert tweet.status == 429 and "Retry-After" not in tweet.headers
        assert (
            tweet.headers["x-ratelimit-reset"] == tweet.headers["x-rate-limit-reset"] == str(int(WALL) + 30)
        )
        assert tweet.body["title"] == "Too Many Requests"

    scenario(body)


@pytest.mark.parametrize(
    ("route", "status", "check"),
    [
        ("openai.chat", 503, lambda b: b["error"]["type"] == "server_error"),
        ("anthropic", 529, lambda b: b["error"]["type"] == "overloaded_error"),
        (
            "slack",
            500,
            lambda b: (
                b
                == {
                    "ok": False,
                    "error": "internal_error",
                    "response_metadata": {"messages": ["Internal Server Error"]},
                }
            ),
        ),
        ("x", 502, lambda b: b["title"] == "Bad Gateway"),
        ("instagram", 500, lambda b: b["error"]["is_transient"] is True and b["error"]["code"] == 2),
        ("oauth.token", 503, lambda b: b["error"] == "temporarily_unavailable"),
    ],
)
def test_server_error_faults_in_each_providers_shape(
    route: str, status: int, check: Callable[[Any], bool]
) -> None:
    requests: dict[str, tuple[str, str, dict[str, Any]]] = {
        "openai.chat": ("POST", "/v1/chat/completions", {"json": CHAT, "headers": AUTH}),
        "anthropic": ("POST", "/v1/messages", {"json": {}, "headers": {"x-api-key": KEY}}),
        "slack": ("POST", "/api/chat.postMessage", {"json": {}, "headers": AUTH}),
        "x": ("POST", "/2/tweets", {"json": {"text": "t"}, "headers": AUTH}),
        "instagram": ("POST", f"/v21.0/{IG_USER}/media", {"data": {"access_token": KEY}}),
        "oauth.token": (
            "POST",
            "/oauth/token",
            {"data": {"grant_type": "refresh_token"}, "headers": basic()},
        ),
    }

    async def body(sim: Simulator, http: aiohttp.ClientSession) -> None:
        sim.inject(Fault.server_error(status), route)
        method, path, options = requests[route]
        answer = await send(http, method, sim.url + path, **options)
        assert answer.status == status
        assert check(answer.body), answer.body
        assert sim.log.entries[0].outcome == "fault"
        assert sim.effects == []

    scenario(body)


def test_fault_targets_after_and_until_cleared() -> None:
    async def body(sim: Simulator, http: aiohttp.ClientSession) -> None:
        sim.inject(Fault.server_error(500), "openai.embeddings", times=None)
        sim.inject(Fault.server_error(502), "openai", after=1)
        embeddings = {"model": "e", "input": "x"}
        first = await chat(sim, http)
        second = await chat(sim, http)
        third = await chat(sim, http)
        assert [a.status for a in (first, second, third)] == [200, 502, 200]
        for _ in range(3):
            assert (
                await send(http, "POST", sim.url + "/v1/embeddings", json=embeddings, headers=AUTH)
            ).status == 500
        sim.faults.clear()
        assert (
            await send(http, "POST", sim.url + "/v1/embeddings", json=embeddings, headers=AUTH)
        ).status == 200
        sim.inject(Fault.server_error(503))  # everywhere
        assert (await send(http, "GET", sim.url + "/webhook")).status == 503
        assert (await send(http, "GET", sim.url + "/webhook")).status == 200

    scenario(body)


def test_timeout_fault_the_request_still_takes_effect() -> None:
    async def body(sim: Simulator, http: aiohttp.ClientSession) -> None:
        sim.inject(Fault.timeout(0.4), "slack.postMessage")
        with pytest.raises(asyncio.TimeoutError):
            await send(
                http,
                "POST",
                sim.url + "/api/chat.postMessage",
                json={"channel": "general", "text": "x"},
                headers=AUTH,
                timeout=0.1,
            )
        assert sim.effects == []
        for _ in range(40):  # the provider finishes the work the client gave up on
            if sim.effects:
                break
            await asyncio.sleep(0.05)
        assert [e.route for e in sim.effects] == ["slack.postMessage"]
        assert (sim.log.entries[0].fault, sim.log.entries[0].outcome) == ("delay", "ok")

        # With an Idempotency-Key, a retry during the slow first attempt is a 409, and afterwards a replay.
        sim.inject(Fault.timeout(1.0), "webhook")  # a wide margin for the retry to arrive during it
        headers = {"Idempotency-Key": "hook-1"}
        with pytest.raises(asyncio.TimeoutError):
            await send(http, "POST", sim.url + "/webhook/slow", json={"a": 1}, headers=headers, timeout=0.1)
        during = await send(http, "POST", sim.url + "/webhook/slow", json={"a": 1}, headers=headers)
        assert during.status == 409
        for _ in range(60):
            if len(sim.effects) == 2:
                break
            await asyncio.sleep(0.05)
        after = await send(http, "POST", sim.url + "/webhook/slow", json={"a": 1}, headers=headers)
        assert after.status == 200 and after.headers["Idempotent-Replayed"] == "true"
        assert [e.route for e in sim.effects] == ["slack.postMessage", "webhook"]
        assert [e.outcome for e in sim.log.select("webhook")] == ["ok", "conflict", "replayed"]

    scenario(body)


@pytest.mark.parametrize(
    ("kind", "route", "expected"),
    [
        ("token_expired", "openai", (401, lambda b: b["error"]["code"] == "token_expired")),
        ("revoked", "openai", (401, lambda b: b["error"]["code"] == "token_revoked")),
        ("token_expired", "slack", (200, lambda b: b == {"ok": False, "error": "token_expired"})),
        ("revoked", "slack", (200, lambda b: b == {"ok": False, "error": "token_revoked"})),
        ("token_expired", "anthropic", (401, lambda b: b["error"]["message"] == "OAuth token has expired")),
        ("token_expired", "x", (401, lambda b: b["title"] == "Unauthorized")),
        (
            "revoked",
            "instagram",
            (400, lambda b: (b["error"]["code"], b["error"]["error_subcode"]) == (190, 458)),
        ),
    ],
)
def test_token_faults_in_provider_shapes(
    kind: str, route: str, expected: tuple[int, Callable[[Any], bool]]
) -> None:
    paths = {
        "openai": ("/v1/chat/completions", {"json": CHAT, "headers": AUTH}),
        "slack": ("/api/chat.postMessage", {"json": {"channel": "general", "text": "x"}, "headers": AUTH}),
        "anthropic": (
            "/v1/messages",
            {"json": {}, "headers": {"x-api-key": KEY, "anthropic-version": "2023-06-01"}},
        ),
        "x": ("/2/tweets", {"json": {"text": "x"}, "headers": AUTH}),
        "instagram": (f"/v21.0/{IG_USER}/media", {"data": {"image_url": "u", "access_token": KEY}}),
    }

    async def body(sim: Simulator, http: aiohttp.ClientSession) -> None:
        sim.inject(Fault.token_expired() if kind == "token_expired" else Fault.revoked(), route)
        path, options = paths[route]
        answer = await send(http, "POST", sim.url + path, **options)
        status, check = expected
        assert answer.status == status
        assert check(answer.body), answer.body
        await send(http, "POST", sim.url + path, **options)
        assert [e.fault for e in sim.log.entries] == [kind, None]  # used up by the first request

    scenario(body)


def test_invalid_grant_and_revoked_faults_on_the_token_endpoint() -> None:
    async def body(sim: Simulator, http: aiohttp.ClientSession) -> None:
        grant = sim.oauth.issue(CLIENT)
        assert grant.refresh_token is not None
        form = {"grant_type": "refresh_token", "refresh_token": grant.refresh_token}
        sim.inject(Fault.invalid_grant("refresh token expired"), "oauth.token")
        sim.inject(Fault.revoked(), "oauth.token")
        first = await token(sim, http, form)
        second = await token(sim, http, form)
        assert first.body == {"error": "invalid_grant", "error_description": "refresh token expired"}
        assert (second.status, second.body["error"]) == (400, "invalid_grant")
        assert "revoked" in second.body["error_description"]
        # Scripted answers change nothing on the server: the grant still works afterwards.
        assert (await token(sim, http, form)).status == 200
        assert sim.oauth.revocations == []

    scenario(body)


def test_echo_auth_fault_repeats_the_credentials_sent() -> None:
    async def body(sim: Simulator, http: aiohttp.ClientSession) -> None:
        sim.inject(Fault.echo_auth(), times=3)
        openai = await chat(sim, http)
        graph = await send(
            http, "POST", f"{sim.url}/v21.0/{IG_USER}/media", params={"access_token": "graph-secret-token"}
        )
        slack = await send(
            http,
            "POST",
            sim.url + "/api/chat.postMessage",
            json={},
            headers={"Authorization": "Bearer xoxb-secret"},
        )
        assert openai.status == graph.status == slack.status == 401
        assert f"Authorization: Bearer {KEY}" in openai.body["error"]["message"]
        assert "access_token=graph-secret-token" in graph.body["error"]["message"]
        assert "xoxb-secret" in json.dumps(slack.body)
        assert {e.fault for e in sim.log.entries} == {"echo_auth"}

    scenario(body)


# Rate-limit enforcement


def test_token_bucket_burst_of_30_at_10_per_second() -> None:
    clock = ManualClock(1000.0)

    async def body(sim: Simulator, http: aiohttp.ClientSession) -> None:
        sim.limit("openai", rate=10, burst=10)
        answers = await asyncio.gather(*(chat(sim, http) for _ in range(30)))
        assert Counter(a.status for a in answers) == {200: 10, 429: 20}
        refused = [a for a in answers if a.status == 429]
        assert {(a.headers["Retry-After"], a.headers["retry-after-ms"]) for a in refused} == {("1", "100")}
        assert {a.body["error"]["code"] for a in refused} == {"rate_limit_exceeded"}
        assert Counter(e.within_policy for e in sim.log.entries) == {True: 10, False: 20}
        assert {e.outcome for e in sim.log.entries if e.within_policy is False} == {"rate_limited"}
        assert sim.count_429() == sim.count_429("openai.chat") == 20
        assert sim.max_in_window() == 30
        assert len(sim.effects) == 10

        clock.advance(0.5)  # five tokens back
        later = await asyncio.gather(*(chat(sim, http) for _ in range(10)))
        assert Counter(a.status for a in later) == {200: 5, 429: 5}
        other = sim.oauth.issue(CLIENT).access_token  # another credential has its own bucket
        assert [(await chat(sim, http, other)).status for _ in range(11)] == [200] * 10 + [429]
        unlimited = await send(http, "POST", sim.url + "/2/tweets", json={"text": "free"}, headers=AUTH)
        assert unlimited.status == 201 and sim.log.entries[-1].within_policy is None

    scenario(body, clock=clock)


def test_token_bucket_paced_at_the_policy_is_never_refused() -> None:
    clock = ManualClock(0.0)

    async def body(sim: Simulator, http: aiohttp.ClientSession) -> None:
        sim.limit("webhook", rate=10, burst=10)
        for _ in range(10):
            await send(http, "POST", sim.url + "/webhook/x", headers=AUTH)
        for k in range(1, 21):
            clock.now = k / 10
            await send(http, "POST", sim.url + "/webhook/x", headers=AUTH)
        assert sim.count_429() == 0
        assert all(e.within_policy for e in sim.log.entries)
        # 10 at t=0 and one at each of 0.1 ... 0.9: a perfect bucket's most in any 1 s window.
        assert sim.max_in_window("webhook") == 19
        assert sim.max_in_window("webhook", window=2.0) == 29
        assert sim.log.span() == pytest.approx(2.0)
        over = await send(http, "POST", sim.url + "/webhook/x", headers=AUTH)  # same instant as the last
        assert over.status == 429 and over.headers["Retry-After"] == "1"
        assert over.headers["retry-after-ms"] == "100"
        assert sim.log.entries[-1].within_policy is False
        clock.now = 2.06  # most of a token is not a token
        half = await send(http, "POST", sim.url + "/webhook/x", headers=AUTH)
        assert half.status == 429 and half.headers["retry-after-ms"] == "40"
        clock.now = 2.1
        assert (await send(http, "POST", sim.url + "/webhook/x", headers=AUTH)).status == 200

    scenario(body, clock=clock)


def test_max_in_window_helper() -> None:
    assert max_in_window([]) == 0
    assert max_in_window([0.0, 0.5, 0.999, 1.0]) == 3  # half-open: 1.0 is the next window
    assert max_in_window([2.0, 0.0, 1.0]) == 1
    assert max_in_window([0.0, 1.0, 2.0], window=2.0) == 2
    assert max_in_window([5.0] * 4 + [5.9, 6.0]) == 5
    with pytest.raises(ValueError, match="positive"):
        max_in_window([1.0], window=0)


# Log, reset, admin and run modes


def test_reset_forgets_requests_but_keeps_settings() -> None:
    async def body(sim: Simulator, http: aiohttp.ClientSession) -> None:
        sim.limit("openai", 1, 1)
        sim.inject(Fault.server_error(500), "x", times=None)
        grant = sim.oauth.issue(CLIENT)
        await chat(sim, http, headers={"Idempotency-Key": "k"})
        assert (await chat(sim, http)).status == 429
        sim.reset()
        assert (len(sim.log), sum(sim.counts.values()), len(sim.keys), sim.effects, sim.faults.items) == (
            0,
            0,
            0,
            [],
            [],
        )
        again = await chat(sim, http, headers={"Idempotency-Key": "k"})
        assert (
            again.status == 200 and "Idempotent-Replayed" not in again.headers
        )  # bucket full, key forgotten
        assert again.body["id"] == "chatcmpl-sim000001"
        assert (await chat(sim, http)).status == 429  # the policy stayed
        assert sim.log.entries[0].seq == 1
        assert sim.oauth.check_access_token(grant.access_token) == "valid"
        sim.reset(oauth=True)
        assert sim.oauth.check_access_token(grant.access_token) == "unknown"

    scenario(body)


def test_admin_endpoints_steer_the_simulator() -> None:
    async def body(sim: Simulator, http: aiohttp.ClientSession) -> None:
        admin = sim.url + "/_sim"
        added = await send(
            http,
            "POST",
            admin + "/faults",
            json={"route": "openai.chat", "kind": "rate_limit", "retry_after": 3, "times": 2},
        )
        assert added.status == 200 and added.body["times"] == 2 and added.body["status"] == 429
        assert [(await chat(sim, http)).status for _ in range(3)] == [429, 429, 200]
        form_post = await send(http, "POST", admin + "/faults", data={"kind": "status"})
        assert form_post.status == 415
        bad = await send(http, "POST", admin + "/faults", json={"kind": "explode"})
        assert bad.status == 400 and "unknown fault kind" in bad.body["error"]
        stats = await send(http, "GET", admin + "/stats", params={"route": "openai"})
        assert stats.body["status_429"] == 2 and stats.body["requests"] == 3 and stats.body["effects"] == 1
        log = await send(http, "GET", admin + "/log")
        assert [e["status"] for e in log.body["entries"]] == [429, 429, 200]
        assert log.body["entries"][0]["headers"]["Authorization"] == f"Bearer {KEY}"

        await send(http, "POST", admin + "/oauth/settings", json={"expires_in": None})
        issued = await send(http, "POST", admin + "/oauth/issue", json={"client_id": CLIENT})
        assert "expires_in" not in issued.body
        assert (await chat(sim, http, issued.body["access_token"])).status == 200
        revoked = await send(
            http, "POST", admin + "/oauth/revoke", json={"token": issued.body["access_token"]}
        )
        assert revoked.body == {"revoked": True}
        assert (await chat(sim, http, issued.body["access_token"])).status == 401
        await send(http, "POST", admin + "/limits", json={"route": "x", "rate": 1, "burst": 1})
        assert (await send(http, "GET", admin + "/limits")).body == {
            "limits": {"x": {"rate": 1.0, "burst": 1}}
        }
        await send(http, "POST", admin + "/reset", json={})
        assert len(sim.log) == 0 and (await send(http, "GET", admin + "/faults")).body == {"faults": []}
        assert len(sim.log) == 0  # admin calls are not in the request log

    scenario(body)


def test_threaded_simulator_serves_sync_callers() -> None:
    with ThreadedSimulator(name="thr") as sim:
        request = urllib.request.Request(  # noqa: S310 (our server)
            sim.url + "/api/chat.postMessage",
            data=json.dumps({"channel": "general", "text": "sync"}).encode(),
            headers={"Content-Type": "application/json", **AUTH},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 (our server)
            assert json.loads(response.read())["ok"] is True
        assert sim.counts["slack.postMessage"] == 1
        issued = AdminClient(sim.url).issue("sim-client")
        assert issued["access_token"].startswith("thr-at-")


def test_standalone_process_prints_its_port_and_takes_admin_calls() -> None:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cosmogen.testing.simulator",
            "--port",
            "0",
            "--name",
            "proc",
            "--limit",
            "openai=10/10",
            "--api-key",
            "k-proc",
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert process.stdout is not None
        port = int(process.stdout.readline())
        url = f"http://127.0.0.1:{port}"
        admin = AdminClient(url)
        admin.inject("openai.chat", kind="rate_limit", retry_after=2)

        def post(credential: str) -> tuple[int, dict[str, str]]:
            request = urllib.request.Request(  # noqa: S310 (our server)
                url + "/v1/chat/completions",
                data=json.dumps(CHAT).encode(),
                headers={"Content-Type": "application/json", "Authorization": f"Bearer {credential}"},
                method="POST",
            )
            try:
                with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 (our server)
                    return response.status, dict(response.headers)
            except urllib.error.HTTPError as exc:
                return exc.code, dict(exc.headers)

        limited = post("k-proc")
        assert limited[0] == 429 and limited[1]["Retry-After"] == "2"
        assert post("k-proc")[0] == 200
        assert post(KEY)[0] == 401  # only the key given on the command line
        stats = admin.stats("openai")
        assert (stats["status_429"], stats["requests"], stats["counts"]) == (1, 3, {"openai.chat": 3})
        assert [e["within_policy"] for e in admin.log()] == [True, True, True]
        assert admin.reset() == {"ok": True} and admin.log() == []
    finally:
        process.terminate()
        process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()
