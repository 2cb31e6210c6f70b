"""The ASGI application. The runtime is handed in (one composition root: `cli/serve.py`).

Routes live in api/routes/ (one module per resource) and authenticate through api/security.py; every
error is a problem document (api/problems.py). `/openapi.json` describes all of it; the interactive docs
pages are off (they load scripts from a CDN, which the studio's CSP forbids).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import datetime

from fastapi import FastAPI

from cosmogen import __version__
from cosmogen.api import audit, middleware, problems
from cosmogen.api.routes import (
    accounts,
    events,
    health,
    me,
    members,
    oauth_callback,
    pages,
    session,
    setup,
    tokens,
)
from cosmogen.api.routes import alerts as alert_routes
from cosmogen.api.routes import launches as launch_routes
from cosmogen.api.routes import metrics as metrics_routes
from cosmogen.api.routes import runs as run_routes
from cosmogen.api.routes import universe_metrics as universe_metric_routes
from cosmogen.api.routes import universes as universe_routes
from cosmogen.api.security import Authenticator
from cosmogen.api.webhooks import webhook_routes
from cosmogen.api.ws import EventStreams
from cosmogen.integrations.accounts import DbAccountResolver
from cosmogen.integrations.alert_senders import Senders
from cosmogen.runtime.alerts import AlertDispatcher
from cosmogen.runtime.feed import EventFeed
from cosmogen.runtime.scheduler import Scheduler
from cosmogen.runtime.service import Runtime
from cosmogen.store.tables import utcnow


def create_app(open_runtime: Callable[[], Awaitable[Runtime]]) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = await open_runtime()
        app.state.runtime = runtime
        app.state.auth = Authenticator(runtime.db, utcnow)
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
        feed = EventFeed(
            runtime.db, runtime.writer,
            database_url=runtime.settings.database_url, telemetry=runtime.telemetry,
        )  # fmt: skip
        await feed.start()
        runtime.on_close(feed.close)
        origins = EventStreams.parse_origins(os.environ.get("COSMOGEN_ALLOWED_ORIGINS"))
        app.state.event_streams = EventStreams(feed, app.state.auth, runtime.db, clock, origins)
        app.state.alerts = start_alerts(runtime, clock)
        scheduler = Scheduler(runtime.db, runtime.writer, runtime.start_run, clock)
        ticking = asyncio.create_task(scheduler.run_forever(), name="scheduler")
        try:
            yield
        finally:
            ticking.cancel()
            await asyncio.gather(ticking, return_exceptions=True)
            await runtime.close()

    app = FastAPI(
        title="cosmogen",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    problems.install(app)
    middleware.install(app)
    app.include_router(setup.router)
    app.include_router(pages.router)
    app.include_router(session.router)
    app.include_router(tokens.router)
    app.include_router(members.router)
    app.include_router(health.router)
    app.include_router(me.router)
    app.include_router(events.router)
    app.include_router(metrics_routes.router)
    app.include_router(universe_metric_routes.router)
    app.include_router(accounts.router)
    app.include_router(oauth_callback.router)
    app.include_router(audit.router)
    app.include_router(universe_routes.router)
    app.include_router(run_routes.router)
    app.include_router(launch_routes.router)
    app.include_router(alert_routes.router)
    return app


def start_alerts(runtime: Runtime, clock: Callable[[], datetime]) -> AlertDispatcher:
    """The alert dispatcher (runtime/alerts.py), stopped with the runtime. COSMOGEN_ALERT_POLL_S and
    COSMOGEN_ALERT_CONDITIONS_S set how often it looks at runs and deliveries, and at accounts, error
    rates and rate limits."""
    from cosmogen.domain.capabilities import default_registry

    resolver = DbAccountResolver(runtime.db, runtime.open_vault, clock, tokens=runtime.tokens)
    senders = Senders(runtime.http, runtime.settings.egress, resolver, default_registry(), runtime.db, clock)
    dispatcher = AlertDispatcher(
        runtime.db, runtime.writer, senders, runtime.open_vault, clock, owner=runtime.worker_id,
        poll_s=float(os.environ.get("COSMOGEN_ALERT_POLL_S", "1")),
        conditions_every_s=float(os.environ.get("COSMOGEN_ALERT_CONDITIONS_S", "30")),
    )  # fmt: skip
    dispatcher.start()
    runtime.on_close(dispatcher.close)
    return dispatcher
