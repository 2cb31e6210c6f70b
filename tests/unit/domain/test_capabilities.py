"""The capability registry: one description per capability feeds the catalog, the settings schema and the
requests the executor will send; answers are normalised and failures say what to do."""

from __future__ import annotations

import json

import pytest

from cosmogen.domain.capabilities import (
    Action,
    ProviderRequest,
    SettingsError,
    UnknownCapability,
    default_registry,
)
from cosmogen.domain.capabilities.providers import status_failure

REGISTRY = default_registry()


def build(capability_id: str, settings: dict[str, object]) -> ProviderRequest:
    """The first request of a capability, from raw settings."""
    capability = REGISTRY.capability(capability_id)
    return capability.steps[0].build(capability.parse_settings(settings), {})


def test_v1_executes_the_seed_providers_and_lists_the_rest_as_not_yet_executable() -> None:
    executable = {p["id"] for p in REGISTRY.catalog() if p["executable"]}
    pending = {p["id"] for p in REGISTRY.catalog() if not p["executable"]}
    assert executable == {"openai", "anthropic", "slack", "x", "instagram", "http"}
    assert len(pending) == 36  # the seed's 41 entries, minus the five executed ones
    assert "openai-chatgpt" not in pending and "github" in pending
    with pytest.raises(UnknownCapability, match="not yet executable"):
        REGISTRY.capability("github.create-issue")
    with pytest.raises(UnknownCapability, match=r"openai\.chat"):
        REGISTRY.capability("openai.chatt")


def test_every_capability_has_a_json_schema_the_catalog_can_serialise() -> None:
    catalog = json.loads(json.dumps(REGISTRY.catalog()))
    schemas = {c["id"]: c["settings_schema"] for p in catalog if p["executable"] for c in p["capabilities"]}
    assert len(schemas) == 11
    assert schemas["slack.post_message"]["required"] == ["channel", "text"]
    assert schemas["openai.chat"]["properties"]["max_tokens"]["maximum"] == 32768
    assert all(s["type"] == "object" for s in schemas.values())


def test_unknown_or_bad_settings_are_refused_with_the_field_named() -> None:
    capability = REGISTRY.capability("slack.post_message")
    with pytest.raises(SettingsError) as caught:
        capability.parse_settings({"channel": "#general", "txt": "hi"})
    assert any(p.startswith("text:") for p in caught.value.problems)
    assert any(p.startswith("txt:") for p in caught.value.problems)  # a typo is not ignored
    with pytest.raises(SettingsError, match="text"):
        REGISTRY.capability("x.post").parse_settings({"text": "x" * 281})
    with pytest.raises(SettingsError, match="image_url"):
        REGISTRY.capability("instagram.publish_image").parse_settings(
            {"ig_user_id": "1789", "image_url": "http://plain.example/a.jpg"}
        )


def test_openai_chat_request_and_answer() -> None:
    request = build("openai.chat", {"prompt": "Hi", "system": "Be brief", "max_tokens": 50})
    assert (request.method, request.path) == ("POST", "/v1/chat/completions")
    assert request.body["messages"] == [
        {"role": "system", "content": "Be brief"},
        {"role": "user", "content": "Hi"},
    ]
    assert request.body["max_completion_tokens"] == 50
    answer = {
        "id": "c1",
        "model": "gpt-4o-mini",
        "choices": [{"message": {"content": "Hello"}, "finish_reason": "stop"}],
    }
    out = REGISTRY.capability("openai.chat").steps[0].normalize(200, answer)
    assert out["text"] == "Hello" and out["finish_reason"] == "stop"


def test_anthropic_messages_carries_the_pinned_version() -> None:
    request = build("anthropic.messages", {"prompt": "Hi"})
    assert request.path == "/v1/messages" and request.body["max_tokens"] == 1024
    provider = REGISTRY.providers["anthropic"]
    assert provider.headers["anthropic-version"] == "2023-06-01" and provider.auth_header == "x-api-key"
    out = (
        REGISTRY.capability("anthropic.messages")
        .steps[0]
        .normalize(
            200,
            {"content": [{"type": "text", "text": "A"}, {"type": "tool_use"}, {"type": "text", "text": "B"}]},
        )
    )
    assert out["text"] == "AB"


