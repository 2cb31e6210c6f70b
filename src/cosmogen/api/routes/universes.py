"""Universes and their immutable versions: create, list, read, diff, set active, archive, delete (with a
confirmation token), validate, import (older formats) and export. docs/api.md has examples.

Documents go through the same reader and validator as the CLI (domain/document.py, domain/validate.py)
plus the API's size caps (domain/api_limits.py); an invalid one is a 422 carrying the diagnostics and
nothing is saved. Every query is scoped by the caller's workspace.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Query, Request
from pydantic import Field
from sqlalchemy import Connection, and_, delete, or_, select, update

from cosmogen.api import links
from cosmogen.api.problems import AUTHENTICATED, WITH_BODY, Problem, problem_responses
from cosmogen.api.schemas import (
    BoundedRoute,
    Strict,
    decode_cursor,
    diagnostics_problem,
    encode_cursor,
    not_found,
    universe_row,
    version_row,
)
from cosmogen.api.security import Admin, Editor, Principal, Viewer
from cosmogen.domain.api_limits import clamp_page, document_size_problems
from cosmogen.domain.diagnostics import Diagnostic, DocumentError
from cosmogen.domain.document import parse_json, universe_from_raw
from cosmogen.domain.json_diff import diff
from cosmogen.domain.launches import LaunchStatus
from cosmogen.domain.runs import RunStatus
from cosmogen.domain.validate import validate
from cosmogen.runtime.service import Runtime
from cosmogen.store import repos
from cosmogen.store.tables import (
    effects,
    launches,
    node_results,
    run_events,
    runs,
    trigger_fires,
    triggers,
    universe_versions,
    universes,
    utcnow,
    webhook_deliveries,
    webhook_secrets,
)

router = APIRouter(
    prefix="/api/v1",
    tags=["universes"],
    route_class=BoundedRoute,
    # Not in this workspace (404), not allowed in the object's state (409); a bad cursor or body (400).
    responses=problem_responses(*AUTHENTICATED, *WITH_BODY, 404, 409),
)


CONFIRM_TTL_S = 300
T = TypeVar("T")


# --- models ---------------------------------------------------------------------------------------


class DocumentIn(Strict):
    document: dict[str, Any] = Field(description="a universe document (universe/1)")
    label: str | None = Field(default=None, max_length=200)


class ImportIn(Strict):
    document: dict[str, Any] = Field(description="a universe in any older format the importer knows")
    label: str | None = Field(default=None, max_length=200)


class ActiveIn(Strict):
    version_id: str = Field(max_length=64)


class UniverseOut(Strict):
    id: str
    name: str
    active_version_id: str | None
    deployment_status: str
    created_at: datetime
    updated_at: datetime


class UniversePage(Strict):
    items: list[UniverseOut]
    next_cursor: str | None


class VersionOut(Strict):
    id: str
    universe_id: str
    number: int
    label: str | None
    document_sha256: str
    created_at: datetime
    created_by: str | None
    last_run_summary: dict[str, Any] | None


class VersionDetail(VersionOut):
    document: dict[str, Any]


class SavedOut(Strict):
    universe: UniverseOut
    version: VersionOut
    created: bool  # False: the document equals the latest version, which is returned instead
    diagnostics: list[dict[str, Any]]  # warnings and upgrade notes


class ValidationOut(Strict):
    valid: bool
    diagnostics: list[dict[str, Any]]
    order: list[str]


class DiffOut(Strict):
    from_version: str
    to_version: str
    changes: list[dict[str, Any]]


class DeletedOut(Strict):
    deleted: str
    runs_deleted: int


# --- helpers --------------------------------------------------------------------------------------


def runtime_of(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


async def read(request: Request, fn: Callable[[Connection], T]) -> T:
    db = runtime_of(request).db

    def run() -> T:
        with db.engine.connect() as conn:
            return fn(conn)

    return await asyncio.to_thread(run)


def universe_out(row: Any) -> UniverseOut:
    return UniverseOut(
        id=row.id,
        name=row.name,
        active_version_id=row.active_version_id,
        deployment_status=row.deployment_status,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def version_out(row: Any) -> VersionOut:
    return VersionOut(
        id=row.id,
        universe_id=row.universe_id,
        number=row.number,
        label=row.label,
        document_sha256=row.document_sha256,
        created_at=row.created_at,
        created_by=row.created_by,
        last_run_summary=row.last_run_summary,
    )


def checked_document(raw: dict[str, Any]) -> tuple[dict[str, Any], list[Diagnostic]]:
    """The document in its saved form (upgraded, typed, re-dumped) and its warnings; 422 if invalid."""
    caps = document_size_problems(raw)
    if caps:
        raise diagnostics_problem(caps, "the universe is over the API's size limits")
    try:
        # Through the text reader, for its checks on numbers and depth (FastAPI's JSON accepts NaN).
        universe, notes = universe_from_raw(parse_json(json.dumps(raw, allow_nan=True)))
    except DocumentError as exc:
        raise diagnostics_problem(exc.diagnostics, "the document is not a valid universe") from None
    report = validate(universe)
    if not report.valid:
        raise diagnostics_problem([*notes, *report.diagnostics], "the universe has errors; nothing was saved")
    return universe.model_dump(mode="json", exclude_none=True), [*notes, *report.diagnostics]


async def save(
    request: Request, caller: Principal, raw: dict[str, Any], label: str | None, into: str | None = None
) -> SavedOut:
    document, notes = checked_document(raw)
    name = str(document["name"])

    def write(conn: Connection) -> tuple[Any, Any, bool]:
        if into is not None:
            current = universe_row(conn, caller.workspace_id, into)
            if current.name != name:
                raise Problem(
                    422,
                    "name_mismatch",
                    "the document's name differs from this universe's name",
                    hint="keep the universe's name in the document, or POST /api/v1/universes for a new one",
                )
        else:
            existing = conn.execute(
                select(universes.c.deployment_status).where(
                    universes.c.workspace_id == caller.workspace_id, universes.c.name == name
                )
            ).first()
            if existing is not None and existing.deployment_status == LaunchStatus.ARCHIVED.value:
                raise archived()
        saved = repos.save_version(
            conn, workspace_id=caller.workspace_id, name=name, document=document, label=label,
            created_by=caller.user_id,
        )  # fmt: skip
        universe = conn.execute(select(universes).where(universes.c.id == saved.universe_id)).one()
        version = conn.execute(
            select(universe_versions).where(universe_versions.c.id == saved.version_id)
        ).one()
        return universe, version, saved.created

    universe, version, created = await runtime_of(request).writer.write(write)
    return SavedOut(
        universe=universe_out(universe),
        version=version_out(version),
        created=created,
        diagnostics=[d.to_json() for d in notes],
    )


def archived() -> Problem:
    return Problem(
        409,
        "universe_archived",
        "this universe is archived and takes no new versions, runs or launches",
        hint="create a universe under another name",
    )


# --- routes ---------------------------------------------------------------------------------------


@router.post(
    "/universes", status_code=201, response_model=SavedOut, summary="Save a document as a version",
    responses=links.answer(201, links.universe("/universe/id"), links.version("/version/id", "/universe/id")),
)  # fmt: skip
async def create_universe(body: DocumentIn, request: Request, caller: Editor) -> SavedOut:
    """A new universe, or a new version of the universe with the document's name in this workspace."""
    return await save(request, caller, body.document, body.label)


