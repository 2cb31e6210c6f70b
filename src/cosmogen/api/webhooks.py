"""Inbound webhooks: `POST /hooks/{token}` starts a run of a live launch with the JSON body as its event.

- The path token (from `secrets.token_urlsafe(32)`, 256 bits) is the credential. We store only its
  sha256 and look the trigger up by that hash, so there is no token comparison to time.
- Unknown token: 404 with a generic message, the same whatever exists.
- The body is read first, at most 1 MiB (413), since the signature covers it.
- Signed triggers (the default): `X-Cosmogen-Signature: t=<unix time>,v1=<hex HMAC-SHA256 of "<t>.<body>">`
  under one of the trigger's valid secrets (the vault holds them), at most 300 s from our clock; anything
  else is 401 saying what is wrong (missing, malformed, outside the window, no match), never which secret
  (domain/webhook_signature.py). Only an authenticated request learns the launch's state:
- The launch must be live (409 otherwise, saying its status); the trigger must be enabled (409).
- The body must be `Content-Type: application/json` (415) holding valid JSON (400).
- `Idempotency-Key` (optional; required when the trigger's spec says "idempotency_key": "required", 400
  without it): the IETF draft's semantics through runtime/idempotency.py, scoped by (workspace, trigger,
  key): a repeat with the same body gets the first response (with `Idempotent-Replayed: true`), another
  body 422, while the first is in flight 409.
- Replay protection: the delivery key is the `X-Cosmogen-Delivery` header, or, when neither it nor an
  Idempotency-Key is sent, the sha256 of the body. Each (trigger, key) is accepted once
  (`webhook_deliveries` is unique on it); a repeat gets 200 `{"duplicate": true}` and starts nothing.
  Senders that legitimately post identical bodies must send distinct delivery ids or idempotency keys.
- Success: 202 `{"run_id": ...}` once the run is committed; its event is `{"name": "webhook", "data": body}`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete
from sqlalchemy.dialects import postgresql, sqlite
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from cosmogen.domain import idempotency as idem
from cosmogen.domain import webhook_signature as signature
from cosmogen.domain.launches import LaunchStatus
from cosmogen.integrations import webhook_secrets as signing
from cosmogen.integrations.vault import DecryptionFailed, Vault
from cosmogen.runtime import idempotency
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
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers

    def response(self) -> JSONResponse:
        return JSONResponse(
            _error_body(self.code, self.message), status_code=self.status, headers=self.headers
        )


def webhook_routes(
    db: Database,
    writer: GroupCommitWriter,
    start_run: StartRun,
    clock: Clock,
    open_vault: Callable[[], Vault] | None = None,
) -> list[Route]:
    """`open_vault` gives the vault that holds signing secrets (Runtime.open_vault); without it, signed
    triggers answer 503."""

    async def deliver(target: WebhookTarget, key: str | None, payload: Any) -> tuple[int, dict[str, Any]]:
        if key is not None and not await writer.write(record_delivery(target.trigger_id, key, clock())):
            return 200, {"duplicate": True}
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
            if key is not None:
                await writer.write(forget_delivery(target.trigger_id, key))
            return 503, _error_body("unavailable", "the run could not be started; retry the delivery later")
        return 202, {"run_id": run_id}

    async def receive(request: Request) -> JSONResponse:
        token = request.path_params["token"]
        target = await asyncio.to_thread(_lookup, db, token)
        if target is None:
            return _error(404, "not_found", "no webhook at this address")
        try:
            body = await _read_body(request)
            if target.signed:
                await _authenticate(db, open_vault, target, request, body, clock())
            _check_target(target)
            payload = _parse_json(request, body)
            idempotency_key = _idempotency_key(request, target)
            key = _delivery_key(request, body, idempotency_key is not None)
        except _Reject as reject:
            return reject.response()
        if idempotency_key is None:
            status, answer = await deliver(target, key, payload)
            return JSONResponse(answer, status_code=status)
        ref = idempotency.KeyRef(target.workspace_id, f"webhook:{target.trigger_id}", idempotency_key)
        claim = await writer.write(idempotency.begin(ref, idem.fingerprint(payload), clock()))
        if claim.verdict is idem.Verdict.REPLAY:
            assert claim.status is not None
            return JSONResponse(claim.body, status_code=claim.status, headers={"Idempotent-Replayed": "true"})
        if claim.verdict is idem.Verdict.MISMATCH:
            return _error(
                422,
                "idempotency_key_reused",
                f"this {idem.HEADER} was already used for a request with another body; "
                "use a new key for a new request",
            )
        if claim.verdict is idem.Verdict.IN_FLIGHT:
            return JSONResponse(
                _error_body(
                    "idempotency_key_in_flight",
                    f"a request with this {idem.HEADER} is still being processed; retry in a moment",
                ),
                status_code=409,
                headers={"Retry-After": "1"},
            )
        assert claim.owner is not None
        status, answer = await deliver(target, key, payload)
        if status >= 500:
            await writer.write(idempotency.release(ref, claim.owner))  # the retry runs it again
        else:
            await writer.write(idempotency.complete(ref, claim.owner, status, answer))
        return JSONResponse(answer, status_code=status)

    return [Route("/hooks/{token}", receive, methods=["POST"])]


def _lookup(db: Database, token: str) -> WebhookTarget | None:
    with db.engine.connect() as conn:
        return find_webhook(conn, token)


async def _authenticate(
    db: Database,
    open_vault: Callable[[], Vault] | None,
    target: WebhookTarget,
    request: Request,
    body: bytes,
    now: datetime,
) -> None:
    header = request.headers.get(signature.SIGNATURE_HEADER)
    parsed = _signature_or_reject(lambda: signature.parse(header))
    _signature_or_reject(lambda: signature.check_timestamp(parsed.timestamp, now.timestamp()))
    try:
        keys = await asyncio.to_thread(_signing_keys, db, open_vault, target, now)
    except Exception:
        # The vault is unusable here (its key went missing, a row was tampered with): the operator's
        # problem, logged; the sender learns only that it cannot be checked now.
        log.exception("webhook trigger %s: its signing secrets could not be read", target.trigger_id)
        raise _Reject(503, "unavailable", "the signature cannot be checked right now; retry later") from None
    if not keys:
        log.error("webhook trigger %s requires signatures but has no valid signing secret", target.trigger_id)
    _signature_or_reject(lambda: signature.verify(header, body, keys, now.timestamp()))


def _signature_or_reject(check: Callable[[], Any]) -> Any:
    try:
        return check()
    except signature.SignatureRejected as exc:
        # A 401 names the scheme it wants (RFC 9110 §11.6.1).
        challenge = f'HMAC-SHA256 header="{signature.SIGNATURE_HEADER}"'
        raise _Reject(401, exc.code, exc.message, {"WWW-Authenticate": challenge}) from None


def _signing_keys(
    db: Database, open_vault: Callable[[], Vault] | None, target: WebhookTarget, now: datetime
) -> list[bytes]:
    if open_vault is None:
        raise RuntimeError("no vault was given to the webhook routes")
    with db.engine.connect() as conn:
        sealed = signing.sealed_secrets(conn, target.trigger_id, now)
    if not sealed:
        return []
    vault = open_vault()
    keys = []
    for one in sealed:
        try:
            keys.append(signing.unseal(vault, target.workspace_id, target.trigger_id, one).reveal().encode())
        except DecryptionFailed:
            # Altered or moved from another trigger: it is no key of this trigger; the others still count.
            log.error(
                "webhook trigger %s: signing secret %s does not decrypt", target.trigger_id, one.secret_id
            )
    return keys


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


def _idempotency_key(request: Request, target: WebhookTarget) -> str | None:
    try:
        return idem.parse_key(request.headers.get(idem.HEADER), required=target.idempotency_key_required)
    except idem.IdempotencyKeyError as exc:
        raise _Reject(400, exc.code, exc.message) from None


def _delivery_key(request: Request, body: bytes, has_idempotency_key: bool) -> str | None:
    """The replay-protection key; None when an Idempotency-Key (and no delivery id) identifies the request."""
    delivery_id = request.headers.get(DELIVERY_HEADER)
    if delivery_id is None:
        return None if has_idempotency_key else "sha256:" + hashlib.sha256(body).hexdigest()
    if not delivery_id.strip() or len(delivery_id) > MAX_DELIVERY_ID_CHARS or not delivery_id.isprintable():
        raise _Reject(
            400,
            "invalid_delivery_id",
            f"{DELIVERY_HEADER} must be 1 to {MAX_DELIVERY_ID_CHARS} printable characters, "
            "unique per delivery (e.g. a UUID)",
        )
    return "id:" + delivery_id


def _error_body(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse(_error_body(code, message), status_code=status)


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
