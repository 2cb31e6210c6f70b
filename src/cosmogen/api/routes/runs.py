"""Runs: start one (with an Idempotency-Key, DUR-11), list with filters and cursors, read the full
report and the event log, and steer it (pause, resume, cancel, retry, rerun, and the answers to an
ambiguous effect). docs/api.md has examples.

A POST that creates a run (start, retry, rerun) may carry `Idempotency-Key`. The key is claimed in one
commit; the run and the key's stored answer are written in a second commit together, so there is no
moment where the run exists and its key does not say so: a crash before that commit leaves no run (the
retry after the 60 s lease runs it), a crash after leaves both (the retry gets the stored answer).

Each workspace may have at most `run_quota` unfinished runs (COSMOGEN_RUN_QUOTA, default 200); past that,
429 with Retry-After (API-11). The count and the insert are one transaction.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from pydantic import Field, StrictBool
from sqlalchemy import Connection, and_, func, or_, select

from cosmogen.api import links
from cosmogen.api.problems import AUTHENTICATED, WITH_BODY, Problem, problem_responses
from cosmogen.api.routes.universes import read, runtime_of
from cosmogen.api.schemas import (
    BoundedRoute,
    Strict,
    decode_cursor,
    encode_cursor,
    not_found,
    run_row,
    universe_row,
    version_row,
)
from cosmogen.api.security import Editor, Principal, Viewer
from cosmogen.cli.durable import report
from cosmogen.domain import idempotency as idem
from cosmogen.domain.api_limits import MAX_SQL_INTEGER, clamp_page
from cosmogen.domain.launches import LaunchConfigError, config_problems_for_document, parse_launch_config
from cosmogen.domain.runs import IllegalTransition, RunAction, RunStatus
from cosmogen.runtime import control, idempotency, journal
from cosmogen.runtime.executor import launch_state
from cosmogen.store import new_id
from cosmogen.store.tables import runs, universes, utcnow

router = APIRouter(
    prefix="/api/v1",
    tags=["runs"],
    route_class=BoundedRoute,
    # Not in this workspace (404), not allowed in the object's state (409); a bad cursor or body (400).
    responses=problem_responses(*AUTHENTICATED, *WITH_BODY, 404, 409),
)


UNFINISHED = [s.value for s in RunStatus if not s.terminal]
QUOTA_RETRY_AFTER_S = 5
RunCreator = Callable[[Connection], tuple[str, journal.RunRecord | None]]


class RunIn(Strict):
    universe_id: str | None = Field(default=None, max_length=64, description="runs its active version")
    version_id: str | None = Field(default=None, max_length=64, description="or exactly this version")
    event: dict[str, Any] = Field(default_factory=dict, description='{"name": ..., "data": {...}}')
    dry_run: StrictBool = Field(default=True, description="no real calls unless false")
    entry_node: str | None = Field(default=None, max_length=200)
    binding_overrides: dict[str, str] = Field(default_factory=dict)


class RunOut(Strict):
    id: str
    universe_id: str
    universe: str
    version_id: str
    launch_id: str | None
    trigger_id: str | None
    parent_run_id: str | None
    status: str
    dry_run: bool
    created_at: datetime
    finished_at: datetime | None


class RunPage(Strict):
    items: list[RunOut]
    next_cursor: str | None


class RunDetail(Strict):
    run_id: str
    universe_id: str
    version_id: str
    launch_id: str | None
    universe: str
    version: int
    status: str
    waiting: dict[str, Any] | None
    dry_run: bool
    attempt: int
    parent_run_id: str | None
    error: Any
    entities: Any
    branches: Any
    paradoxes: Any
    trace: Any
    nodes: Any
    outputs: Any
    effects: list[dict[str, Any]]  # the calls it made: node, binding, method, url, effect status
    created_at: str
    finished_at: str | None


class Event(Strict):
    seq: int
    type: str
    payload: Any
    at: str


class ActionOut(Strict):
    run_id: str
    status: str
    requested: bool  # True: a running run obeys at its next checkpoint


class CreatedOut(Strict):
    run_id: str
    status: str


# --- creating runs, with or without an Idempotency-Key ------------------------------------------


def _quota(conn: Connection, workspace_id: str, quota: int) -> None:
    unfinished = conn.execute(
        select(func.count())
        .select_from(runs.join(universes, universes.c.id == runs.c.universe_id))
        .where(universes.c.workspace_id == workspace_id, runs.c.status.in_(UNFINISHED))
    ).scalar_one()
    if unfinished >= quota:
        raise Problem(
            429,
            "run_quota",
            f"the workspace has {quota} unfinished runs, its limit",
            hint="wait for runs to finish (or cancel some), then retry",
            headers={"Retry-After": str(QUOTA_RETRY_AFTER_S)},
        )


async def create_run(
    request: Request, caller: Principal, scope: str, fingerprint_of: Any, creator: RunCreator
) -> JSONResponse:
    """Run `creator` (in the writer, after the quota check) under the request's Idempotency-Key if any."""
    runtime = runtime_of(request)
    quota = runtime.settings.run_quota
    try:
        key = idem.parse_key(request.headers.get(idem.HEADER), required=False)
    except idem.IdempotencyKeyError as exc:
        raise Problem(400, exc.code, exc.message, hint="send a UUID as the key") from None
    ref = idempotency.KeyRef(caller.workspace_id, scope, key) if key is not None else None
    owner: str | None = None
    if ref is not None:
        claim = await runtime.writer.write(idempotency.begin(ref, idem.fingerprint(fingerprint_of), utcnow()))
        if claim.verdict is idem.Verdict.REPLAY:
            return JSONResponse(
                claim.body, status_code=claim.status or 201, headers={"Idempotent-Replayed": "true"}
            )
        if claim.verdict is idem.Verdict.MISMATCH:
            raise Problem(
                422, "idempotency_key_reused",
                f"this {idem.HEADER} was already used for a request with another body",
                hint="use a new key for a new request",
            )  # fmt: skip
        if claim.verdict is idem.Verdict.IN_FLIGHT:
            raise Problem(
                409, "idempotency_key_in_flight",
                f"a request with this {idem.HEADER} is still being processed",
                hint="retry in a moment", headers={"Retry-After": "1"},
            )  # fmt: skip
        owner = claim.owner

    def write(conn: Connection) -> tuple[dict[str, Any], journal.RunRecord | None]:
        _quota(conn, caller.workspace_id, quota)
        run_id, record = creator(conn)
        answer = {"run_id": run_id, "status": record.status.value if record else RunStatus.QUEUED.value}
        if ref is not None and owner is not None and not idempotency.complete(ref, owner, 201, answer)(conn):
            # Our lease ran out and another request took the key over: it makes the run, not us.
            raise _LostClaim()
        return answer, record

    try:
        answer, record = await runtime.writer.write(write)
    except _LostClaim:
        raise Problem(
            409, "idempotency_key_in_flight", "this request's key was taken over by a retry",
            hint="retry to get that request's answer", headers={"Retry-After": "1"},
        ) from None  # fmt: skip
    except Exception:
        if ref is not None and owner is not None:
            await runtime.writer.write(idempotency.release(ref, owner))  # the client's retry runs it again
        raise
    if not runtime.queued:
        runtime.dispatch(answer["run_id"], fresh=record)
    return JSONResponse(answer, status_code=201)