@router.get(
    "/universes", response_model=UniversePage, summary="Universes of the workspace, by name",
    responses=links.answer(200, links.universe("/items/0/id")),
)  # fmt: skip
async def list_universes(
    request: Request,
    caller: Viewer,
    limit: Annotated[int | None, Query(ge=1)] = None,
    cursor: Annotated[str | None, Query(max_length=1000)] = None,
) -> UniversePage:
    size = clamp_page(limit)
    after = decode_cursor(cursor, 2)

    def fetch(conn: Connection) -> list[Any]:
        query = select(universes).where(universes.c.workspace_id == caller.workspace_id)
        if after is not None:
            name, last_id = after
            query = query.where(
                or_(universes.c.name > name, and_(universes.c.name == name, universes.c.id > last_id))
            )
        return list(conn.execute(query.order_by(universes.c.name, universes.c.id).limit(size + 1)))

    rows = await read(request, fetch)
    more = len(rows) > size
    rows = rows[:size]
    return UniversePage(
        items=[universe_out(r) for r in rows],
        next_cursor=encode_cursor([rows[-1].name, rows[-1].id]) if more else None,
    )


@router.get(
    "/universes/{universe_id}", response_model=UniverseOut, summary="One universe",
    responses=links.answer(200, links.universe("/id"), links.version("/active_version_id", "/id")),
)  # fmt: skip
async def get_universe(universe_id: str, request: Request, caller: Viewer) -> UniverseOut:
    return universe_out(await read(request, lambda c: universe_row(c, caller.workspace_id, universe_id)))


