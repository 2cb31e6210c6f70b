"""The providers v1 executes (seed-spec §3.7 REBUILD): OpenAI, Anthropic, Slack, X, Instagram and a generic
HTTP API, with current API shapes. API versions are pinned in each provider's `headers` or base URL.

Provider error texts are passed on (they say what went wrong) but always through the integrations
layer's redaction, since some providers echo part of a credential back.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field

from cosmogen.domain.capabilities.registry import (
    Action,
    Capability,
    Failure,
    OAuthEndpoints,
    Provider,
    ProviderRequest,
    Settings,
    Step,
    dig,
)

Json = dict[str, Any]


def status_failure(provider: str, status: int, detail: str | None = None) -> Failure | None:
    """The meaning of an HTTP status alone, when a provider's body says nothing more useful."""
    if 200 <= status < 300:
        return None
    said = f": {detail}" if detail else ""
    if status == 401:
        return Failure(
            f"{provider}.unauthorized",
            f"the account's credential was refused{said}; reconnect it",
            Action.RECONNECT,
        )
    if status == 403:
        return Failure(
            f"{provider}.forbidden",
            f"the account may not do this{said}; check its scopes or plan, then reconnect",
            Action.CONTACT_PROVIDER,
        )
    if status == 429:
        return Failure(
            f"{provider}.rate_limited", f"rate limited by {provider}{said}", Action.WAIT, retryable=True
        )
    if status == 408 or status >= 500:
        return Failure(
            f"{provider}.unavailable",
            f"{provider} answered {status}{said}; it is retried",
            Action.WAIT,
            retryable=True,
        )
    return Failure(
        f"{provider}.http_{status}", f"{provider} refused the request ({status}){said}", Action.FIX_SETTING
    )


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


# --- OpenAI ----------------------------------------------------------------------------------------


def openai_failure(status: int, body: Any) -> Failure | None:
    if 200 <= status < 300:
        return None
    kind = dig(body, "error", "type")
    code = dig(body, "error", "code")
    message = _text(dig(body, "error", "message"))
    if code == "insufficient_quota":
        return Failure(
            "openai.insufficient_quota",
            "the OpenAI account has no quota left; add credit or raise its limit",
            Action.CONTACT_PROVIDER,
        )
    if status == 400 and isinstance(kind, str):
        return Failure(f"openai.{kind}", f"OpenAI refused a setting: {message or kind}", Action.FIX_SETTING)
    if status == 404:
        return Failure(
            "openai.not_found", f"OpenAI: {message or 'not found'} (check the model)", Action.FIX_SETTING
        )
    return status_failure("openai", status, message)


class OpenAIChat(Settings):
    prompt: str = Field(min_length=1, description="The user message.")
    system: str | None = Field(default=None, description="An optional system message.")
    model: str = "gpt-4o-mini"
    max_tokens: int = Field(default=256, ge=1, le=32768)
    temperature: float = Field(default=1.0, ge=0, le=2)


def _openai_chat(s: OpenAIChat, _: Mapping[str, Any]) -> ProviderRequest:
    messages = ([{"role": "system", "content": s.system}] if s.system else []) + [
        {"role": "user", "content": s.prompt}
    ]
    body = {
        "model": s.model,
        "messages": messages,
        "max_completion_tokens": s.max_tokens,
        "temperature": s.temperature,
    }
    return ProviderRequest("POST", "/v1/chat/completions", body)


def _openai_chat_out(_: int, body: Any) -> Json:
    return {
        "text": dig(body, "choices", 0, "message", "content"),
        "finish_reason": dig(body, "choices", 0, "finish_reason"),
        "model": dig(body, "model"),
        "id": dig(body, "id"),
        "usage": dig(body, "usage"),
    }


class OpenAIResponses(Settings):
    input: str = Field(min_length=1)
    instructions: str | None = None
    model: str = "gpt-4o-mini"
    max_output_tokens: int = Field(default=256, ge=16, le=32768)


def _openai_responses(s: OpenAIResponses, _: Mapping[str, Any]) -> ProviderRequest:
    body: Json = {"model": s.model, "input": s.input, "max_output_tokens": s.max_output_tokens}
    if s.instructions:
        body["instructions"] = s.instructions
    return ProviderRequest("POST", "/v1/responses", body)