def test_instagram_publishes_in_two_steps_the_second_using_the_first() -> None:
    capability = REGISTRY.capability("instagram.publish_story")
    settings = capability.parse_settings({"ig_user_id": "1789", "image_url": "https://cdn.example/a.jpg"})
    first = capability.steps[0].build(settings, {})
    assert first.path == "/1789/media" and first.body == {
        "image_url": "https://cdn.example/a.jpg",
        "media_type": "STORIES",
    }
    assert first.token_in_body == "access_token"  # noqa: S105 - a field name
    container = capability.steps[0].normalize(200, {"id": "c-42"})
    second = capability.steps[1].build(settings, {"container": container})
    assert (second.path, second.body) == ("/1789/media_publish", {"creation_id": "c-42"})
    assert capability.steps[1].normalize(200, {"id": "m-7"}) == {"media_id": "m-7"}


@pytest.mark.parametrize(
    ("provider", "status", "body", "code", "action", "retryable"),
    [
        ("slack", 200, {"ok": True, "ts": "1"}, None, None, False),
        (
            "slack",
            200,
            {"ok": False, "error": "channel_not_found"},
            "slack.channel_not_found",
            Action.FIX_SETTING,
            False,
        ),
        (
            "slack",
            200,
            {"ok": False, "error": "token_revoked"},
            "slack.token_revoked",
            Action.RECONNECT,
            False,
        ),
        (
            "slack",
            200,
            {"ok": False, "error": "missing_scope", "needed": "chat:write"},
            "slack.missing_scope",
            Action.RECONNECT,
            False,
        ),
        ("slack", 429, None, "slack.ratelimited", Action.WAIT, True),
        (
            "openai",
            401,
            {
                "error": {
                    "type": "invalid_request_error",
                    "code": "invalid_api_key",
                    "message": "Incorrect API key",
                }
            },
            "openai.unauthorized",
            Action.RECONNECT,
            False,
        ),
        (
            "openai",
            429,
            {"error": {"code": "insufficient_quota", "message": "quota"}},
            "openai.insufficient_quota",
            Action.CONTACT_PROVIDER,
            False,
        ),
        ("openai", 429, {"error": {"code": "rate_limit_exceeded"}}, "openai.rate_limited", Action.WAIT, True),
        (
            "openai",
            400,
            {"error": {"type": "invalid_request_error", "message": "bad model"}},
            "openai.invalid_request_error",
            Action.FIX_SETTING,
            False,
        ),
        (
            "anthropic",
            529,
            {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
            "anthropic.overloaded_error",
            Action.WAIT,
            True,
        ),
        (
            "anthropic",
            401,
            {"type": "error", "error": {"type": "authentication_error", "message": "x"}},
            "anthropic.unauthorized",
            Action.RECONNECT,
            False,
        ),
        (
            "anthropic",
            401,
            {"error": {"type": "invalid_request_error", "message": "bad key"}},
            "anthropic.unauthorized",
            Action.RECONNECT,
            False,
        ),
        (
            "instagram",
            400,
            {"error": {"code": 190, "message": "Session has expired"}},
            "instagram.190",
            Action.RECONNECT,
            False,
        ),
        (
            "instagram",
            400,
            {"error": {"code": 4, "message": "Application request limit reached"}},
            "instagram.4",
            Action.WAIT,
            True,
        ),
        (
            "instagram",
            200,
            {"error": {"code": 100, "message": "Invalid parameter"}},
            "instagram.100",
            Action.FIX_SETTING,
            False,
        ),
        (
            "x",
            403,
            {"detail": "You are not allowed to create a Tweet with duplicate content."},
            "x.duplicate",
            Action.FIX_SETTING,
            False,
        ),
        ("x", 503, {"title": "Service Unavailable"}, "x.unavailable", Action.WAIT, True),
        ("http", 404, "nope", "http.http_404", Action.FIX_SETTING, False),
    ],
)
def test_failures_say_what_to_do(
    provider: str, status: int, body: object, code: str | None, action: Action | None, retryable: bool
) -> None:
    failure = REGISTRY.providers[provider].failure(status, body)
    if code is None:
        assert failure is None
        return
    assert failure is not None
    assert (failure.code, failure.action, failure.retryable) == (code, action, retryable)
    assert failure.message and failure.message[0].isalpha()


def test_a_success_status_is_not_a_failure_for_every_provider() -> None:
    assert all(p.failure(200, {"ok": True}) is None for p in REGISTRY.providers.values())
    assert status_failure("p", 204) is None
