"""What a route answers, before it becomes an aiohttp response: kept as data so that idempotent replays
can send it again and the request log can record its outcome."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Reply:
    status: int
    body: Any = None  # JSON; None sends an empty body
    headers: dict[str, str] = field(default_factory=dict)
    outcome: str = ""  # see LoggedRequest.outcome; empty: "ok" below 400, else "error"
    raw: bytes | None = None  # a non-JSON body (an image), sent as `content_type`
    content_type: str = "application/json"

    def __post_init__(self) -> None:
        if not self.outcome:
            self.outcome = "ok" if self.status < 400 else "error"

    def to_response(self) -> web.Response:
        if self.raw is not None:
            return web.Response(
                status=self.status, body=self.raw, headers=self.headers, content_type=self.content_type
            )
        if self.body is None:
            return web.Response(status=self.status, headers=self.headers)
        return web.Response(
            status=self.status,
            text=json.dumps(self.body),
            headers=self.headers,
            content_type=self.content_type,
            charset="utf-8",
        )
