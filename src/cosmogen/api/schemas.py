"""What the resource routes share: bounded bodies, strict request models, opaque cursors, and lookups that
see only the caller's workspace.

- Bodies: at most 1 MiB (domain/api_limits.py), by Content-Length and while reading: 413 otherwise.
- Request models forbid unknown fields (422, API-04): a client cannot set `id`, `workspace_id`, `status`...
- Response models list exactly the public fields; internal columns (checkpoint state, leases, worker ids,
  token hashes) are never copied into them.
- Every lookup takes the principal's workspace: another workspace's id answers 404 like a missing one.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Connection, select

from cosmogen.api.problems import Problem
from cosmogen.domain.api_limits import MAX_BODY_BYTES
from cosmogen.identity.passwords import MAX_CHARS, MIN_CHARS
from cosmogen.store.tables import launches, runs, universe_versions, universes

_WITH_BODY = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def too_large() -> Problem:
    return Problem(
        413,
        "too_large",
        f"the request body exceeds {MAX_BODY_BYTES} bytes (1 MiB)",
        hint="send a smaller body; split a large universe into smaller ones",
    )


class BoundedRoute(APIRoute):
    """Reads the body itself before FastAPI parses it, refusing more than MAX_BODY_BYTES without buffering
    it: a false or missing Content-Length cannot make the server hold 20 MiB."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def bounded(request: Request) -> Response:
            if request.method in _WITH_BODY:
                await read_bounded(request)
            return await handler(request)

        return bounded


async def read_bounded(request: Request) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise too_large()
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise too_large()
        chunks.append(chunk)
    body = b"".join(chunks)
    request._body = body  # starlette's cache: request.body()/json() (and FastAPI) read this copy
    return body


class Strict(BaseModel):
    """Request bodies: unknown fields are an error, not silently dropped."""

    model_config = ConfigDict(extra="forbid")


def json_integer(value: Any) -> Any:
    """A body's integer as JSON Schema means it: 3 and 3.0, never true or "3" (lax pydantic takes both,
    strict pydantic refuses 3.0). Use as `Annotated[int, Field(...), BeforeValidator(json_integer)]`,
    constraints first (after the validator pydantic would write them into the schema as `ge`, `le`).
    Booleans in bodies are StrictBool for the same reason."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("must be a number without a fraction, not a string or a boolean")
    return value


def new_password() -> Any:
    """A field for a password being set: /openapi.json states the policy's length (identity/passwords.py),
    while the model only bounds what it reads, so that the policy refuses with its own clear message."""
    return Field(max_length=1024, json_schema_extra={"minLength": MIN_CHARS, "maxLength": MAX_CHARS})


# --- cursors ---------------------------------------------------------------------------------------


def encode_cursor(key: list[Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(key, separators=(",", ":")).encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None, size: int) -> list[Any] | None:
    """The sort key a cursor carries; 400 for anything that is not one of ours."""
    if cursor is None:
        return None
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        key = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
    except (ValueError, binascii.Error, UnicodeEncodeError):
        key = None
    if not isinstance(key, list) or len(key) != size or not all(isinstance(k, str) for k in key):
        raise Problem(
            400,
            "invalid_cursor",
            "the cursor is not one this server handed out",
            hint="pass the `next_cursor` of the previous page unchanged, or leave it out for the first page",
        )
    return key


# --- workspace-scoped lookups ---------------------------------------------------------------------


def not_found(kind: str) -> Problem:
    return Problem(404, "not_found", f"no {kind} with this id", hint=f"list the {kind}s you can see")


def universe_row(conn: Connection, workspace_id: str, universe_id: str) -> Any:
    row = conn.execute(
        select(universes).where(universes.c.id == universe_id, universes.c.workspace_id == workspace_id)
    ).first()
    if row is None:
        raise not_found("universe")
    return row


def version_row(conn: Connection, workspace_id: str, version_id: str) -> Any:
    row = conn.execute(
        select(universe_versions)
        .join(universes, universes.c.id == universe_versions.c.universe_id)
        .where(universe_versions.c.id == version_id, universes.c.workspace_id == workspace_id)
    ).first()
    if row is None:
        raise not_found("version")
    return row


def run_row(conn: Connection, workspace_id: str, run_id: str) -> Any:
    row = conn.execute(
        select(runs.c.id, runs.c.status, runs.c.universe_id)
        .join(universes, universes.c.id == runs.c.universe_id)
        .where(runs.c.id == run_id, universes.c.workspace_id == workspace_id)
    ).first()
    if row is None:
        raise not_found("run")
    return row


def launch_row(conn: Connection, workspace_id: str, launch_id: str) -> Any:
    row = conn.execute(
        select(launches.c.id, launches.c.universe_id)
        .join(universes, universes.c.id == launches.c.universe_id)
        .where(launches.c.id == launch_id, universes.c.workspace_id == workspace_id)
    ).first()
    if row is None:
        raise not_found("launch")
    return row


def diagnostics_problem(diagnostics: list[Any], detail: str) -> Problem:
    return Problem(
        422,
        "invalid_universe",
        detail,
        hint="fix the errors listed in `diagnostics` (each names its node or field and how to fix it)",
        extra={"diagnostics": [d.to_json() for d in diagnostics]},
    )
