"""`cosmogen worker`: a process that takes runs from the PostgreSQL job queue and fires schedules.

Start as many as you like, on as many machines, with the same --database-url. They share nothing but
the database: procrastinate hands each queued run to one of them; a worker that dies is noticed by its
missing heartbeats and its runs resume on another; a schedule tick fires once however many run.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys

import click

from cosmogen.cli.loading import EXIT_INVALID
from cosmogen.integrations.vault import VaultError
from cosmogen.runtime.queue import WorkerOptions
from cosmogen.runtime.scheduler import Scheduler
from cosmogen.runtime.service import NeedsPostgres, Runtime, UnsafeDatabase
from cosmogen.settings import Settings, SettingsError
from cosmogen.store.tables import utcnow
from cosmogen.telemetry.logging import LogSettingError, LogSettings, configure_logging

log = logging.getLogger(__name__)


@click.command("worker")
@click.option(
    "--database-url", default=None, help="PostgreSQL URL (default: $COSMOGEN_DATABASE_URL); required."
)
@click.option(
    "--concurrency", default=64, show_default=True, type=click.IntRange(1, 1024), help="Runs at once."
)
@click.option(
    "--drain-seconds",
    default=20.0,
    show_default=True,
    type=click.FloatRange(0, 3600),
    help="On SIGTERM, how long runs get to reach a node boundary before they are left to another worker.",
)
@click.option(
    "--no-scheduler", is_flag=True, help="Only run runs; leave cron and interval triggers to others."
)
def worker_command(
    database_url: str | None, concurrency: int, drain_seconds: float, no_scheduler: bool
) -> None:
    """Run queued runs from PostgreSQL until stopped (SIGTERM or Ctrl-C stops it gracefully)."""
    try:
        settings = Settings.from_env(os.environ, database_url=database_url)
        logs = LogSettings.from_env(os.environ)
    except (SettingsError, LogSettingError) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_INVALID)
    configure_logging(logs.level, json=logs.json)
    if not settings.database_url:
        click.echo(
            "error: cosmogen worker needs PostgreSQL: pass --database-url or set COSMOGEN_DATABASE_URL "
            "(the embedded SQLite runtime runs its runs inside `cosmogen serve`)",
            err=True,
        )
        sys.exit(EXIT_INVALID)
    options = settings.runtime().worker_options(concurrency=concurrency, shutdown_s=drain_seconds)
    try:
        asyncio.run(_work(settings, options, scheduler=not no_scheduler))
    except (NeedsPostgres, UnsafeDatabase, VaultError) as exc:  # VaultError: a wrong or missing key
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_INVALID)


async def _work(settings: Settings, options: WorkerOptions, *, scheduler: bool) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    runtime = await Runtime.open(settings.runtime(), vault_at_start=True)
    ticking: asyncio.Task[None] | None = None
    try:
        registered = await asyncio.to_thread(_registered_workers, runtime)
        await runtime.start_worker(options)
        # "taking runs" once the queue knows this worker (procrastinate registers it in a task of its own).
        deadline = loop.time() + 5
        while loop.time() < deadline and await asyncio.to_thread(_registered_workers, runtime) <= registered:
            await asyncio.sleep(0.02)
        if scheduler:
            ticks = Scheduler(runtime.db, runtime.writer, runtime.start_run, utcnow)
            ticking = asyncio.create_task(ticks.run_forever(), name="scheduler")
        log.info("cosmogen worker %s taking runs (concurrency %d)", runtime.worker_id, options.concurrency)
        await stop.wait()
        log.info("cosmogen worker stopping: runs park at their next node")
    finally:
        if ticking is not None:
            ticking.cancel()
            await asyncio.gather(ticking, return_exceptions=True)
        await runtime.close(drain_s=options.shutdown_s)


def _registered_workers(runtime: Runtime) -> int:
    with runtime.db.engine.connect() as conn:
        return int(conn.exec_driver_sql("SELECT count(*) FROM procrastinate_workers").scalar() or 0)
