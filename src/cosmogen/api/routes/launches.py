"""Launches: pin a version with a config (dry run unless `dry_run: false`) on triggers (manual, interval,
cron, webhook), then steer it: go live, pause, resume, stop (back to draft, cancelling its unfinished
runs), archive; and start a run of a live launch by hand. The rules are domain/launches.py and
domain/schedule.py; the writes are runtime/launches.py, as for `cosmogen launch`. docs/api.md has examples.

A webhook trigger's path token and signing secret are in the creation answer only (like the CLI prints
them once); afterwards only their existence shows.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from pydantic import Field, StrictBool
from sqlalchemy import Connection, select

from cosmogen.api import links
from cosmogen.api.problems import AUTHENTICATED, WITH_BODY, Problem, problem_responses
from cosmogen.api.routes.runs import CreatedOut, create_run
from cosmogen.api.routes.universes import read, runtime_of
from cosmogen.api.schemas import (
    BoundedRoute,
    Strict,
    decode_cursor,
    encode_cursor,
    launch_row,
    not_found,
    universe_row,
    version_row,
)
from cosmogen.api.security import Editor, Principal, Viewer
from cosmogen.domain.api_limits import clamp_page
from cosmogen.domain.launches import (
    IllegalLaunchTransition,
    LaunchConfigError,
    LaunchStatus,
    parse_launch_config,
)
from cosmogen.domain.runs import IllegalTransition, RunAction
from cosmogen.domain.schedule import TriggerKind, TriggerSpecError, WebhookSpec, parse_trigger_spec
from cosmogen.runtime import journal
from cosmogen.runtime import launches as repo
from cosmogen.runtime.executor import launch_state
from cosmogen.store import new_id
from cosmogen.store.tables import universes
from cosmogen.store.writer import WriteFn

router = APIRouter(
    prefix="/api/v1",
    tags=["launches"],
    route_class=BoundedRoute,
    # Not in this workspace (404), not allowed in the object's state (409); a bad cursor or body (400).
    responses=problem_responses(*AUTHENTICATED, *WITH_BODY, 404, 409),
)


MAX_TRIGGERS = 20


class LaunchIn(Strict):
    universe_id: str | None = Field(default=None, max_length=64, description="launches its active version")
    version_id: str | None = Field(default=None, max_length=64, description="or exactly this version")
    dry_run: StrictBool = Field(default=True, description="no real calls unless false")
    live: StrictBool = Field(default=True, description="go live at once, or stay a draft")
    triggers: list[dict[str, Any]] = Field(
        default_factory=lambda: [{"kind": "manual"}], max_length=MAX_TRIGGERS,
        description='e.g. {"kind": "cron", "expr": "0 9 * * 1"}, {"kind": "webhook"}',
    )  # fmt: skip
    entry_node: str | None = Field(default=None, max_length=200)
    binding_overrides: dict[str, str] = Field(default_factory=dict)
    telemetry_level: str | None = Field(default=None, max_length=20)
    notify: list[dict[str, Any]] = Field(default_factory=list, max_length=20)


class ManualRunIn(Strict):
    event: dict[str, Any] = Field(default_factory=dict)


class TriggerOut(Strict):
    id: str
    kind: str
    spec: dict[str, Any]
    enabled: bool
    next_fire_at: datetime | None
    last_fired_at: datetime | None


class LaunchOut(Strict):
    id: str
    universe_id: str
    version_id: str
    status: str
    dry_run: bool
    config: dict[str, Any]
    triggers: list[TriggerOut]
    created_at: datetime
    updated_at: datetime
    stopped_at: datetime | None


class CreatedLaunchOut(LaunchOut):
    # Shown once: only the token's hash and the sealed secret are stored.
    webhook_paths: dict[str, str]
    webhook_secrets: dict[str, str]


class StoppedOut(LaunchOut):
    cancelled_runs: list[str]


class LaunchPage(Strict):
    items: list[LaunchOut]
    next_cursor: str | None


def launch_out(launch: repo.LaunchRecord) -> LaunchOut:
    return LaunchOut(
        id=launch.id,
        universe_id=launch.universe_id,
        version_id=launch.version_id,
        status=launch.status.value,
        dry_run=launch.config.dry_run,
        config=launch.config.to_dict(),
        triggers=[
            TriggerOut(
                id=t.id,
                kind=t.kind,
                spec=t.spec.to_dict(),
                enabled=t.enabled,
                next_fire_at=t.next_fire_at,
                last_fired_at=t.last_fired_at,
            )
            for t in launch.triggers
        ],
        created_at=launch.created_at,
        updated_at=launch.updated_at,
        stopped_at=launch.stopped_at,
    )


def _illegal(exc: Exception) -> Problem:
    return Problem(
        409, "illegal_transition", str(exc), hint="see the launch's status; only the listed actions apply"
    )


@router.post(
    "/launches",
    status_code=201,
    response_model=CreatedLaunchOut,
    summary="Launch a version on triggers",
    responses=links.answer(201, links.launch("/id")),
)
async def create_launch(body: LaunchIn, request: Request, caller: Editor) -> CreatedLaunchOut:
    if (body.universe_id is None) == (body.version_id is None):
        raise Problem(
            422, "invalid", "give exactly one of universe_id and version_id",
            hint="universe_id launches its active version; version_id launches that version",
        )  # fmt: skip
    raw_config: dict[str, Any] = {
        "dry_run": body.dry_run, "entry_node": body.entry_node, "binding_overrides": body.binding_overrides,
        "notify": body.notify,
    }  # fmt: skip
    if body.telemetry_level is not None:
        raw_config["telemetry_level"] = body.telemetry_level
    try:
        config = parse_launch_config(raw_config)
        specs = [parse_trigger_spec(t) for t in body.triggers]
    except (LaunchConfigError, TriggerSpecError) as exc:
        raise Problem(422, "invalid_config", str(exc), hint="fix the config or trigger it names") from None

    def resolve(conn: Connection) -> tuple[str, str]:
        if body.version_id is not None:
            version = version_row(conn, caller.workspace_id, body.version_id)
            universe = universe_row(conn, caller.workspace_id, version.universe_id)
        else:
            assert body.universe_id is not None
            universe = universe_row(conn, caller.workspace_id, body.universe_id)
            if universe.active_version_id is None:
                raise not_found("version")
            version = version_row(conn, caller.workspace_id, universe.active_version_id)
        if universe.deployment_status == "archived":
            raise Problem(409, "universe_archived", "this universe is archived and takes no new launches",
                          hint="launch another universe")  # fmt: skip
        return str(universe.id), str(version.id)

    universe_id, version_id = await read(request, resolve)
    runtime = runtime_of(request)
    signed = any(isinstance(s, WebhookSpec) and s.signed for s in specs)
    vault = await asyncio.to_thread(runtime.open_vault) if signed else None
    try:
        created = await runtime.writer.write(
            repo.create_launch(universe_id, version_id, config, specs, vault=vault)
        )
        launch = created.launch
        if body.live:
            launch = await runtime.writer.write(repo.go_live(launch.id))
    except LaunchConfigError as exc:
        raise Problem(
            422, "invalid_config", str(exc), hint="name a node or binding of this version"
        ) from None
    out = launch_out(launch)
    return CreatedLaunchOut(
        **out.model_dump(),
        webhook_paths={tid: f"/hooks/{token}" for tid, token in created.webhook_tokens.items()},
        webhook_secrets={tid: secret.reveal() for tid, secret in created.webhook_secrets.items()},
    )


@router.get(
    "/launches", response_model=LaunchPage, summary="Launches, newest first",
    responses=links.answer(200, links.launch("/items/0/id")),
)  # fmt: skip
async def list_launches(
    request: Request,
    caller: Viewer,
    universe_id: Annotated[str | None, Query(max_length=64)] = None,
    status: Annotated[LaunchStatus | None, Query()] = None,
    limit: Annotated[int | None, Query(ge=1)] = None,
    cursor: Annotated[str | None, Query(max_length=1000)] = None,
) -> LaunchPage:
    size = clamp_page(limit)
    after = decode_cursor(cursor, 2)

    def fetch(conn: Connection) -> list[repo.LaunchRecord]:
        mine = set(
            conn.execute(
                select(universes.c.id).where(universes.c.workspace_id == caller.workspace_id)
            ).scalars()
        )
        if universe_id is not None and universe_id not in mine:
            return []
        found = repo.list_launches(conn, universe_id=universe_id, status=status)
        return [launch for launch in found if launch.universe_id in mine]

    found = await read(request, fetch)
    if after is not None:
        found = [one for one in found if (one.created_at.isoformat(), one.id) < (after[0], after[1])]
    page = found[:size]
    more = len(found) > size
    next_cursor = encode_cursor([page[-1].created_at.isoformat(), page[-1].id]) if more else None
    return LaunchPage(items=[launch_out(one) for one in page], next_cursor=next_cursor)


@router.get(
    "/launches/{launch_id}", response_model=LaunchOut, summary="One launch with its triggers",
    responses=links.answer(200, links.launch("/id")),
)  # fmt: skip
async def get_launch(launch_id: str, request: Request, caller: Viewer) -> LaunchOut:
    def fetch(conn: Connection) -> repo.LaunchRecord:
        launch_row(conn, caller.workspace_id, launch_id)
        return repo.get_launch(conn, launch_id)

    return launch_out(await read(request, fetch))


async def _steer(
    request: Request, caller: Principal, launch_id: str, action: Callable[[str], WriteFn[repo.LaunchRecord]]
) -> LaunchOut:
    await read(request, lambda c: launch_row(c, caller.workspace_id, launch_id))
    try:
        return launch_out(await runtime_of(request).writer.write(action(launch_id)))
    except IllegalLaunchTransition as exc:
        raise _illegal(exc) from None


@router.post("/launches/{launch_id}/go-live", response_model=LaunchOut, summary="draft -> live")
async def go_live(launch_id: str, request: Request, caller: Editor) -> LaunchOut:
    return await _steer(request, caller, launch_id, repo.go_live)


@router.post("/launches/{launch_id}/pause", response_model=LaunchOut, summary="live -> paused")
async def pause(launch_id: str, request: Request, caller: Editor) -> LaunchOut:
    return await _steer(request, caller, launch_id, repo.pause)


@router.post("/launches/{launch_id}/resume", response_model=LaunchOut, summary="paused -> live")
async def resume(launch_id: str, request: Request, caller: Editor) -> LaunchOut:
    return await _steer(request, caller, launch_id, repo.resume)


@router.post("/launches/{launch_id}/archive", response_model=LaunchOut, summary="draft or paused -> archived")
async def archive(launch_id: str, request: Request, caller: Editor) -> LaunchOut:
    return await _steer(request, caller, launch_id, repo.archive)


@router.post(
    "/launches/{launch_id}/stop", response_model=StoppedOut, summary="Stop: draft again, runs cancelled"
)
async def stop(launch_id: str, request: Request, caller: Editor) -> StoppedOut:
    await read(request, lambda c: launch_row(c, caller.workspace_id, launch_id))
    runtime = runtime_of(request)
    try:
        stopped = await runtime.writer.write(repo.stop(launch_id))
    except IllegalLaunchTransition as exc:
        raise _illegal(exc) from None
    for run_id in stopped.unfinished_run_ids:
        with contextlib.suppress(IllegalTransition):  # it ended on its own between the two writes
            await runtime.act(run_id, RunAction.CANCEL)
    return StoppedOut(**launch_out(stopped.launch).model_dump(), cancelled_runs=stopped.unfinished_run_ids)


@router.post(
    "/launches/{launch_id}/runs", status_code=201, response_model=CreatedOut,
    summary="Start a run of a live launch (its manual trigger)",
    responses=links.answer(201, links.run("/run_id")),
)  # fmt: skip
async def run_launch(launch_id: str, body: ManualRunIn, request: Request, caller: Editor) -> JSONResponse:
    """Takes `Idempotency-Key` like POST /runs. The launch must be live and have a manual trigger."""

    def fetch(conn: Connection) -> repo.LaunchRecord:
        launch_row(conn, caller.workspace_id, launch_id)
        return repo.get_launch(conn, launch_id)

    launch = await read(request, fetch)
    if launch.status is not LaunchStatus.LIVE:
        raise Problem(409, "launch_not_live", f"this launch is {launch.status.value}",
                      hint="make it live (POST .../go-live or .../resume) first")  # fmt: skip
    manual = next((t for t in launch.triggers if t.spec.kind is TriggerKind.MANUAL and t.enabled), None)
    if manual is None:
        raise Problem(409, "no_manual_trigger", "this launch has no enabled manual trigger",
                      hint="create a launch with a {'kind': 'manual'} trigger")  # fmt: skip
    runtime = runtime_of(request)
    run_id = new_id()
    event = {"name": "manual", "data": {}, **body.event}
    state = launch_state(launch.config.to_dict())

    def creator(conn: Connection) -> tuple[str, journal.RunRecord | None]:
        record = journal.create_run(
            run_id=run_id, universe_id=launch.universe_id, version_id=launch.version_id, event=event,
            dry_run=launch.config.dry_run, state=state, launch_id=launch.id, trigger_id=manual.id,
            claimed_by=None if runtime.queued else runtime.worker_id,
        )(conn)  # fmt: skip
        return run_id, record

    return await create_run(
        request, caller, f"POST /launches/{launch_id}/runs", await request.json(), creator
    )