class _LostClaim(Exception):
    pass


def _ids(document: Any, key: str) -> set[str]:
    items = document.get(key) if isinstance(document, dict) else None
    return {str(i["id"]) for i in items or [] if isinstance(i, dict) and "id" in i}


@router.post(
    "/runs", status_code=201, response_model=CreatedOut, summary="Start a run",
    responses={**links.answer(201, links.run("/run_id")), **problem_responses(described={
        409: "the Idempotency-Key's first request is still in flight, or the universe is archived",
        422: "the key was used with another body, or the config is wrong",
        429: "the workspace's request rate or run quota is reached"})},
)  # fmt: skip
async def start_run(body: RunIn, request: Request, caller: Editor) -> JSONResponse:
    """Runs the universe's active version (`universe_id`) or a given version (`version_id`). Send an
    `Idempotency-Key` to make retries safe: the same key and body answer the first result and start
    nothing (header `Idempotent-Replayed: true`); the key with another body is 422; while the first is
    in flight, 409."""
    if (body.universe_id is None) == (body.version_id is None):
        raise Problem(
            422, "invalid", "give exactly one of universe_id and version_id",
            hint="universe_id runs its active version; version_id runs that version",
        )  # fmt: skip
    try:
        config = parse_launch_config(
            {
                "dry_run": body.dry_run,
                "entry_node": body.entry_node,
                "binding_overrides": body.binding_overrides,
            }
        )
    except LaunchConfigError as exc:
        raise Problem(422, "invalid_config", str(exc), hint="fix entry_node or binding_overrides") from None

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
            raise Problem(409, "universe_archived", "this universe is archived and takes no new runs",
                          hint="run another universe")  # fmt: skip
        problems = config_problems_for_document(config, _ids(version.document, "nodes"),
                                                _ids(version.document, "bindings"))  # fmt: skip
        if problems:
            raise Problem(422, "invalid_config", "; ".join(problems),
                          hint="name a node or binding of this version")  # fmt: skip
        return str(universe.id), str(version.id)

    universe_id, version_id = await read(request, resolve)
    runtime = runtime_of(request)
    run_id = new_id()  # drawn here: the writer may run the write twice
    event = {"name": "manual", "data": {}, **body.event}
    state = launch_state(config.to_dict()) if body.entry_node or body.binding_overrides else {}

    def creator(conn: Connection) -> tuple[str, journal.RunRecord | None]:
        record = journal.create_run(
            run_id=run_id, universe_id=universe_id, version_id=version_id, event=event,
            dry_run=body.dry_run, state=state, claimed_by=None if runtime.queued else runtime.worker_id,
        )(conn)  # fmt: skip
        return run_id, record

    # The fingerprint is of the body as sent (canonical JSON), as the draft says.
    return await create_run(request, caller, "POST /runs", await request.json(), creator)