def _openai_responses_out(_: int, body: Any) -> Json:
    texts = [
        part.get("text", "")
        for item in (dig(body, "output") or [])
        if isinstance(item, dict) and item.get("type") == "message"
        for part in item.get("content", [])
        if isinstance(part, dict) and part.get("type") == "output_text"
    ]
    return {
        "text": "".join(texts),
        "model": dig(body, "model"),
        "id": dig(body, "id"),
        "usage": dig(body, "usage"),
    }


class OpenAIEmbeddings(Settings):
    input: str = Field(min_length=1)
    model: str = "text-embedding-3-small"


def _openai_embeddings(s: OpenAIEmbeddings, _: Mapping[str, Any]) -> ProviderRequest:
    return ProviderRequest("POST", "/v1/embeddings", {"model": s.model, "input": s.input})


def _openai_embeddings_out(_: int, body: Any) -> Json:
    vector = dig(body, "data", 0, "embedding")
    return {
        "embedding": vector,
        "dimensions": len(vector) if isinstance(vector, list) else None,
        "model": dig(body, "model"),
        "usage": dig(body, "usage"),
    }


class OpenAIImages(Settings):
    prompt: str = Field(min_length=1)
    model: str = "gpt-image-1"
    size: Literal["1024x1024", "1024x1536", "1536x1024", "auto"] = "1024x1024"
    n: int = Field(default=1, ge=1, le=4)


def _openai_images(s: OpenAIImages, _: Mapping[str, Any]) -> ProviderRequest:
    return ProviderRequest(
        "POST", "/v1/images/generations", {"model": s.model, "prompt": s.prompt, "size": s.size, "n": s.n}
    )


def _openai_images_out(_: int, body: Any) -> Json:
    images = [
        {key: item[key] for key in ("url", "b64_json", "revised_prompt") if key in item}
        for item in (dig(body, "data") or [])
        if isinstance(item, dict)
    ]
    return {"images": images, "created": dig(body, "created")}


# --- Anthropic -------------------------------------------------------------------------------------

_ANTHROPIC_ACTIONS = {
    "authentication_error": (Action.RECONNECT, False),
    "permission_error": (Action.CONTACT_PROVIDER, False),
    "not_found_error": (Action.FIX_SETTING, False),
    "invalid_request_error": (Action.FIX_SETTING, False),
    "request_too_large": (Action.FIX_SETTING, False),
    "rate_limit_error": (Action.WAIT, True),
    "overloaded_error": (Action.WAIT, True),
    "api_error": (Action.WAIT, True),
}


def anthropic_failure(status: int, body: Any) -> Failure | None:
    if 200 <= status < 300:
        return None
    kind = dig(body, "error", "type")
    message = _text(dig(body, "error", "message"))
    if status == 401:  # whatever the body calls it, a refused key means reconnecting
        return status_failure("anthropic", status, message)
    if isinstance(kind, str) and kind in _ANTHROPIC_ACTIONS:
        action, retryable = _ANTHROPIC_ACTIONS[kind]
        return Failure(f"anthropic.{kind}", f"Anthropic: {message or kind}", action, retryable)
    return status_failure("anthropic", status, message)


class AnthropicMessages(Settings):
    prompt: str = Field(min_length=1)
    system: str | None = None
    model: str = "claude-sonnet-4-5"
    max_tokens: int = Field(default=1024, ge=1, le=64000)
    temperature: float | None = Field(default=None, ge=0, le=1)


def _anthropic_messages(s: AnthropicMessages, _: Mapping[str, Any]) -> ProviderRequest:
    body: Json = {
        "model": s.model,
        "max_tokens": s.max_tokens,
        "messages": [{"role": "user", "content": s.prompt}],
    }
    if s.system:
        body["system"] = s.system
    if s.temperature is not None:
        body["temperature"] = s.temperature
    return ProviderRequest("POST", "/v1/messages", body)


def _anthropic_messages_out(_: int, body: Any) -> Json:
    blocks = dig(body, "content") or []
    text = "".join(b.get("text", "") for b in blocks if isinstance(b, dict) and b.get("type") == "text")
    return {
        "text": text,
        "stop_reason": dig(body, "stop_reason"),
        "model": dig(body, "model"),
        "id": dig(body, "id"),
        "usage": dig(body, "usage"),
    }


