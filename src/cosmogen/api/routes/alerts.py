"""Alerts: rules (which conditions notify which channels), channels (webhook, Slack, email) with
write-only secrets and a test-send button, and the in-app inbox. docs/alerts.md has the rules and
examples; the decisions are domain/alerts.py, the storage runtime/alerts_store.py, the sending
runtime/alerts.py.

Viewers read; editors and admins change. Another workspace's rules, channels and notifications answer
404. Secrets (an SMTP password, a webhook signing secret) are never in an answer: a channel lists which
secret fields are set; a webhook channel's signing secret is shown once, when the channel is created.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from pydantic import BeforeValidator, Field, StrictBool
from sqlalchemy import Connection, select, update

from cosmogen.api import links
from cosmogen.api.audit import record
from cosmogen.api.problems import PROBLEM_JSON, Problem
from cosmogen.api.routes.universes import read, runtime_of
from cosmogen.api.schemas import BoundedRoute, Strict, decode_cursor, encode_cursor, json_integer, not_found
from cosmogen.api.security import Editor, Principal, Viewer
from cosmogen.domain import alerts
from cosmogen.domain.api_limits import clamp_page
from cosmogen.integrations.alert_senders import DeliveryFailed
from cosmogen.integrations.secret import Secret
from cosmogen.runtime import alerts_store as store
from cosmogen.runtime.alerts import AlertDispatcher
from cosmogen.store import new_id
from cosmogen.store.tables import notifications, utcnow

_PROBLEM = {
    "type": "object",
    "required": ["type", "status", "code", "detail"],
    "properties": {
        "type": {"type": "string"},
        "status": {"type": "integer"},
        "code": {"type": "string"},
        "detail": {"type": "string"},
        "hint": {"type": "string"},
    },
    "additionalProperties": True,
}
_ERRORS = {
    400: "The body is not JSON, or a cursor this server did not hand out",
    401: "No credential, or one that is wrong, expired or revoked",
    403: "The caller's role does not allow it",
    404: "No rule, channel or notification with this id in the caller's workspace",
    409: "A channel with this name exists",
    413: "The body is over 1 MiB",
    422: "The request does not match the schema or the rules; the problem names each field and the fix",
    429: "Too many requests; see Retry-After",
    502: "Test-send: the channel did not take the message; `detail` says why and `hint` what to do",
    503: "This server does not deliver alerts",
}
router = APIRouter(
    prefix="/api/v1",
    tags=["alerts"],
    route_class=BoundedRoute,
    responses={
        status: {"description": words, "content": {PROBLEM_JSON: {"schema": _PROBLEM}}}
        for status, words in _ERRORS.items()
    },
)


# --- models ---------------------------------------------------------------------------------------


class RuleIn(Strict):
    name: str = Field(min_length=1, max_length=200)
    kind: alerts.RuleKind
    universe_id: str | None = Field(default=None, max_length=64, description="null: every universe")
    channel_ids: list[str] = Field(default_factory=list, max_length=alerts.MAX_CHANNELS_PER_RULE)
    in_app: StrictBool = True
    dedup_window_s: Annotated[int, BeforeValidator(json_integer)] = alerts.DEFAULT_DEDUP_S
    params: dict[str, Any] = Field(
        default_factory=dict, description="error_rate: threshold, window_s, min_calls"
    )
    enabled: StrictBool = True


class RuleOut(Strict):
    id: str
    name: str
    kind: str
    universe_id: str | None
    channel_ids: list[str]
    in_app: bool
    dedup_window_s: int
    params: dict[str, Any]
    enabled: bool
    created_at: datetime
    updated_at: datetime


class RuleList(Strict):
    items: list[RuleOut]


class ChannelIn(Strict):
    name: str = Field(min_length=1, max_length=200)
    kind: alerts.ChannelKind
    config: dict[str, Any]
    secrets: dict[str, str] = Field(default_factory=dict, description="email: password (write-only)")


class ChannelPatch(Strict):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    config: dict[str, Any] | None = None
    secrets: dict[str, str] = Field(default_factory=dict)


class ChannelOut(Strict):
    id: str
    name: str
    kind: str
    config: dict[str, Any]
    secrets_set: list[str]  # which secret fields are stored; never their values
    created_at: datetime
    updated_at: datetime


class CreatedChannelOut(ChannelOut):
    signing_secret: str | None  # webhook channels: shown once, to check X-Cosmogen-Signature


class ChannelList(Strict):
    items: list[ChannelOut]


class TestSent(Strict):
    delivered: bool
    channel_id: str
    kind: str


class DeliveryOut(Strict):
    channel_id: str | None
    kind: str
    status: str
    attempts: int
    last_error: str | None
    sent_at: datetime | None


class NotificationOut(Strict):
    id: str
    kind: str
    title: str
    body: str
    facts: dict[str, Any]
    rule_id: str | None
    launch_id: str | None
    repeats: int
    created_at: datetime
    last_seen_at: datetime
    read: bool
    deliveries: list[DeliveryOut]


class NotificationPage(Strict):
    items: list[NotificationOut]
    unread: int
    next_cursor: str | None


# --- helpers --------------------------------------------------------------------------------------


def _invalid(exc: alerts.AlertConfigError) -> Problem:
    return Problem(
        422, "invalid_config", str(exc), hint="fix the fields named", extra={"problems": exc.problems}
    )


def _rule_out(found: store.RuleRecord) -> RuleOut:
    rule = found.rule
    return RuleOut(
        id=rule.id,
        name=found.name,
        kind=rule.kind.value,
        universe_id=rule.universe_id,
        channel_ids=list(rule.channel_ids),
        in_app=rule.in_app,
        dedup_window_s=rule.dedup_window_s,
        params=rule.params(),
        enabled=rule.enabled,
        created_at=found.created_at,
        updated_at=found.updated_at,
    )


def _channel_config(channel: store.ChannelRecord) -> dict[str, Any]:
    config = dict(channel.config)
    if channel.kind is alerts.ChannelKind.WEBHOOK:
        config["url"] = alerts.shown_url(str(config["url"]))  # a path often carries the receiver's token
    return config


def _channel_out(channel: store.ChannelRecord) -> ChannelOut:
    return ChannelOut(
        id=channel.id,
        name=channel.name,
        kind=channel.kind.value,
        config=_channel_config(channel),
        secrets_set=list(channel.secrets_set),
        created_at=channel.created_at,
        updated_at=channel.updated_at,
    )


def _parse_rule(rule_id: str, body: RuleIn) -> alerts.Rule:
    try:
        return alerts.parse_rule(
            rule_id,
            body.kind.value,
            channel_ids=body.channel_ids,
            in_app=body.in_app,
            universe_id=body.universe_id,
            dedup_window_s=body.dedup_window_s,
            params=body.params,
            enabled=body.enabled,
        )
    except alerts.AlertConfigError as exc:
        raise _invalid(exc) from None


def _secrets_in(kind: alerts.ChannelKind, given: dict[str, str]) -> dict[str, Secret]:
    allowed = alerts.SECRET_FIELDS[kind] - {"signing_secret"}  # the signing secret is made by the server
    unknown = sorted(set(given) - allowed)
    if unknown:
        takes = ", ".join(sorted(allowed)) or "no secrets"
        raise Problem(
            422,
            "invalid_config",
            f"'secrets' has unknown fields {unknown}; a {kind.value} channel takes {takes}",
            hint="leave 'secrets' out, or send only the listed fields",
        )
    if any(not value or len(value) > 1000 for value in given.values()):
        raise Problem(
            422, "invalid_config", "a secret must be 1..1000 characters", hint="send the secret's value"
        )
    return {name: Secret(value) for name, value in given.items()}


async def _write(request: Request, fn: Any) -> Any:
    try:
        return await runtime_of(request).writer.write(fn)
    except store.ChannelNotFound:
        raise not_found("channel") from None
    except store.RuleNotFound:
        raise not_found("rule") from None
    except ValueError as exc:
        raise Problem(409, "conflict", str(exc), hint="choose another name") from None
    except LookupError:
        raise not_found("universe") from None


def dispatcher_of(request: Request) -> AlertDispatcher:
    found: AlertDispatcher | None = getattr(request.app.state, "alerts", None)
    if found is None:
        raise Problem(
            503, "alerts_unavailable", "this server does not deliver alerts", hint="use `cosmogen serve`"
        )
    return found


# --- rules ----------------------------------------------------------------------------------------


@router.get(
    "/alerts/rules",
    response_model=RuleList,
    summary="The workspace's alert rules",
    responses=links.answer(200, links.alert_rule("/items/0/id")),
)
async def list_rules(request: Request, caller: Viewer) -> RuleList:
    found = await read(request, lambda c: store.list_rules(c, caller.workspace_id))
    return RuleList(items=[_rule_out(r) for r in found])


@router.post(
    "/alerts/rules",
    status_code=201,
    response_model=RuleOut,
    summary="Add an alert rule",
    responses=links.answer(201, links.alert_rule("/id")),
)
async def create_rule(body: RuleIn, request: Request, caller: Editor) -> RuleOut:
    rule = _parse_rule(new_id(), body)

    def write(conn: Connection) -> store.RuleRecord:
        made = store.create_rule(caller.workspace_id, body.name, rule, utcnow())(conn)
        record(conn, caller, "alert_rule.create", ("alert_rule", rule.id), {"kind": rule.kind.value})
        return made

    return _rule_out(await _write(request, write))


@router.get("/alerts/rules/{rule_id}", response_model=RuleOut, summary="One alert rule")
async def get_rule(rule_id: str, request: Request, caller: Viewer) -> RuleOut:
    try:
        return _rule_out(await read(request, lambda c: store.get_rule(c, caller.workspace_id, rule_id)))
    except store.RuleNotFound:
        raise not_found("rule") from None


@router.put("/alerts/rules/{rule_id}", response_model=RuleOut, summary="Replace an alert rule")
async def replace_rule(rule_id: str, body: RuleIn, request: Request, caller: Editor) -> RuleOut:
    rule = _parse_rule(rule_id, body)

    def write(conn: Connection) -> store.RuleRecord:
        made = store.replace_rule(caller.workspace_id, body.name, rule, utcnow())(conn)
        record(conn, caller, "alert_rule.update", ("alert_rule", rule_id), {"kind": rule.kind.value})
        return made

    return _rule_out(await _write(request, write))


@router.delete("/alerts/rules/{rule_id}", status_code=204, summary="Delete an alert rule")
async def delete_rule(rule_id: str, request: Request, caller: Editor) -> Response:
    def write(conn: Connection) -> None:
        store.delete_rule(caller.workspace_id, rule_id)(conn)
        record(conn, caller, "alert_rule.delete", ("alert_rule", rule_id))

    await _write(request, write)
    return Response(status_code=204)


# --- channels -------------------------------------------------------------------------------------


@router.get(
    "/alerts/channels",
    response_model=ChannelList,
    summary="The workspace's notification channels",
    responses=links.answer(200, links.channel("/items/0/id")),
)
async def list_channels(request: Request, caller: Viewer) -> ChannelList:
    found = await read(request, lambda c: store.list_channels(c, caller.workspace_id))
    return ChannelList(items=[_channel_out(c) for c in found])


@router.post(
    "/alerts/channels",
    status_code=201,
    response_model=CreatedChannelOut,
    summary="Add a channel",
    responses=links.answer(201, links.channel("/id")),
)
async def create_channel(body: ChannelIn, request: Request, caller: Editor) -> CreatedChannelOut:
    try:
        settings = alerts.parse_channel(body.kind.value, body.config)
    except alerts.AlertConfigError as exc:
        raise _invalid(exc) from None
    given = _secrets_in(settings.kind, body.secrets)
    signing = store.new_signing_secret() if settings.kind is alerts.ChannelKind.WEBHOOK else None
    if signing is not None:
        given["signing_secret"] = signing
    runtime = runtime_of(request)
    vault = await asyncio.to_thread(runtime.open_vault) if given else None
    now = utcnow()

    def write(conn: Connection) -> store.ChannelRecord:
        made = store.create_channel(caller.workspace_id, body.name, settings, given, vault, now)(conn)
        details = {"kind": settings.kind.value, "secrets_set": sorted(given)}
        record(conn, caller, "alert_channel.create", ("alert_channel", made.id), details)
        return made

    made = await _write(request, write)
    return CreatedChannelOut(
        **_channel_out(made).model_dump(), signing_secret=None if signing is None else signing.reveal()
    )


@router.get("/alerts/channels/{channel_id}", response_model=ChannelOut, summary="One channel")
async def get_channel(channel_id: str, request: Request, caller: Viewer) -> ChannelOut:
    try:
        return _channel_out(
            await read(request, lambda c: store.get_channel(c, caller.workspace_id, channel_id))
        )
    except store.ChannelNotFound:
        raise not_found("channel") from None


@router.patch("/alerts/channels/{channel_id}", response_model=ChannelOut, summary="Change a channel")
async def patch_channel(channel_id: str, body: ChannelPatch, request: Request, caller: Editor) -> ChannelOut:
    try:
        current = await read(request, lambda c: store.get_channel(c, caller.workspace_id, channel_id))
    except store.ChannelNotFound:
        raise not_found("channel") from None
    settings = None
    if body.config is not None:
        try:
            settings = alerts.parse_channel(current.kind.value, body.config)
        except alerts.AlertConfigError as exc:
            raise _invalid(exc) from None
    given = _secrets_in(current.kind, body.secrets)
    runtime = runtime_of(request)
    vault = await asyncio.to_thread(runtime.open_vault) if given else None
    now = utcnow()

    def write(conn: Connection) -> store.ChannelRecord:
        made = store.update_channel(
            caller.workspace_id,
            channel_id,
            name=body.name,
            settings=settings,
            secret_values=given,
            vault=vault,
            now=now,
        )(conn)
        details = {"config": settings is not None, "secrets_set": sorted(given)}
        record(conn, caller, "alert_channel.update", ("alert_channel", channel_id), details)
        return made

    return _channel_out(await _write(request, write))


@router.delete("/alerts/channels/{channel_id}", status_code=204, summary="Delete a channel")
async def delete_channel(channel_id: str, request: Request, caller: Editor) -> Response:
    def write(conn: Connection) -> None:
        store.delete_channel(caller.workspace_id, channel_id)(conn)
        record(conn, caller, "alert_channel.delete", ("alert_channel", channel_id))

    await _write(request, write)
    return Response(status_code=204)


async def _test_send(request: Request, caller: Principal, channel_id: str) -> TestSent:
    dispatcher = dispatcher_of(request)
    try:
        channel = await read(request, lambda c: store.get_channel(c, caller.workspace_id, channel_id))
        await dispatcher.test_send(caller.workspace_id, channel_id, caller.user_id)
    except store.ChannelNotFound:
        raise not_found("channel") from None
    except DeliveryFailed as exc:
        raise Problem(
            502, "delivery_failed", exc.message, hint=exc.hint, extra={"channel_id": channel_id}
        ) from None
    return TestSent(delivered=True, channel_id=channel_id, kind=channel.kind.value)


@router.post("/alerts/channels/{channel_id}/test", response_model=TestSent, summary="Send a test message now")
async def test_channel(channel_id: str, request: Request, caller: Editor) -> TestSent:
    """One attempt, at once: 200 when the channel took it, else 502 `delivery_failed` saying why."""
    return await _test_send(request, caller, channel_id)


# --- the inbox ------------------------------------------------------------------------------------


@router.get(
    "/notifications",
    response_model=NotificationPage,
    summary="The in-app inbox, newest first",
    responses=links.answer(200, links.notification("/items/0/id")),
)
async def inbox(
    request: Request,
    caller: Viewer,
    unread: Annotated[bool, Query(description="only unread ones")] = False,
    limit: Annotated[int | None, Query(ge=1)] = None,
    cursor: Annotated[str | None, Query(max_length=1000)] = None,
) -> NotificationPage:
    size = clamp_page(limit)
    after = decode_cursor(cursor, 2)
    n = notifications

    def fetch(conn: Connection) -> tuple[list[Any], dict[str, list[Any]], int]:
        mine = (n.c.workspace_id == caller.workspace_id) & n.c.in_app.is_(True)
        query = select(n).where(mine)
        if unread:
            query = query.where(n.c.read_at.is_(None))
        if after is not None:
            at = datetime.fromisoformat(after[0])
            query = query.where((n.c.created_at < at) | ((n.c.created_at == at) & (n.c.id < after[1])))
        rows = list(conn.execute(query.order_by(n.c.created_at.desc(), n.c.id.desc()).limit(size + 1)).all())
        count = conn.execute(select(n.c.id).where(mine, n.c.read_at.is_(None))).all()
        return rows, store.deliveries_of(conn, [r.id for r in rows[:size]]), len(count)

    rows, deliveries, unread_count = await read(request, fetch)
    page = rows[:size]
    items = [
        NotificationOut(
            id=r.id,
            kind=r.kind,
            title=r.title,
            body=r.body,
            facts=dict(r.facts),
            rule_id=r.rule_id,
            launch_id=r.launch_id,
            repeats=r.repeats,
            created_at=r.created_at,
            last_seen_at=r.last_seen_at,
            read=r.read_at is not None,
            deliveries=[
                DeliveryOut(
                    channel_id=d.channel_id,
                    kind=d.kind,
                    status=d.status,
                    attempts=d.attempts,
                    last_error=d.last_error,
                    sent_at=d.sent_at,
                )
                for d in deliveries.get(r.id, [])
            ],
        )
        for r in page
    ]
    more = len(rows) > size
    next_cursor = encode_cursor([page[-1].created_at.isoformat(), page[-1].id]) if more else None
    return NotificationPage(items=items, unread=unread_count, next_cursor=next_cursor)


@router.post("/notifications/{notification_id}/read", status_code=204, summary="Mark a notification read")
async def mark_read(notification_id: str, request: Request, caller: Viewer) -> Response:
    now = utcnow()

    def write(conn: Connection) -> int:
        found = conn.execute(
            update(notifications)
            .where(
                notifications.c.id == notification_id,
                notifications.c.workspace_id == caller.workspace_id,
                notifications.c.in_app.is_(True),
            )
            .values(read_at=now)
        )
        return int(found.rowcount)

    if not await runtime_of(request).writer.write(write):
        raise not_found("notification")
    return Response(status_code=204)


@router.post("/notifications/read-all", status_code=204, summary="Mark every notification read")
async def mark_all_read(request: Request, caller: Viewer) -> Response:
    now = utcnow()

    def write(conn: Connection) -> None:
        conn.execute(
            update(notifications)
            .where(notifications.c.workspace_id == caller.workspace_id, notifications.c.read_at.is_(None))
            .values(read_at=now)
        )

    await runtime_of(request).writer.write(write)
    return Response(status_code=204)
