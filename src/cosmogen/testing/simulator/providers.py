"""The provider endpoints: small, deterministic versions of OpenAI, Anthropic, Slack, X and the Instagram
Graph API, plus a generic webhook. Ids and texts come from counters, never from randomness, so a test can
assert on them; every request that takes effect is recorded in `effects`."""

from __future__ import annotations

import base64
import hashlib
import math
import re
import struct
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from cosmogen.testing.simulator.dialects import Anthropic, Dialect, Graph, OpenAI, Slack, X
from cosmogen.testing.simulator.reply import Reply
from cosmogen.testing.simulator.routes import Call

# The smallest valid PNG (1x1, transparent): what generated image URLs point at.
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)
IMAGE_SIZES = {"auto", "256x256", "512x512", "1024x1024", "1536x1024", "1024x1536", "1792x1024", "1024x1792"}
TWEET_MAX = 280  # X weighs some characters double; the simulator counts code points
SLACK_MAX_SCHEDULE_S = 120 * 86400
GRAPH_MEDIA_TYPES = {"IMAGE", "STORIES", "REELS", "VIDEO"}
DEFAULT_SLACK_CHANNELS = ("C0SIM00001", "general")
DEFAULT_INSTAGRAM_USERS = ("17841400000000001",)


@dataclass
class Effect:
    """Something a provider did for a request (a message posted, a completion produced): replays of an
    idempotent request and refused requests make none, so duplicates show up here."""

    route: str
    id: str
    credential: str | None
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class Container:
    id: str
    user: str
    media_type: str
    data: dict[str, Any]
    published_as: str | None = None