# --- Slack -----------------------------------------------------------------------------------------

_SLACK_RECONNECT = {
    "invalid_auth", "not_authed", "account_inactive", "token_revoked", "token_expired", "missing_scope",
    "no_permission", "ekm_access_denied",
}  # fmt: skip
_SLACK_FIX = {
    "channel_not_found", "not_in_channel", "is_archived", "msg_too_long", "no_text", "invalid_blocks",
    "invalid_time", "time_in_past", "time_too_far", "restricted_action", "too_many_attachments",
}  # fmt: skip


def slack_failure(status: int, body: Any) -> Failure | None:
    """Slack answers 200 with `ok: false` for most failures: the body decides, not the status."""
    if status == 429:
        return Failure("slack.ratelimited", "rate limited by Slack", Action.WAIT, retryable=True)
    if not 200 <= status < 300:
        return status_failure("slack", status)
    if dig(body, "ok") is True:
        return None
    error = dig(body, "error")
    error = error if isinstance(error, str) else "unknown_error"
    if error in _SLACK_RECONNECT:
        needed = dig(body, "needed")
        scope = f" (needs scope {needed})" if isinstance(needed, str) else ""
        return Failure(
            f"slack.{error}", f"Slack refused the account: {error}{scope}; reconnect it", Action.RECONNECT
        )
    if error in _SLACK_FIX:
        return Failure(f"slack.{error}", f"Slack refused a setting: {error}", Action.FIX_SETTING)
    if error == "ratelimited":
        return Failure("slack.ratelimited", "rate limited by Slack", Action.WAIT, retryable=True)
    return Failure(f"slack.{error}", f"Slack answered {error}", Action.CONTACT_PROVIDER)


class SlackPost(Settings):
    channel: str = Field(min_length=1, description="Channel id (C0123...) or name (#general).")
    text: str = Field(min_length=1, max_length=40000)
    thread_ts: str | None = None


def _slack_post(s: SlackPost, _: Mapping[str, Any]) -> ProviderRequest:
    body: Json = {"channel": s.channel, "text": s.text, "mrkdwn": True}
    if s.thread_ts:
        body["thread_ts"] = s.thread_ts
    return ProviderRequest("POST", "/api/chat.postMessage", body)


def _slack_post_out(_: int, body: Any) -> Json:
    return {"ts": dig(body, "ts"), "channel": dig(body, "channel")}


class SlackSchedule(Settings):
    channel: str = Field(min_length=1)
    text: str = Field(min_length=1, max_length=40000)
    post_at: int = Field(
        gt=0, description="When to post, in seconds since the epoch (Slack allows up to 120 days ahead)."
    )


def _slack_schedule(s: SlackSchedule, _: Mapping[str, Any]) -> ProviderRequest:
    return ProviderRequest(
        "POST", "/api/chat.scheduleMessage", {"channel": s.channel, "text": s.text, "post_at": s.post_at}
    )


def _slack_schedule_out(_: int, body: Any) -> Json:
    return {
        "scheduled_message_id": dig(body, "scheduled_message_id"),
        "post_at": dig(body, "post_at"),
        "channel": dig(body, "channel"),
    }


# --- X ---------------------------------------------------------------------------------------------


def x_failure(status: int, body: Any) -> Failure | None:
    if 200 <= status < 300:
        return None
    detail = (
        _text(dig(body, "detail")) or _text(dig(body, "errors", 0, "message")) or _text(dig(body, "title"))
    )
    if status == 403 and detail and "duplicate" in detail.lower():
        return Failure("x.duplicate", "X refused a duplicate post; change the text", Action.FIX_SETTING)
    return status_failure("x", status, detail)


class XPost(Settings):
    # X counts some characters double (and links as 23); this is the upper bound it can accept.
    text: str = Field(min_length=1, max_length=280)
    reply_to: str | None = Field(default=None, description="Id of the post to reply to.")


def _x_post(s: XPost, _: Mapping[str, Any]) -> ProviderRequest:
    body: Json = {"text": s.text}
    if s.reply_to:
        body["reply"] = {"in_reply_to_tweet_id": s.reply_to}
    return ProviderRequest("POST", "/2/tweets", body)


