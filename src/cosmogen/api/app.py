"""The ASGI application. The runtime is handed in (one composition root: `cli/serve.py`)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from cosmogen import __version__
from cosmogen.api.webhooks import webhook_routes
from cosmogen.runtime.scheduler import Scheduler
from cosmogen.runtime.service import Runtime
from cosmogen.store.tables import utcnow


def create_app(open_runtime: Callable[[], Awaitable[Runtime]]) -> Starlette:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        runtime = await open_runtime()
        app.state.runtime = runtime
        if runtime.queued:
            await runtime.start_worker()  # PostgreSQL: this process is one of the workers
        else:
            await runtime.recover()
            runtime.start_polling()
        clock = utcnow
        # Routes that need the store join once it is open (the app is built before the runtime exists).
        app.router.routes.extend(
            webhook_routes(runtime.db, runtime.writer, runtime.start_run, clock, runtime.open_vault)
        )
        scheduler = Scheduler(runtime.db, runtime.writer, runtime.start_run, clock)
        ticking = asyncio.create_task(scheduler.run_forever(), name="scheduler")
        try:
            yield
        finally:
            ticking.cancel()
            await asyncio.gather(ticking, return_exceptions=True)
            await runtime.close()

    async def healthz(request: Request) -> JSONResponse:
        runtime: Runtime = request.app.state.runtime
        try:
            with runtime.db.engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")
        except Exception:  # the database is the one dependency health must report
            return JSONResponse({"status": "unavailable", "database": "unreachable"}, status_code=503)
        return JSONResponse(
            {
                "status": "ok",
                "version": __version__,
                "database": runtime.db.dialect,
                "runs_in_flight": runtime.in_flight,
            }
        )

    return Starlette(routes=[Route("/healthz", healthz)], lifespan=lifespan)
