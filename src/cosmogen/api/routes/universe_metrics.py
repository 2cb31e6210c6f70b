"""`GET /api/v1/universes/{id}/metrics`: the dashboard's live numbers for one universe (progress, velocity
over a sliding window, error rate, uptime since launch; domain/live_metrics.py says how each is defined).

Read in one connection, with indexed queries only: runs by universe, events and effects by run (restricted
to runs still running or finished within the window), launches by universe. Role viewer; a universe of
another workspace answers 404.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from sqlalchemy import Connection, func, or_, select

from cosmogen.api.problems import AUTHENTICATED, problem_responses
from cosmogen.api.schemas import universe_row
from cosmogen.api.security import Viewer
from cosmogen.domain.live_metrics import (
    DEFAULT_WINDOW_S,
    MAX_WINDOW_S,
    MIN_WINDOW_S,
    CurrentRun,
    LiveSnapshot,
    live_metrics,
)
from cosmogen.runtime.service import Runtime
from cosmogen.store.tables import effects, launches, run_events, runs, universe_versions, utcnow

router = APIRouter(prefix="/api/v1", tags=["universes"])


@router.get(
    "/universes/{universe_id}/metrics",
    summary="Live metrics of a universe: progress, velocity, error rate, uptime since launch",
    responses=problem_responses(*AUTHENTICATED, 404),
)
async def universe_metrics(
    universe_id: str,
    request: Request,
    caller: Viewer,
    window_s: Annotated[int, Query(ge=MIN_WINDOW_S, le=MAX_WINDOW_S)] = DEFAULT_WINDOW_S,
) -> dict[str, Any]:
    runtime: Runtime = request.app.state.runtime
    now = utcnow()

    def fetch() -> LiveSnapshot:
        with runtime.db.engine.connect() as conn:
            return snapshot(conn, caller.workspace_id, universe_id, now - timedelta(seconds=window_s))

    return live_metrics(await asyncio.to_thread(fetch), now, window_s)


def snapshot(conn: Connection, workspace_id: str, universe_id: str, since: datetime) -> LiveSnapshot:
    """The rows the metrics are computed from (404 for a universe outside the workspace)."""
    universe = universe_row(conn, workspace_id, universe_id)
    launch = conn.execute(
        select(launches.c.id, launches.c.status, launches.c.created_at)
        .where(launches.c.universe_id == universe_id, launches.c.status.in_(("live", "paused")))
        .order_by((launches.c.status == "live").desc(), launches.c.created_at.desc())
        .limit(1)
    ).first()
    by_status = {
        str(status): int(count)
        for status, count in conn.execute(
            select(runs.c.status, func.count())
            .where(runs.c.universe_id == universe_id)
            .group_by(runs.c.status)
        )
    }
    newest = conn.execute(
        select(
            runs.c.id, runs.c.status, runs.c.created_at, runs.c.finished_at, runs.c.cursor, runs.c.version_id
        )
        .where(runs.c.universe_id == universe_id)
        .order_by(runs.c.created_at.desc(), runs.c.id.desc())
        .limit(1)
    ).first()
    current = None
    if newest is not None:
        document = conn.execute(
            select(universe_versions.c.document).where(universe_versions.c.id == newest.version_id)
        ).scalar_one()
        finished = conn.execute(
            select(func.count())
            .select_from(run_events)
            .where(run_events.c.run_id == newest.id, run_events.c.type == "node.finished")
        ).scalar_one()
        nodes = document.get("nodes") if isinstance(document, dict) else None
        current = CurrentRun(
            newest.id, newest.status, newest.created_at, newest.finished_at, int(newest.cursor),
            len(nodes) if isinstance(nodes, list) else 0, int(finished),
        )  # fmt: skip
    # Runs that can have events or call outcomes in the window: unfinished, or finished within it.
    recent = (
        select(runs.c.id)
        .where(
            runs.c.universe_id == universe_id, or_(runs.c.finished_at.is_(None), runs.c.finished_at >= since)
        )
        .scalar_subquery()
    )
    nodes_in_window = conn.execute(
        select(func.count())
        .select_from(run_events)
        .where(
            run_events.c.run_id.in_(recent),
            run_events.c.type == "node.finished",
            run_events.c.created_at >= since,
        )
    ).scalar_one()
    calls = {
        str(status): int(count)
        for status, count in conn.execute(
            select(effects.c.status, func.count())
            .where(effects.c.run_id.in_(recent), effects.c.completed_at >= since)
            .group_by(effects.c.status)
        )
    }
    return LiveSnapshot(
        universe_id=universe.id,
        deployment_status=universe.deployment_status,
        launch_id=None if launch is None else launch.id,
        launch_status=None if launch is None else launch.status,
        launched_at=None if launch is None else launch.created_at,
        runs_by_status=by_status,
        current=current,
        nodes_in_window=int(nodes_in_window),
        calls_in_window=calls,
    )