def _x_post_out(_: int, body: Any) -> Json:
    return {"id": dig(body, "data", "id"), "text": dig(body, "data", "text")}


# --- Instagram (Graph API) -------------------------------------------------------------------------

_GRAPH_TOKEN_FIELD = "access_token"  # noqa: S105 - the name of the form field, not a token
_GRAPH_WAIT = {1, 2, 4, 17, 32, 341, 613, 9007}  # transient, app/user/page rate limits, media not ready
_GRAPH_RECONNECT = {102, 190, 10, 200, 299}


def graph_failure(status: int, body: Any) -> Failure | None:
    if 200 <= status < 300 and dig(body, "error") is None:
        return None
    code = dig(body, "error", "code")
    message = _text(dig(body, "error", "message"))
    if isinstance(code, int):
        if code in _GRAPH_WAIT:
            return Failure(
                f"instagram.{code}", f"Instagram: {message or 'try again later'}", Action.WAIT, retryable=True
            )
        if code in _GRAPH_RECONNECT or 200 <= code <= 299:
            return Failure(
                f"instagram.{code}",
                f"Instagram refused the account: {message or code}; reconnect it",
                Action.RECONNECT,
            )
        if code == 100:
            return Failure(
                "instagram.100",
                f"Instagram refused a setting: {message or 'invalid parameter'}",
                Action.FIX_SETTING,
            )
    return status_failure("instagram", status if status >= 300 else 400, message)


class InstagramMedia(Settings):
    ig_user_id: str = Field(
        min_length=1, pattern=r"^[0-9]+$", description="The Instagram professional account id."
    )
    image_url: str = Field(min_length=1, pattern=r"^https://", description="A public https URL of a JPEG.")
    caption: str | None = Field(default=None, max_length=2200)


def _ig_container(story: bool) -> Any:
    def build(s: InstagramMedia, _: Mapping[str, Any]) -> ProviderRequest:
        body: Json = {"image_url": s.image_url}
        if story:
            body["media_type"] = "STORIES"
        elif s.caption:
            body["caption"] = s.caption
        return ProviderRequest("POST", f"/{s.ig_user_id}/media", body, token_in_body=_GRAPH_TOKEN_FIELD)

    return build


def _ig_publish(s: InstagramMedia, earlier: Mapping[str, Any]) -> ProviderRequest:
    container = earlier["container"]["container_id"]
    return ProviderRequest(
        "POST", f"/{s.ig_user_id}/media_publish", {"creation_id": container}, token_in_body=_GRAPH_TOKEN_FIELD
    )


def _ig_container_out(_: int, body: Any) -> Json:
    return {"container_id": dig(body, "id")}


def _ig_publish_out(_: int, body: Any) -> Json:
    return {"media_id": dig(body, "id")}


# --- generic HTTP API ------------------------------------------------------------------------------


def http_failure(status: int, body: Any) -> Failure | None:
    return status_failure("http", status)


class HttpCall(Settings):
    method: Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"] = "POST"
    path: str = Field(
        default="/", pattern=r"^/", description="Path (and query) under the account's base URL."
    )
    headers: dict[str, str] = Field(default_factory=dict)
    body: Any = None


def _http_call(s: HttpCall, _: Mapping[str, Any]) -> ProviderRequest:
    return ProviderRequest(s.method, s.path, s.body, headers=s.headers, idempotency_header="Idempotency-Key")


def _http_call_out(status: int, body: Any) -> Json:
    return {"status": status, "body": body}


# --- the registry's contents -----------------------------------------------------------------------

