"""`cosmogen serve`: the runtime, its poller and the HTTP server in one process (the composition root)."""

from __future__ import annotations

import logging
import os
import sys

import click
import uvicorn

from cosmogen.api.app import create_app
from cosmogen.cli.loading import EXIT_INVALID
from cosmogen.domain.request_rate import Buckets, RatePolicy
from cosmogen.integrations.vault import VaultError
from cosmogen.runtime.backups import BackupSchedule
from cosmogen.runtime.ownership import DataDirBusy
from cosmogen.runtime.service import Runtime, UnsafeDatabase, check_vault_keys
from cosmogen.settings import Settings, SettingsError
from cosmogen.telemetry.logging import LogSettingError, LogSettings, configure_logging
from cosmogen.telemetry.metrics import Metrics, MetricsSettingError, metrics_public

log = logging.getLogger(__name__)


@click.command("serve")
@click.option(
    "--data-dir",
    default=None,
    help="Data directory (default: $COSMOGEN_DATA_DIR or ~/.local/share/cosmogen).",
)
@click.option("--database-url", default=None, help="PostgreSQL URL instead of the embedded SQLite database.")
@click.option("--host", default=None, help="Address to listen on (default 127.0.0.1).")
@click.option("--port", default=None, type=int, help="Port (default 8420).")
@click.option(
    "--sandbox/--no-sandbox",
    default=None,
    help="Serve the provider simulator on 127.0.0.1 with sandbox accounts that use it "
    "(default: on with SQLite, off with PostgreSQL; $COSMOGEN_SANDBOX).",
)
@click.option(
    "--workspace-requests-per-minute",
    "per_minute",
    default=12_000,
    show_default=True,
    type=click.IntRange(1, 1_000_000),
    help="Authenticated API requests a workspace may make a minute (bursts up to a sixth of a minute's "
    "worth, at least 10); over it: 429 with Retry-After.",
)
def serve_command(
    data_dir: str | None,
    database_url: str | None,
    host: str | None,
    port: int | None,
    sandbox: bool | None,
    per_minute: int,
) -> None:
    """Serve the runtime and its HTTP API; resumes every run a previous process left unfinished."""
    try:
        settings = Settings.from_env(
            os.environ, data_dir=data_dir, database_url=database_url, host=host, port=port, sandbox=sandbox
        )
        logs = LogSettings.from_env(os.environ)
        metrics = Metrics(public=metrics_public(os.environ))  # this process's registry, served at /metrics
    except (SettingsError, LogSettingError, MetricsSettingError) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_INVALID)
    configure_logging(logs.level, json=logs.json)

    async def open_runtime() -> Runtime:
        runtime = await _open_runtime()
        await _offer_setup(runtime, settings)
        if settings.backups is not None:
            app.state.backups = _start_backups(runtime, settings)
        return runtime

    async def _open_runtime() -> Runtime:
        try:
            if settings.sandbox:
                return await _open_with_sandbox(settings, metrics)
            return await Runtime.open(settings.runtime(), vault_at_start=True, telemetry=metrics)
        except DataDirBusy as exc:
            click.echo(f"error: {exc}; stop it first, or use another --data-dir", err=True)
            raise SystemExit(EXIT_INVALID) from None
        except (UnsafeDatabase, VaultError) as exc:  # a wrong or missing vault key: nothing was written
            click.echo(f"error: {exc}", err=True)
            raise SystemExit(EXIT_INVALID) from None

    try:
        check_vault_keys(settings.runtime())  # before anything starts or is written
    except VaultError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_INVALID)
    if settings.backups is not None:
        _check_backups(settings)
    app = create_app(open_runtime)
    app.state.request_rate = Buckets(RatePolicy(per_minute=per_minute, burst=max(10, per_minute // 6)))
    where = "PostgreSQL" if settings.database_url else settings.data_dir
    log.info("cosmogen serving on http://%s:%s (data: %s)", settings.host, settings.port, where)
    # log_config=None: uvicorn's loggers go through the root handler configured above (JSON, redacted).
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level="warning",
        lifespan="on",
        log_config=None,
        # An open event stream (SSE) never ends by itself: give requests 5 s, then stop (runs drain after).
        timeout_graceful_shutdown=5,
        ws_max_size=1 << 20,  # a client frame over 1 MiB is closed with 1009 before it is buffered
    )


def _check_backups(settings: Settings) -> None:
    """Scheduled backups that could never work stop start-up, rather than failing every few hours."""
    from cosmogen.store.backup import BackupError, find_tool

    assert settings.backups is not None
    directory = settings.backups.directory
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        if settings.database_url is not None:
            find_tool("pg_dump")
    except OSError as exc:
        click.echo(f"error: COSMOGEN_BACKUP_DIR: cannot create {directory}: {exc.strerror}", err=True)
        sys.exit(EXIT_INVALID)
    except BackupError as exc:
        click.echo(f"error: COSMOGEN_BACKUP_DIR is set, but {exc}", err=True)
        sys.exit(EXIT_INVALID)


def _start_backups(runtime: Runtime, settings: Settings) -> BackupSchedule:
    """Scheduled backups beside the runtime, stopped with it (runtime/backups.py)."""
    from cosmogen.store.tables import utcnow

    assert settings.backups is not None
    schedule = BackupSchedule(
        settings.backups,
        data_dir=settings.data_dir,
        database_url=settings.database_url,
        clock=utcnow,
        hooks=runtime.telemetry,
    )
    schedule.start()
    runtime.on_close(schedule.close)
    every = settings.backups.every_s
    log.info(
        "scheduled backups: every %gs into %s, keeping %d",
        every,
        settings.backups.directory,
        settings.backups.keep,
    )
    return schedule


async def _offer_setup(runtime: Runtime, settings: Settings) -> None:
    """No user yet: print a one-time link to create the owner (a new one at every start until used)."""
    from cosmogen.identity.setup import issue_setup_token
    from cosmogen.store.tables import utcnow

    token, write = issue_setup_token(utcnow())
    if await runtime.writer.write(write):
        click.echo(
            f"no owner yet: create one at http://{settings.host}:{settings.port}/setup#token="
            f"{token.reveal()} (works once; every start until then prints a new link)",
            err=True,
        )


async def _open_with_sandbox(settings: Settings, metrics: Metrics) -> Runtime:
    """The runtime with the provider simulator beside it and the sandbox accounts pointing at it."""
    from dataclasses import replace

    from cosmogen.runtime import sandbox
    from cosmogen.testing.simulator import Simulator

    sim = Simulator(name="sandbox")
    await sim.start(0)
    runtime_settings = settings.runtime()
    # One allowlist entry for the simulator's address and port: the guard stays on for everything else,
    # other services on loopback included.
    opened = runtime_settings.egress.with_endpoint("127.0.0.1", sim.port)
    try:
        runtime = await Runtime.open(
            replace(runtime_settings, egress=opened), vault_at_start=True, telemetry=metrics
        )
    except BaseException:
        await sim.close()
        raise
    runtime.on_close(sim.close)
    wanted = sandbox.sandbox_accounts(sim, runtime.executor.registry)
    names = await runtime.writer.write(
        sandbox.install(runtime.open_vault(), runtime.settings.workspace, wanted)
    )
    kept = ", ".join(names) or "none (they were removed; a fresh data directory brings them back)"
    shown = "sandbox: provider simulator on %s (not the real providers); sandbox accounts: %s"
    log.info(shown, sim.url, kept)
    return runtime