@router.get(
    "/runs", response_model=RunPage, summary="Runs, newest first, with filters",
    responses=links.answer(200, links.run("/items/0/id")),
)  # fmt: skip
async def list_runs(
    request: Request,
    caller: Viewer,
    status: Annotated[RunStatus | None, Query()] = None,
    universe_id: Annotated[str | None, Query(max_length=64)] = None,
    launch_id: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int | None, Query(ge=1)] = None,
    cursor: Annotated[str | None, Query(max_length=1000)] = None,
) -> RunPage:
    size = clamp_page(limit)
    after = decode_cursor(cursor, 2)

    def fetch(conn: Connection) -> list[Any]:
        query = (
            select(
                runs.c.id,
                runs.c.universe_id,
                universes.c.name,
                runs.c.version_id,
                runs.c.launch_id,
                runs.c.trigger_id,
                runs.c.parent_run_id,
                runs.c.status,
                runs.c.dry_run,
                runs.c.created_at,
                runs.c.finished_at,
            )
            .select_from(runs.join(universes, universes.c.id == runs.c.universe_id))
            .where(universes.c.workspace_id == caller.workspace_id)
        )
        if status is not None:
            query = query.where(runs.c.status == status.value)
        if universe_id is not None:
            query = query.where(runs.c.universe_id == universe_id)
        if launch_id is not None:
            query = query.where(runs.c.launch_id == launch_id)
        if after is not None:
            try:
                at = datetime.fromisoformat(after[0])
            except ValueError:
                decode_cursor("!", 2)  # raises the 400 of any foreign cursor
                raise
            query = query.where(
                or_(runs.c.created_at < at, and_(runs.c.created_at == at, runs.c.id < after[1]))
            )
        return list(conn.execute(query.order_by(runs.c.created_at.desc(), runs.c.id.desc()).limit(size + 1)))

    rows = await read(request, fetch)
    more = len(rows) > size
    rows = rows[:size]
    items = [
        RunOut(
            id=r.id,
            universe_id=r.universe_id,
            universe=r.name,
            version_id=r.version_id,
            launch_id=r.launch_id,
            trigger_id=r.trigger_id,
            parent_run_id=r.parent_run_id,
            status=r.status,
            dry_run=bool(r.dry_run),
            created_at=r.created_at,
            finished_at=r.finished_at,
        )
        for r in rows
    ]
    last = rows[-1] if rows else None
    next_cursor = encode_cursor([last.created_at.isoformat(), last.id]) if more and last else None
    return RunPage(items=items, next_cursor=next_cursor)