PROVIDERS = (
    Provider(
        "openai",
        "OpenAI",
        "ai",
        "https://api.openai.com",
        ("api_key",),
        "bearer",
        openai_failure,
        probe=ProviderRequest("GET", "/v1/models"),
    ),
    Provider(
        "anthropic",
        "Anthropic",
        "ai",
        "https://api.anthropic.com",
        ("api_key",),
        "x-api-key",
        anthropic_failure,
        headers={"anthropic-version": "2023-06-01"},
        probe=ProviderRequest("GET", "/v1/models"),
    ),
    Provider(
        "slack",
        "Slack",
        "communication",
        "https://slack.com",
        ("oauth2",),
        "bearer",
        slack_failure,
        oauth=OAuthEndpoints(
            "https://slack.com/oauth/v2/authorize",
            "https://slack.com/api/oauth.v2.access",
            "https://slack.com/api/auth.revoke",
        ),
    ),
    Provider(
        "x",
        "X",
        "social",
        "https://api.x.com",
        ("oauth2",),
        "bearer",
        x_failure,
        oauth=OAuthEndpoints(
            "https://x.com/i/oauth2/authorize",
            "https://api.x.com/2/oauth2/token",
            "https://api.x.com/2/oauth2/revoke",
        ),
    ),
    Provider(
        "instagram",
        "Instagram (Business)",
        "social",
        "https://graph.facebook.com/v21.0",
        ("oauth2",),
        "bearer",
        graph_failure,
        oauth=OAuthEndpoints(
            "https://www.facebook.com/v21.0/dialog/oauth",
            "https://graph.facebook.com/v21.0/oauth/access_token",
        ),
    ),
    Provider(
        "http", "HTTP API", "developer", "", ("none", "api_key", "basic", "oauth2"), "bearer", http_failure
    ),
)


def _one(name: str, build: Any, normalize: Any) -> tuple[Step, ...]:
    return (Step(name, build, normalize),)


CAPABILITIES = (
    Capability(
        "openai.chat",
        "openai",
        "Chat completion",
        "Send a prompt to an OpenAI chat model; the answer is `text`.",
        OpenAIChat,
        _one("chat", _openai_chat, _openai_chat_out),
        writes=False,
    ),
    Capability(
        "openai.responses",
        "openai",
        "Response",
        "Generate a response with the Responses API; the answer is `text`.",
        OpenAIResponses,
        _one("response", _openai_responses, _openai_responses_out),
        writes=False,
    ),
    Capability(
        "openai.embeddings",
        "openai",
        "Embedding",
        "Turn text into an embedding vector (`embedding`).",
        OpenAIEmbeddings,
        _one("embedding", _openai_embeddings, _openai_embeddings_out),
        writes=False,
    ),
    Capability(
        "openai.images",
        "openai",
        "Image generation",
        "Generate images from a prompt (`images`).",
        OpenAIImages,
        _one("images", _openai_images, _openai_images_out),
        writes=False,
    ),
    Capability(
        "anthropic.messages",
        "anthropic",
        "Message",
        "Send a prompt to a Claude model; the answer is `text`.",
        AnthropicMessages,
        _one("message", _anthropic_messages, _anthropic_messages_out),
        writes=False,
    ),
    Capability(
        "slack.post_message",
        "slack",
        "Post a message",
        "Post a message to a channel (`ts`, `channel`).",
        SlackPost,
        _one("post", _slack_post, _slack_post_out),
        scopes=("chat:write",),
    ),
    Capability(
        "slack.schedule_message",
        "slack",
        "Schedule a message",
        "Schedule a message for later (`scheduled_message_id`).",
        SlackSchedule,
        _one("schedule", _slack_schedule, _slack_schedule_out),
        scopes=("chat:write",),
    ),
    Capability(
        "x.post",
        "x",
        "Post",
        "Publish a post on X (`id`).",
        XPost,
        _one("post", _x_post, _x_post_out),
        scopes=("tweet.read", "tweet.write", "users.read"),
    ),
    Capability(
        "instagram.publish_image",
        "instagram",
        "Publish an image",
        "Create a media container for a public image, then publish it (`media_id`).",
        InstagramMedia,
        (
            Step("container", _ig_container(False), _ig_container_out),
            Step("publish", _ig_publish, _ig_publish_out),
        ),
        scopes=("instagram_basic", "instagram_content_publish"),
    ),
    Capability(
        "instagram.publish_story",
        "instagram",
        "Publish a story",
        "Create a story container for a public image, then publish it (`media_id`).",
        InstagramMedia,
        (
            Step("container", _ig_container(True), _ig_container_out),
            Step("publish", _ig_publish, _ig_publish_out),
        ),
        scopes=("instagram_basic", "instagram_content_publish"),
    ),
    Capability(
        "http.request",
        "http",
        "HTTP request",
        "Call any HTTP API under the account's base URL (`status`, `body`).",
        HttpCall,
        _one("request", _http_call, _http_call_out),
    ),
)
