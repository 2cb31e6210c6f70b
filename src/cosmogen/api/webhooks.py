"""Inbound webhooks: `POST /hooks/{token}` starts a run of a live launch with the JSON body as its event.

- The path token (from `secrets.token_urlsafe(32)`, 256 bits) is the credential. We store only its
  sha256 and look the trigger up by that hash, so there is no token comparison to time.
- Unknown token: 404 with a generic message, the same whatever exists.
- The launch must be live (409 otherwise, saying its status); the trigger must be enabled (409).
- The body must be `Content-Type: application/json` (415) holding valid JSON (400), at most 1 MiB (413).
- Replay protection: the delivery key is the `X-Cosmogen-Delivery` header, or, without one, the sha256
  of the body. Each (trigger, key) is accepted once (`webhook_deliveries` is unique on it); a repeat gets
  200 `{"duplicate": true}` and starts nothing. Senders that legitimately post identical bodies must
  send distinct delivery ids. Delivery rows are kept (no expiry yet).
- Success: 202 `{"run_id": ...}` once the run is committed; its event is `{"name": "webhook", "data": body}`.

NOT YET: HMAC request signatures and timestamp skew checks (API-13). The signing secret must live in the
encrypted credential vault, which does not exist yet; until then anyone holding the URL can post to it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete
from sqlalchemy.dialects import postgresql, sqlite
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from cosmogen.domain.launches import LaunchStatus
from cosmogen.runtime.launches import StartRun, WebhookTarget, find_webhook
from cosmogen.runtime.scheduler import Clock
from cosmogen.store import Database, GroupCommitWriter
from cosmogen.store.tables import webhook_deliveries
from cosmogen.store.writer import WriteFn

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1024 * 1024
DELIVERY_HEADER = "X-Cosmogen-Delivery"
MAX_DELIVERY_ID_CHARS = 200


class _Reject(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def response(self) -> JSONResponse:
        return _error(self.status, self.code, self.message)


def webhook_routes(db: Database, writer: GroupCommitWriter, start_run: StartRun, clock: Clock) -> list[Route]:
    async def receive(request: Request) -> JSONResponse:
        token = request.path_params["token"]
        target = await asyncio.to_thread(_lookup, db, token)
        if target is None:
            return _error(404, "not_found", "no webhook at this address")
        try:
            _check_target(target)
            body = await _read_body(request)
            payload = _parse_json(request, body)
            key = _delivery_key(request, body)
        except _Reject as reject:
            return reject.response()
        if not await writer.write(record_delivery(target.trigger_id, key, clock())):
            return JSONResponse({"duplicate": True}, status_code=200)
        try:
            run_id = await start_run(
                target.universe_id,
                target.version_id,
                event={"name": "webhook", "data": payload},
                dry_run=target.dry_run,
                launch_id=target.launch_id,
                trigger_id=target.trigger_id,
                config=target.config,
            )
        except Exception:
            # Forget the delivery so the sender's retry is not mistaken for a duplicate.
            log.exception("webhook trigger %s: starting the run failed", target.trigger_id)
            await writer.write(forget_delivery(target.trigger_id, key))
            return _error(503, "unavailable", "the run could not be started; retry the delivery later")
        return JSONResponse({"run_id": run_id}, status_code=202)

    return [Route("/hooks/{token}", receive, methods=["POST"])]


def _lookup(db: Database, token: str) -> WebhookTarget | None:
    with db.engine.connect() as conn:
        return find_webhook(conn, token)


def _check_target(target: WebhookTarget) -> None:
    if target.launch_status is not LaunchStatus.LIVE:
        hint = {
            LaunchStatus.PAUSED: "resume it to accept deliveries",
            LaunchStatus.DRAFT: "make it live to accept deliveries",
            LaunchStatus.ARCHIVED: "archived launches accept nothing; create a new launch",
        }[target.launch_status]
        raise _Reject(
            409, "launch_not_live", f"this webhook's launch is {target.launch_status.value}; {hint}"
        )
    if not target.enabled:
        raise _Reject(
            409, "trigger_disabled", "this webhook trigger is disabled; enable it to accept deliveries"
        )


async def _read_body(request: Request) -> bytes:
    too_large = _Reject(413, "too_large", f"the body exceeds {MAX_BODY_BYTES} bytes (1 MiB); send less")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise too_large
    # Count while streaming: a missing or false Content-Length must not make us buffer 20 MiB.
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def _parse_json(request: Request, body: bytes) -> Any:
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "application/json" and not media_type.endswith("+json"):
        raise _Reject(
            415,
            "unsupported_media_type",
            f"send the body as JSON with 'Content-Type: application/json' (got {media_type or 'none'!r})",
        )
    try:
        return json.loads(body, parse_constant=_no_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _Reject(
            400, "invalid_json", f"the body is not valid JSON ({exc}); send one JSON value"
        ) from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _delivery_key(request: Request, body: bytes) -> str:
    delivery_id = request.headers.get(DELIVERY_HEADER)
    if delivery_id is None:
        return "sha256:" + hashlib.sha256(body).hexdigest()
    if not delivery_id.strip() or len(delivery_id) > MAX_DELIVERY_ID_CHARS or not delivery_id.isprintable():
        raise _Reject(
            400,
            "invalid_delivery_id",
            f"{DELIVERY_HEADER} must be 1 to {MAX_DELIVERY_ID_CHARS} printable characters, "
            "unique per delivery (e.g. a UUID)",
        )
    return "id:" + delivery_id


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


# --- write functions ------------------------------------------------------------------------------


def record_delivery(trigger_id: str, key: str, received_at: datetime) -> WriteFn[bool]:
    """Insert the delivery; False if this (trigger, key) was seen before."""

    def write(conn: Connection) -> bool:
        values = {"trigger_id": trigger_id, "delivery_key": key, "received_at": received_at}
        # ON CONFLICT DO NOTHING, not catching the unique violation: on PostgreSQL a failed statement
        # would abort the writer's whole batch transaction.
        dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
        # RETURNING rather than rowcount: with RETURNING (implicit on PostgreSQL) rowcount is -1.
        inserted = conn.execute(
            dialect.insert(webhook_deliveries)
            .values(values)
            .on_conflict_do_nothing()
            .returning(webhook_deliveries.c.id)
        ).first()
        return inserted is not None

    return write


def forget_delivery(trigger_id: str, key: str) -> WriteFn[None]:
    def write(conn: Connection) -> None:
        conn.execute(
            delete(webhook_deliveries).where(
                webhook_deliveries.c.trigger_id == trigger_id, webhook_deliveries.c.delivery_key == key
            )
        )

    return write