@router.post(
    "/universes/{universe_id}/versions", status_code=201, response_model=SavedOut,
    summary="Save a new version of this universe",
    responses=links.answer(201, links.universe("/universe/id"), links.version("/version/id", "/universe/id")),
)  # fmt: skip
async def add_version(universe_id: str, body: DocumentIn, request: Request, caller: Editor) -> SavedOut:
    def check(conn: Connection) -> None:
        if universe_row(conn, caller.workspace_id, universe_id).deployment_status == "archived":
            raise archived()

    await read(request, check)
    return await save(request, caller, body.document, body.label, into=universe_id)


@router.get(
    "/universes/{universe_id}/versions", response_model=list[VersionOut], summary="Its versions",
    responses=links.answer(200, links.version("/0/id", "/0/universe_id")),
)  # fmt: skip
async def list_versions(universe_id: str, request: Request, caller: Viewer) -> list[VersionOut]:
    def fetch(conn: Connection) -> list[repos.VersionSummary]:
        universe_row(conn, caller.workspace_id, universe_id)
        return repos.list_versions(conn, universe_id)

    return [version_out(v) for v in await read(request, fetch)]


@router.get(
    "/versions/{version_id}", response_model=VersionDetail, summary="One version with its document",
    responses=links.answer(
        200, links.version("/id", "/universe_id"), links.document("/document", "$response.body#/universe_id")
    ),
)  # fmt: skip
async def get_version(version_id: str, request: Request, caller: Viewer) -> VersionDetail:
    row = await read(request, lambda c: version_row(c, caller.workspace_id, version_id))
    return VersionDetail(**version_out(row).model_dump(), document=row.document)


@router.get(
    "/versions/{version_id}/validation", response_model=ValidationOut, summary="A version's diagnostics"
)
async def version_validation(version_id: str, request: Request, caller: Viewer) -> ValidationOut:
    """The validator's findings on a saved version now (warnings survive saving; errors cannot)."""
    row = await read(request, lambda c: version_row(c, caller.workspace_id, version_id))
    return _validation(row.document)


@router.get("/universes/{universe_id}/diff", response_model=DiffOut, summary="Diff two versions")
async def diff_versions(
    universe_id: str,
    request: Request,
    caller: Viewer,
    from_version: Annotated[str, Query(alias="from", max_length=64)],
    to_version: Annotated[str, Query(alias="to", max_length=64)],
) -> DiffOut:
    def fetch(conn: Connection) -> tuple[Any, Any]:
        universe_row(conn, caller.workspace_id, universe_id)
        a = version_row(conn, caller.workspace_id, from_version)
        b = version_row(conn, caller.workspace_id, to_version)
        if a.universe_id != universe_id or b.universe_id != universe_id:
            raise not_found("version")
        return a, b

    a, b = await read(request, fetch)
    return DiffOut(from_version=a.id, to_version=b.id, changes=diff(a.document, b.document))


@router.put("/universes/{universe_id}/active", response_model=UniverseOut, summary="Set the active version")
async def set_active(universe_id: str, body: ActiveIn, request: Request, caller: Editor) -> UniverseOut:
    def write(conn: Connection) -> Any:
        row = universe_row(conn, caller.workspace_id, universe_id)
        if row.deployment_status == "archived":
            raise archived()
        version = version_row(conn, caller.workspace_id, body.version_id)
        if version.universe_id != universe_id:
            raise not_found("version")
        conn.execute(
            update(universes)
            .where(universes.c.id == universe_id)
            .values(active_version_id=version.id, updated_at=utcnow())
        )
        return universe_row(conn, caller.workspace_id, universe_id)

    return universe_out(await runtime_of(request).writer.write(write))


