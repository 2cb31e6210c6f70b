"""`/healthz` (the process answers and its database does) and `/readyz` (it takes work). Public."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse

from cosmogen import __version__
from cosmogen.runtime.service import Runtime

router = APIRouter(tags=["health"])
_UNAVAILABLE: dict[int | str, dict[str, Any]] = {
    503: {
        "description": "The database does not answer (or, for readiness, the process is shutting down)",
        "content": {"application/json": {"schema": {"type": "object", "required": ["status"]}}},
    }
}


def _database_answers(runtime: Runtime) -> bool:
    try:
        with runtime.db.engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    except Exception:  # the database is the one dependency health must report
        return False
    return True


@router.get("/healthz", summary="Liveness: the process and its database answer", responses=_UNAVAILABLE)
async def healthz(request: Request) -> Any:
    runtime: Runtime = request.app.state.runtime
    if not _database_answers(runtime):
        return JSONResponse({"status": "unavailable", "database": "unreachable"}, status_code=503)
    return {
        "status": "ok",
        "version": __version__,
        "database": runtime.db.dialect,
        "runs_in_flight": runtime.in_flight,
    }


@router.get(
    "/readyz",
    summary="Readiness: the database answers and the runtime is not shutting down",
    responses=_UNAVAILABLE,
)
async def readyz(request: Request) -> Any:
    runtime: Runtime = request.app.state.runtime
    # Scheduled backups (runtime/backups.py) are reported, not gating: a failing one does not stop
    # the process taking work, but it shows here ("failing", the last error) and in /metrics.
    schedule = getattr(request.app.state, "backups", None)
    extra = {"backups": schedule.status()} if schedule is not None else {}
    if runtime.draining or not _database_answers(runtime):
        return JSONResponse({"status": "not_ready", **extra}, status_code=503)
    return {"status": "ready", **extra}
