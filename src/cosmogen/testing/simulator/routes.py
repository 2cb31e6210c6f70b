"""The request as a route handler sees it, the route table's entry type, and the helpers that find the
credential a request presents (each provider puts it somewhere else)."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote_plus

from aiohttp import web

from cosmogen.testing.simulator.dialects import Dialect
from cosmogen.testing.simulator.log import LoggedRequest
from cosmogen.testing.simulator.reply import Reply


@dataclass
class Call:
    request: web.Request
    raw: bytes
    body: Any  # JSON, a form as a dict, text, or None
    args: dict[str, Any]  # query parameters overlaid with a dict body: how form-style APIs read input
    credential: str | None
    entry: LoggedRequest


Handler = Callable[[Call], Awaitable[Reply]]
CredentialOf = Callable[[web.Request, dict[str, Any]], "str | None"]


@dataclass(frozen=True)
class RouteSpec:
    name: str  # e.g. "openai.chat"
    group: str  # e.g. "openai"
    method: str
    path: str
    handler: Handler
    dialect: Dialect
    credential: CredentialOf
    authenticated: bool = True  # the credential must be an API key or a live access token
    idempotent: bool = False  # `Idempotency-Key` replays the first answer


def parse_body(raw: bytes, content_type: str) -> Any:
    if not raw:
        return None
    text = raw.decode("utf-8", "replace")
    if content_type == "application/x-www-form-urlencoded":
        return dict(parse_qsl(text, keep_blank_values=True))
    try:
        return json.loads(text)
    except ValueError:
        return text


def bearer(request: web.Request, args: dict[str, Any]) -> str | None:
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    return (value.strip() or None) if scheme.lower() == "bearer" else None


def anthropic_key(request: web.Request, args: dict[str, Any]) -> str | None:
    return request.headers.get("x-api-key") or bearer(request, args)


def slack_token(request: web.Request, args: dict[str, Any]) -> str | None:
    token = args.get("token")
    return bearer(request, args) or (token if isinstance(token, str) and token else None)


def graph_token(request: web.Request, args: dict[str, Any]) -> str | None:
    token = args.get("access_token")
    return (token if isinstance(token, str) and token else None) or bearer(request, args)


def basic_auth(request: web.Request) -> tuple[str, str] | None:
    """client_secret_basic (RFC 6749 §2.3.1): both parts are form-encoded before base64."""
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return ("", "")
    client_id, _, secret = decoded.partition(":")
    return unquote_plus(client_id), unquote_plus(secret)


def client_id_of(request: web.Request, args: dict[str, Any]) -> str | None:
    basic = basic_auth(request)
    if basic is not None:
        return basic[0] or None
    client_id = args.get("client_id")
    return client_id if isinstance(client_id, str) and client_id else None


def optional_bearer(request: web.Request, args: dict[str, Any]) -> str | None:
    return bearer(request, args)


def echo_detail(request: web.Request, args: dict[str, Any]) -> str:
    """Every credential the request carried, verbatim, for the echo fault."""
    parts = [
        f"{name}: {request.headers[name]}"
        for name in ("Authorization", "x-api-key")
        if name in request.headers
    ]
    parts += [f"{name}={args[name]}" for name in ("access_token", "token", "client_secret") if name in args]
    return "; ".join(parts) or "(no credentials sent)"
