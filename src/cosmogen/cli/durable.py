"""Durable runs from the command line: run a document through the journal, and inspect or steer runs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import select

from cosmogen.domain.runs import RunStatus
from cosmogen.runtime import journal
from cosmogen.runtime.ownership import DataDirBusy
from cosmogen.runtime.service import Runtime, Submitted
from cosmogen.settings import Settings
from cosmogen.store import Database, GroupCommitWriter, migrate, new_id, repos
from cosmogen.store.tables import effects, runs, universe_versions, universes

# A run the CLI waits for is "done" for the CLI in any of these (a paused run waits for a person).
SETTLED = frozenset(
    {RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.PAUSED, RunStatus.NEEDS_ATTENTION}
)


async def run_document(
    settings: Settings,
    document: dict[str, Any],
    event: dict[str, Any],
    *,
    dry_run: bool,
    detach: bool,
    on_node: Callable[[], None] = lambda: None,
) -> tuple[str, dict[str, Any] | None]:
    """Run in this process if it can own the data directory; otherwise queue it for the process that does
    (`cosmogen serve`) and wait. Returns the run id and, unless detached, its report."""
    try:
        runtime = await Runtime.open(settings.runtime())
    except DataDirBusy:
        return await _queue_for_owner(settings, document, event, dry_run=dry_run, detach=detach)
    runtime.executor.on_node = lambda _run, _node: on_node()
    try:
        if not detach:
            runtime.require_workers()  # PostgreSQL: a worker process runs it, not this one
        submitted = await runtime.submit(document, event=event, dry_run=dry_run, start=not detach)
        if detach:
            return submitted.run_id, None
        await runtime.wait(submitted.run_id)
        return submitted.run_id, report(runtime.db, submitted.run_id)
    finally:
        await runtime.close()


async def _queue_for_owner(
    settings: Settings, document: dict[str, Any], event: dict[str, Any], *, dry_run: bool, detach: bool
) -> tuple[str, dict[str, Any] | None]:
    db = settings.runtime().open_database()
    writer = GroupCommitWriter(db)
    try:
        run_id = new_id()

        def write(conn: Any) -> Submitted:
            saved = repos.save_version(
                conn, workspace_id="default", name=str(document["name"]), document=document
            )
            journal.create_run(
                run_id=run_id,
                universe_id=saved.universe_id,
                version_id=saved.version_id,
                event=event,
                dry_run=dry_run,
            )(conn)
            return Submitted(run_id, saved.universe_id, saved.version_id, saved.number)

        await writer.write(write)
        if detach:
            return run_id, None
        while status_of(db, run_id) not in SETTLED:
            await asyncio.sleep(0.05)
        return run_id, report(db, run_id)
    finally:
        writer.close()
        db.close()


def open_store(settings: Settings) -> Database:
    db = settings.runtime().open_database()
    migrate.upgrade(db)
    return db


def status_of(db: Database, run_id: str) -> RunStatus:
    with db.engine.connect() as conn:
        return journal.load_run(conn, run_id).status


def report(db: Database, run_id: str) -> dict[str, Any]:
    """What a person or a script wants to know about a run, in the same shape as an in-memory run plus
    the run's identity and its calls."""
    with db.engine.connect() as conn:
        record = journal.load_run(conn, run_id)
        meta = conn.execute(
            select(universes.c.name, universe_versions.c.number)
            .select_from(universe_versions.join(universes))
            .where(universe_versions.c.id == record.version_id)
        ).one()
        calls = [
            {
                "node": row.node_id,
                "binding": row.binding_id,
                "method": row.method,
                "url": row.url,
                "effect": row.status,
                "status": (row.response or {}).get("status"),
                "key": row.idempotency_key,
            }
            for row in conn.execute(select(effects).where(effects.c.run_id == run_id).order_by(effects.c.id))
        ]
    state = record.state if record.cursor > 0 else {}
    return {
        "run_id": record.id,
        "universe": meta.name,
        "version": meta.number,
        "status": record.status.value,
        # Why a running run waits and until when (a shared rate limit); None when it does not.
        "waiting": record.waiting if record.status is RunStatus.RUNNING else None,
        "dry_run": record.dry_run,
        "attempt": record.attempt,
        "parent_run_id": record.parent_run_id,
        "error": record.error,
        "entities": state.get("entities", {}),
        "branches": state.get("branches", []),
        "paradoxes": state.get("paradoxes", []),
        "trace": state.get("trace", []),
        "nodes": state.get("nodes", {}),
        # What each node produced, binding results included (`nodes.<id>` in expressions).
        "outputs": state.get("outputs", {}),
        "calls": calls,
        "created_at": record.created_at.isoformat(),
        "finished_at": record.finished_at.isoformat() if record.finished_at else None,
    }


def list_runs(db: Database, limit: int) -> list[dict[str, Any]]:
    with db.engine.connect() as conn:
        rows = conn.execute(
            select(
                runs.c.id,
                runs.c.status,
                runs.c.dry_run,
                runs.c.created_at,
                runs.c.finished_at,
                universes.c.name,
            )
            .select_from(runs.join(universes))
            .order_by(runs.c.created_at.desc(), runs.c.id.desc())
            .limit(limit)
        )
        return [
            {
                "run_id": r.id,
                "universe": r.name,
                "status": r.status,
                "dry_run": bool(r.dry_run),
                "created_at": r.created_at.isoformat(),
                "finished_at": r.finished_at.isoformat() if r.finished_at else None,
            }
            for r in rows
        ]


def wait_settled(db: Database, run_id: str, timeout_s: float) -> RunStatus:
    deadline = time.monotonic() + timeout_s
    status = status_of(db, run_id)
    while status not in SETTLED and time.monotonic() < deadline:
        time.sleep(0.05)
        status = status_of(db, run_id)
    return status