@router.post("/universes/{universe_id}/archive", response_model=UniverseOut, summary="Archive (read-only)")
async def archive_universe(universe_id: str, request: Request, caller: Editor) -> UniverseOut:
    """Archived universes keep their versions and runs for reading and take nothing new. A universe with a
    live or paused launch must have it stopped first."""

    def write(conn: Connection) -> Any:
        universe_row(conn, caller.workspace_id, universe_id)
        active = conn.execute(
            select(launches.c.id).where(
                launches.c.universe_id == universe_id,
                launches.c.status.in_((LaunchStatus.LIVE.value, LaunchStatus.PAUSED.value)),
            )
        ).first()
        if active is not None:
            raise Problem(
                409,
                "launch_active",
                "this universe has a live or paused launch",
                hint="stop its launches first (POST /api/v1/launches/{id}/stop)",
            )
        now = utcnow()
        conn.execute(
            update(launches)
            .where(launches.c.universe_id == universe_id, launches.c.status == LaunchStatus.DRAFT.value)
            .values(status=LaunchStatus.ARCHIVED.value, updated_at=now)
        )
        conn.execute(
            update(universes)
            .where(universes.c.id == universe_id)
            .values(deployment_status=LaunchStatus.ARCHIVED.value, updated_at=now)
        )
        return universe_row(conn, caller.workspace_id, universe_id)

    return universe_out(await runtime_of(request).writer.write(write))


def _confirm_key(request: Request) -> bytes:
    # Per serving process and never stored: a token outlives neither its 5 minutes nor a restart.
    key: bytes | None = getattr(request.app.state, "delete_confirm_key", None)
    if key is None:
        key = secrets.token_bytes(32)
        request.app.state.delete_confirm_key = key
    return key


def _confirm_mac(key: bytes, caller: Principal, universe_id: str, expires: int) -> str:
    message = f"delete-universe\n{caller.workspace_id}\n{caller.user_id}\n{universe_id}\n{expires}"
    return hmac.new(key, message.encode(), hashlib.sha256).hexdigest()


def _confirmed(key: bytes, caller: Principal, universe_id: str, token: str) -> bool:
    expires_text, _, mac = token.partition(".")
    # isascii: "²".isdigit() is true, and int("²") raises (a 500 Schemathesis found, API-01).
    if not (expires_text.isascii() and expires_text.isdigit()) or int(expires_text) < time.time():
        return False
    return hmac.compare_digest(mac, _confirm_mac(key, caller, universe_id, int(expires_text)))


def _confirm_first() -> dict[int | str, dict[str, Any]]:
    found = problem_responses(described={409: "confirmation needed: repeat with ?confirm=<confirm_token>"})
    found[409].update(links.answer(409, links.delete_confirmed())[409])
    return found