class Providers:
    def __init__(
        self,
        wall: Callable[[], float],
        base_url: Callable[[], str],
        slack_channels: Iterable[str] = DEFAULT_SLACK_CHANNELS,
        instagram_users: Iterable[str] = DEFAULT_INSTAGRAM_USERS,
    ) -> None:
        self.wall = wall
        self.base_url = base_url
        self.slack_channels = {c.lstrip("#") for c in slack_channels}
        self.instagram_users = set(instagram_users)
        self.openai, self.anthropic, self.slack, self.x, self.graph = (
            OpenAI(),
            Anthropic(),
            Slack(),
            X(),
            Graph(),
        )
        self.generic = Dialect()
        self.reset()

    def reset(self) -> None:
        self.effects: list[Effect] = []
        self.serial: Counter[str] = Counter()
        self.tweets: dict[tuple[str | None, str], str] = {}
        self.containers: dict[str, Container] = {}
        for dialect in (self.openai, self.anthropic, self.slack, self.x, self.graph, self.generic):
            dialect.serial = 0

    def effects_for(self, route: str) -> list[Effect]:
        return [e for e in self.effects if e.route == route or e.route.split(".")[0] == route]

    def _next(self, kind: str) -> int:
        self.serial[kind] += 1
        return self.serial[kind]

    def _effect(self, call: Call, id_: str, **data: Any) -> None:
        self.effects.append(Effect(call.entry.route, id_, call.credential, data))

    # OpenAI

    def _openai_body(self, call: Call, *required: str) -> tuple[dict[str, Any], Reply | None]:
        body = call.body
        if not isinstance(body, dict):
            return {}, self.openai.error(400, "", "We could not parse the JSON body of your request.")
        for name in required:
            if body.get(name) in (None, "", []):
                return body, self.openai.error(400, "", f"Missing required parameter: '{name}'.", param=name)
        if body.get("stream"):
            return body, self.openai.error(
                400, "unsupported", "stream is not supported by the simulator", param="stream"
            )
        return body, None

    async def chat(self, call: Call) -> Reply:
        body, refusal = self._openai_body(call, "model", "messages")
        if refusal is not None:
            return refusal
        messages = body["messages"]
        if not isinstance(messages, list) or not all(isinstance(m, dict) and "role" in m for m in messages):
            return self.openai.error(
                400, "", "'messages' must be a list of {role, content} objects", param="messages"
            )
        prompt = next((_text(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), "")
        n = self._next("chat")
        limit = body.get("max_completion_tokens", body.get("max_tokens"))
        text, finish = _reply_text(f"Simulated reply {n}: {prompt}", limit)
        prompt_tokens = sum(_words(_text(m.get("content"))) for m in messages)
        completion_id = f"chatcmpl-sim{n:06d}"
        self._effect(call, completion_id, model=body["model"])
        return Reply(
            200,
            {
                "id": completion_id,
                "object": "chat.completion",
                "created": int(self.wall()),
                "model": body["model"],
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text, "refusal": None},
                        "logprobs": None,
                        "finish_reason": finish,
                    }
                ],
                "usage": _usage(prompt_tokens, _words(text)),
                "system_fingerprint": "fp_simulator",
            },
            headers={"x-request-id": f"req_sim{call.entry.seq:06d}"},
        )

    async def responses(self, call: Call) -> Reply:
        body, refusal = self._openai_body(call, "model", "input")
        if refusal is not None:
            return refusal
        items = body["input"]
        if isinstance(items, str):
            prompt = items
        elif isinstance(items, list):
            prompt = next((_text(i.get("content")) for i in reversed(items) if isinstance(i, dict)), "")
        else:
            return self.openai.error(400, "", "'input' must be a string or a list of items", param="input")
        n = self._next("responses")
        text, finish = _reply_text(f"Simulated response {n}: {prompt}", body.get("max_output_tokens"))
        response_id = f"resp_sim{n:06d}"
        self._effect(call, response_id, model=body["model"])
        input_tokens = _words(prompt) + _words(_text(body.get("instructions")))
        return Reply(
            200,
            {
                "id": response_id,
                "object": "response",
                "created_at": int(self.wall()),
                "status": "completed" if finish == "stop" else "incomplete",
                "incomplete_details": None if finish == "stop" else {"reason": "max_output_tokens"},
                "model": body["model"],
                "output": [
                    {
                        "type": "message",
                        "id": f"msg_sim{n:06d}",
                        "status": "completed",
                        "role": "assistant",
                        "content": [{"type": "output_text", "text": text, "annotations": []}],
                    }
                ],
                "usage": {
                    "input_tokens": input_tokens,
                    "output_tokens": _words(text),
                    "total_tokens": input_tokens + _words(text),
                },
            },
            headers={"x-request-id": f"req_sim{call.entry.seq:06d}"},
        )

    async def models(self, call: Call) -> Reply:
        """The cheap read that checks a key: OpenAI's list, or Anthropic's when sent with x-api-key."""
        if "x-api-key" in call.request.headers:
            return Reply(200, {"data": [{"type": "model", "id": "claude-sonnet-4-5"}], "has_more": False})
        return Reply(200, {"object": "list", "data": [{"id": "gpt-4o-mini", "object": "model"}]})

    async def embeddings(self, call: Call) -> Reply:
        body, refusal = self._openai_body(call, "model", "input")
        if refusal is not None:
            return refusal
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        if not all(isinstance(i, str) and i for i in inputs) or len(inputs) > 2048:
            return self.openai.error(
                400, "", "'input' must be a non-empty string or list of strings", param="input"
            )
        dimensions = body.get("dimensions", 16)
        if not isinstance(dimensions, int) or not 1 <= dimensions <= 3072:
            return self.openai.error(400, "", "'dimensions' must be between 1 and 3072", param="dimensions")
        encoding = body.get("encoding_format", "float")
        if encoding not in ("float", "base64"):
            return self.openai.error(
                400, "", "'encoding_format' must be float or base64", param="encoding_format"
            )
        data = []
        for index, text in enumerate(inputs):
            vector = embed(str(body["model"]), text, dimensions)
            value: Any = vector
            if encoding == "base64":
                value = base64.b64encode(struct.pack(f"<{dimensions}f", *vector)).decode()
            data.append({"object": "embedding", "index": index, "embedding": value})
        tokens = sum(_words(t) for t in inputs)
        self._effect(call, f"emb-{self._next('embeddings')}", count=len(inputs))
        return Reply(
            200,
            {
                "object": "list",
                "data": data,
                "model": body["model"],
                "usage": _usage(tokens, 0, embedding=True),
            },
        )

    async def images(self, call: Call) -> Reply:
        body, refusal = self._openai_body(call, "prompt")
        if refusal is not None:
            return refusal
        count = body.get("n", 1)
        if not isinstance(count, int) or not 1 <= count <= 10:
            return self.openai.error(400, "", "'n' must be between 1 and 10", param="n")
        size = body.get("size", "1024x1024")
        if size not in IMAGE_SIZES:
            return self.openai.error(
                400, "", f"'{size}' is not one of {sorted(IMAGE_SIZES)} - 'size'", param="size"
            )
        response_format = body.get("response_format", "url")
        data = []
        for _ in range(count):
            k = self._next("images")
            if response_format == "b64_json":
                data.append({"b64_json": base64.b64encode(PNG).decode(), "revised_prompt": body["prompt"]})
            else:
                data.append(
                    {"url": f"{self.base_url()}/files/image-{k}.png", "revised_prompt": body["prompt"]}
                )
        self._effect(call, f"img-{self.serial['images']}", count=count)
        return Reply(200, {"created": int(self.wall()), "data": data})

    async def file(self, call: Call) -> Reply:
        if not re.fullmatch(r"image-\d+\.png", call.request.match_info.get("name", "")):
            return self.generic.error(404, "not_found", "no such file")
        return Reply(200, raw=PNG, content_type="image/png")

    # Anthropic

    async def messages(self, call: Call) -> Reply:
        if not call.request.headers.get("anthropic-version"):
            return self.anthropic.error(400, "invalid_request_error", "anthropic-version: header is required")
        body = call.body
        if not isinstance(body, dict):
            return self.anthropic.error(400, "invalid_request_error", "The request body is not valid JSON.")
        for name in ("model", "max_tokens", "messages"):
            if body.get(name) in (None, "", []):
                return self.anthropic.error(400, "invalid_request_error", f"{name}: Field required")
        messages = body["messages"]
        if not isinstance(messages, list) or not all(
            isinstance(m, dict) and m.get("role") in ("user", "assistant") for m in messages
        ):
            return self.anthropic.error(
                400, "invalid_request_error", "messages: roles must be user or assistant"
            )
        if messages[0].get("role") != "user":
            return self.anthropic.error(
                400, "invalid_request_error", 'messages: first message must use the "user" role'
            )
        max_tokens = body["max_tokens"]
        if not isinstance(max_tokens, int) or max_tokens < 1:
            return self.anthropic.error(
                400, "invalid_request_error", "max_tokens: must be a positive integer"
            )
        prompt = next((_text(m.get("content")) for m in reversed(messages) if m["role"] == "user"), "")
        n = self._next("messages")
        text, finish = _reply_text(f"Simulated message {n}: {prompt}", max_tokens)
        message_id = f"msg_sim{n:06d}"
        self._effect(call, message_id, model=body["model"])
        input_tokens = sum(_words(_text(m.get("content"))) for m in messages) + _words(
            _text(body.get("system"))
        )
        return Reply(
            200,
            {
                "id": message_id,
                "type": "message",
                "role": "assistant",
                "model": body["model"],
                "content": [{"type": "text", "text": text}],
                "stop_reason": "end_turn" if finish == "stop" else "max_tokens",
                "stop_sequence": None,
                "usage": {"input_tokens": input_tokens, "output_tokens": _words(text)},
            },
            headers={"request-id": f"req_sim{call.entry.seq:06d}"},
        )

    # Slack

    def _slack_channel(self, args: dict[str, Any]) -> str | None:
        channel = str(args.get("channel") or "").lstrip("#")
        return channel if channel in self.slack_channels else None

    async def post_message(self, call: Call) -> Reply:
        channel = self._slack_channel(call.args)
        if channel is None:
            return self.slack.error(200, "channel_not_found")
        text = call.args.get("text")
        if not text and not call.args.get("blocks") and not call.args.get("attachments"):
            return self.slack.error(200, "no_text")
        n = self._next("slack.ts")
        ts = f"{int(self.wall())}.{n:06d}"
        self._effect(call, ts, channel=channel, text=text)
        message = {
            "type": "message",
            "text": text or "",
            "user": "U0SIMBOT01",
            "bot_id": "B0SIMBOT01",
            "ts": ts,
        }
        return Reply(200, {"ok": True, "channel": channel, "ts": ts, "message": message})

    async def schedule_message(self, call: Call) -> Reply:
        channel = self._slack_channel(call.args)
        if channel is None:
            return self.slack.error(200, "channel_not_found")
        text = call.args.get("text")
        if not text and not call.args.get("blocks"):
            return self.slack.error(200, "no_text")
        try:
            post_at = int(float(call.args["post_at"]))
        except (KeyError, TypeError, ValueError):
            return self.slack.error(200, "invalid_time")
        now = self.wall()
        if post_at <= now:
            return self.slack.error(200, "time_in_past")
        if post_at > now + SLACK_MAX_SCHEDULE_S:
            return self.slack.error(200, "time_too_far")
        scheduled_id = f"Q{self._next('slack.scheduled'):010d}"
        self._effect(call, scheduled_id, channel=channel, text=text, post_at=post_at)
        return Reply(
            200,
            {
                "ok": True,
                "channel": channel,
                "scheduled_message_id": scheduled_id,
                "post_at": str(post_at),
                "message": {
                    "type": "delayed_message",
                    "text": text or "",
                    "user": "U0SIMBOT01",
                    "bot_id": "B0SIMBOT01",
                },
            },
        )

    # X

    async def tweet(self, call: Call) -> Reply:
        body = call.body
        if not isinstance(body, dict):
            return self.x.error(
                400, "https://api.twitter.com/2/problems/invalid-request", "Body must be JSON"
            )
        text = body.get("text")
        if not isinstance(text, str) or not text:
            if not body.get("media"):
                return self._x_invalid("text", "The `text` field is required when no media is attached.")
            text = ""
        if len(text) > TWEET_MAX:
            return self._x_invalid("text", f"Text is {len(text)} characters; the limit is {TWEET_MAX}.")
        if text and (call.credential, text) in self.tweets:
            return self.x.error(
                403, "about:blank", "You are not allowed to create a Tweet with duplicate content."
            )
        tweet_id = str(1_850_000_000_000_000_000 + self._next("tweets"))
        if text:
            self.tweets[(call.credential, text)] = tweet_id
        self._effect(call, tweet_id, text=text)
        return Reply(201, {"data": {"id": tweet_id, "text": text, "edit_history_tweet_ids": [tweet_id]}})

    def _x_invalid(self, parameter: str, message: str) -> Reply:
        reply = self.x.error(
            400,
            "https://api.twitter.com/2/problems/invalid-request",
            "One or more parameters to your request was invalid.",
            title="Invalid Request",
        )
        reply.body["errors"] = [{"parameters": {parameter: []}, "message": message}]
        return reply

    # Instagram (Graph API)

    def _graph_user(self, call: Call) -> tuple[str, Reply | None]:
        user = call.request.match_info.get("user", "")
        if user not in self.instagram_users:
            return user, self._graph_missing(user)
        return user, None

    def _graph_missing(self, object_id: str) -> Reply:
        message = (
            f"Unsupported post request. Object with ID '{object_id}' does not exist, cannot be loaded due to "
            "missing permissions, or does not support this operation."
        )
        return self.graph.error(400, "100", message, type_="GraphMethodException", subcode=33)

    async def create_media(self, call: Call) -> Reply:
        user, refusal = self._graph_user(call)
        if refusal is not None:
            return refusal
        media_type = str(call.args.get("media_type") or "IMAGE").upper()
        if media_type not in GRAPH_MEDIA_TYPES:
            return self.graph.error(
                400, "100", f"(#100) Param media_type must be one of {sorted(GRAPH_MEDIA_TYPES)}"
            )
        needs = "video_url" if media_type in ("REELS", "VIDEO") else "image_url"
        if media_type == "STORIES" and call.args.get("video_url"):
            needs = "video_url"
        if not call.args.get(needs):
            return self.graph.error(400, "100", f"(#100) The parameter {needs} is required.")
        container_id = str(17_900_000_000_000_000 + self._next("containers"))
        data = {k: call.args[k] for k in ("image_url", "video_url", "caption") if call.args.get(k)}
        self.containers[container_id] = Container(container_id, user, media_type, data)
        self._effect(call, container_id, media_type=media_type, **data)
        return Reply(200, {"id": container_id})

    async def publish_media(self, call: Call) -> Reply:
        user, refusal = self._graph_user(call)
        if refusal is not None:
            return refusal
        creation_id = str(call.args.get("creation_id") or "")
        if not creation_id:
            return self.graph.error(400, "100", "(#100) The parameter creation_id is required.")
        container = self.containers.get(creation_id)
        if container is None or container.user != user:
            return self._graph_missing(creation_id)
        if container.published_as is not None:
            # The simulator's wording: a container publishes once; a second publish is refused.
            return self.graph.error(400, "9007", "The media has already been published.", subcode=2207008)
        media_id = str(18_000_000_000_000_000 + self._next("media"))
        container.published_as = media_id
        self._effect(call, media_id, container=creation_id, media_type=container.media_type)
        return Reply(200, {"id": media_id})

    async def container_status(self, call: Call) -> Reply:
        node = call.request.match_info.get("node", "")
        container = self.containers.get(node)
        if container is None:
            return self._graph_missing(node)
        status = "PUBLISHED" if container.published_as else "FINISHED"
        return Reply(200, {"status_code": status, "id": container.id})

    # Generic

    async def webhook(self, call: Call) -> Reply:
        n = self._next("webhook")
        self._effect(call, f"hook-{n}", method=call.request.method, path=call.request.path)
        return Reply(
            200,
            {
                "ok": True,
                "n": n,
                "method": call.request.method,
                "path": call.request.path,
                "query": dict(call.request.query),
                "body": call.body,
            },
        )


def embed(model: str, text: str, dimensions: int) -> list[float]:
    """A unit vector derived from a hash of the text: the same text always embeds the same."""
    raw = b""
    block = 0
    while len(raw) < dimensions:
        raw += hashlib.sha256(f"{model}\n{block}\n{text}".encode()).digest()
        block += 1
    values = [(b - 127.5) / 127.5 for b in raw[:dimensions]]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [round(v / norm, 6) for v in values]


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: [{"type": "text"|"input_text", "text": ...}]
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""


def _words(text: str) -> int:
    return len(text.split())


def _reply_text(text: str, limit: Any) -> tuple[str, str]:
    text = text[:400]
    words = text.split()
    if isinstance(limit, int) and 0 < limit < len(words):
        return " ".join(words[:limit]), "length"
    return text, "stop"


def _usage(prompt: int, completion: int, *, embedding: bool = False) -> dict[str, int]:
    if embedding:
        return {"prompt_tokens": prompt, "total_tokens": prompt}
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