@router.get(
    "/runs/{run_id}", response_model=RunDetail, summary="A run: nodes, effects, events, entities...",
    responses=links.answer(200, links.run("/run_id"), links.universe("/universe_id")),
)  # fmt: skip
async def get_run(run_id: str, request: Request, caller: Viewer) -> RunDetail:
    def fetch(conn: Connection) -> tuple[str, str, str | None]:
        run_row(conn, caller.workspace_id, run_id)
        record = journal.load_run(conn, run_id)
        return record.universe_id, record.version_id, record.launch_id

    universe_id, version_id, launch_id = await read(request, fetch)
    db = runtime_of(request).db
    data = await asyncio.to_thread(report, db, run_id)
    data["effects"] = data.pop("calls")
    return RunDetail(**data, universe_id=universe_id, version_id=version_id, launch_id=launch_id)


@router.get("/runs/{run_id}/events", response_model=list[Event], summary="Its event log, after a seq")
async def run_events(
    run_id: str,
    request: Request,
    caller: Viewer,
    after_seq: Annotated[int, Query(ge=-1, le=MAX_SQL_INTEGER)] = -1,
    limit: Annotated[int | None, Query(ge=1)] = None,
) -> list[Event]:
    size = clamp_page(limit)

    def fetch(conn: Connection) -> list[dict[str, Any]]:
        run_row(conn, caller.workspace_id, run_id)
        return journal.events_of(conn, run_id, after_seq)[:size]

    return [Event(**e) for e in await read(request, fetch)]


def _illegal(exc: IllegalTransition) -> Problem:
    return Problem(
        409, "illegal_transition", str(exc), hint="see the run's status; only the listed actions apply"
    )


async def _act(request: Request, caller: Principal, run_id: str, action: RunAction) -> ActionOut:
    await read(request, lambda c: run_row(c, caller.workspace_id, run_id))
    try:
        status = await runtime_of(request).act(run_id, action)
    except IllegalTransition as exc:
        raise _illegal(exc) from None
    return ActionOut(run_id=run_id, status=status.value, requested=status is RunStatus.RUNNING)


@router.post("/runs/{run_id}/pause", response_model=ActionOut, summary="Pause (at the next checkpoint)")
async def pause_run(run_id: str, request: Request, caller: Editor) -> ActionOut:
    return await _act(request, caller, run_id, RunAction.PAUSE)


@router.post("/runs/{run_id}/resume", response_model=ActionOut, summary="Resume a paused run")
async def resume_run(run_id: str, request: Request, caller: Editor) -> ActionOut:
    return await _act(request, caller, run_id, RunAction.RESUME)


@router.post("/runs/{run_id}/cancel", response_model=ActionOut, summary="Cancel")
async def cancel_run(run_id: str, request: Request, caller: Editor) -> ActionOut:
    return await _act(request, caller, run_id, RunAction.CANCEL)


@router.post("/runs/{run_id}/retry-anyway", response_model=ActionOut, summary="Resend an ambiguous effect")
async def retry_anyway(run_id: str, request: Request, caller: Editor) -> ActionOut:
    return await _act(request, caller, run_id, RunAction.RETRY_ANYWAY)


@router.post("/runs/{run_id}/mark-done", response_model=ActionOut, summary="Accept an ambiguous effect")
async def mark_done(run_id: str, request: Request, caller: Editor) -> ActionOut:
    return await _act(request, caller, run_id, RunAction.MARK_DONE)


async def _child(request: Request, caller: Principal, run_id: str, kind: str) -> JSONResponse:
    await read(request, lambda c: run_row(c, caller.workspace_id, run_id))
    make = control.retry if kind == "retry" else control.rerun

    def creator(conn: Connection) -> tuple[str, journal.RunRecord | None]:
        try:
            return make(run_id)(conn), None
        except IllegalTransition as exc:
            raise _illegal(exc) from None

    return await create_run(request, caller, f"POST /runs/{run_id}/{kind}", {}, creator)


@router.post("/runs/{run_id}/retry", status_code=201, response_model=CreatedOut,
             summary="A new run from the failed node",
             responses=links.answer(201, links.run("/run_id")))  # fmt: skip
async def retry_run(run_id: str, request: Request, caller: Editor) -> JSONResponse:
    return await _child(request, caller, run_id, "retry")


@router.post("/runs/{run_id}/rerun", status_code=201, response_model=CreatedOut,
             summary="A new run of the same version and event",
             responses=links.answer(201, links.run("/run_id")))  # fmt: skip
async def rerun_run(run_id: str, request: Request, caller: Editor) -> JSONResponse:
    return await _child(request, caller, run_id, "rerun")