@router.delete(
    "/universes/{universe_id}", response_model=DeletedOut,
    summary="Delete a universe with its versions, launches and runs (two steps)",
    responses=_confirm_first(),
)  # fmt: skip
async def delete_universe(
    universe_id: str,
    request: Request,
    caller: Admin,
    confirm: Annotated[str | None, Query(max_length=200)] = None,
) -> DeletedOut:
    """The first call answers 409 with a `confirm_token` valid 5 minutes; the same call with
    `?confirm=<token>` deletes. Refused (409) while a launch is live or paused or a run is unfinished."""
    key = _confirm_key(request)

    def blockers(conn: Connection) -> None:
        universe_row(conn, caller.workspace_id, universe_id)
        busy_launch = conn.execute(
            select(launches.c.id).where(
                launches.c.universe_id == universe_id,
                launches.c.status.in_((LaunchStatus.LIVE.value, LaunchStatus.PAUSED.value)),
            )
        ).first()
        unfinished = conn.execute(
            select(runs.c.id).where(
                runs.c.universe_id == universe_id,
                runs.c.status.in_([s.value for s in RunStatus if not s.terminal]),
            )
        ).first()
        if busy_launch is not None or unfinished is not None:
            raise Problem(
                409,
                "universe_busy",
                "this universe has a live or paused launch or an unfinished run",
                hint="stop its launches and cancel its runs, then delete",
            )

    if confirm is None or not _confirmed(key, caller, universe_id, confirm):
        await read(request, blockers)
        expires = int(time.time()) + CONFIRM_TTL_S
        token = f"{expires}.{_confirm_mac(key, caller, universe_id, expires)}"
        stale = confirm is not None
        raise Problem(
            409,
            "confirmation_required",
            ("the confirmation token is wrong or expired; " if stale else "")
            + "deleting removes every version, launch and run of this universe and cannot be undone",
            hint="repeat the request with ?confirm=<confirm_token> within 5 minutes",
            extra={"confirm_token": token, "expires_in_s": CONFIRM_TTL_S},
        )

    def write(conn: Connection) -> int:
        blockers(conn)
        run_ids = select(runs.c.id).where(runs.c.universe_id == universe_id)
        for table in (node_results, effects, run_events):
            conn.execute(delete(table).where(table.c.run_id.in_(run_ids)))
        count = conn.execute(delete(runs).where(runs.c.universe_id == universe_id)).rowcount
        launch_ids = select(launches.c.id).where(launches.c.universe_id == universe_id)
        trigger_ids = select(triggers.c.id).where(triggers.c.launch_id.in_(launch_ids))
        for table in (webhook_secrets, trigger_fires, webhook_deliveries):
            conn.execute(delete(table).where(table.c.trigger_id.in_(trigger_ids)))
        conn.execute(delete(triggers).where(triggers.c.launch_id.in_(launch_ids)))
        conn.execute(delete(launches).where(launches.c.universe_id == universe_id))
        conn.execute(delete(universe_versions).where(universe_versions.c.universe_id == universe_id))
        conn.execute(delete(universes).where(universes.c.id == universe_id))
        return int(count or 0)

    removed = await runtime_of(request).writer.write(write)
    return DeletedOut(deleted=universe_id, runs_deleted=removed)


@router.post(
    "/validate",
    response_model=ValidationOut,
    summary="Validate a document; nothing is saved",
    responses=links.answer(200, links.validated()),
)
async def validate_document(body: DocumentIn, caller: Viewer) -> ValidationOut:
    return _validation(body.document)


def _validation(document: dict[str, Any]) -> ValidationOut:
    caps = document_size_problems(document)
    if caps:
        return ValidationOut(valid=False, diagnostics=[d.to_json() for d in caps], order=[])
    try:
        universe, notes = universe_from_raw(parse_json(json.dumps(document, allow_nan=True)))
    except DocumentError as exc:
        return ValidationOut(valid=False, diagnostics=[d.to_json() for d in exc.diagnostics], order=[])
    report = validate(universe)
    return ValidationOut(
        valid=report.valid,
        diagnostics=[d.to_json() for d in [*notes, *report.diagnostics]],
        order=list(report.order),
    )


@router.post(
    "/universes/import", status_code=201, response_model=SavedOut,
    summary="Import a universe saved by the original studio (or any older format)",
    responses=links.answer(201, links.universe("/universe/id"), links.version("/version/id", "/universe/id")),
)  # fmt: skip
async def import_universe(body: ImportIn, request: Request, caller: Editor) -> SavedOut:
    """The CLI's `cosmogen import`, then saved like POST /universes; the upgrade notes come back as
    diagnostics."""
    return await save(request, caller, body.document, body.label)


@router.get(
    "/universes/{universe_id}/export", summary="The document of a version (default: the active one)",
    responses=links.answer(200, links.document("", "$request.path.universe_id")),
)  # fmt: skip
async def export_universe(
    universe_id: str,
    request: Request,
    caller: Viewer,
    version_id: Annotated[str | None, Query(max_length=64)] = None,
) -> dict[str, Any]:
    def fetch(conn: Connection) -> dict[str, Any]:
        row = universe_row(conn, caller.workspace_id, universe_id)
        wanted = version_id or row.active_version_id
        if wanted is None:
            raise not_found("version")
        version = version_row(conn, caller.workspace_id, wanted)
        if version.universe_id != universe_id:
            raise not_found("version")
        document: dict[str, Any] = version.document
        return document

    return await read(request, fetch)
