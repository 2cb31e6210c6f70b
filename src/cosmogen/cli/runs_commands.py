"""`cosmogen runs ...`: list, inspect and steer durable runs."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Any

import click

from cosmogen.cli import durable, render
from cosmogen.cli.loading import EXIT_FAILED, EXIT_INVALID, EXIT_OK
from cosmogen.domain.runs import IllegalTransition, RunAction, RunStatus
from cosmogen.runtime import control, journal
from cosmogen.runtime.ownership import DataDirBusy
from cosmogen.runtime.service import Runtime
from cosmogen.settings import Settings, SettingsError
from cosmogen.store import DatabaseError, GroupCommitWriter

store_options = [
    click.option(
        "--data-dir",
        default=None,
        help="Data directory (default: $COSMOGEN_DATA_DIR or ~/.local/share/cosmogen).",
    ),
    click.option(
        "--database-url", default=None, help="PostgreSQL URL instead of the embedded SQLite database."
    ),
]


def with_store(fn: Any) -> Any:
    for option in reversed(store_options):
        fn = option(fn)
    return fn


def settings_or_exit(data_dir: str | None, database_url: str | None) -> Settings:
    try:
        return Settings.from_env(os.environ, data_dir=data_dir, database_url=database_url)
    except SettingsError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_INVALID)


@click.group("runs")
def runs_group() -> None:
    """List, inspect and steer durable runs."""


@runs_group.command("list")
@with_store
@click.option("--limit", default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def list_command(data_dir: str | None, database_url: str | None, limit: int, as_json: bool) -> None:
    """The most recent runs."""
    db = _store(data_dir, database_url)
    rows = durable.list_runs(db, limit)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no runs yet")
    for row in rows:
        mode = " (dry run)" if row["dry_run"] else ""
        click.echo(f"{row['run_id']}  {row['status']:<15} {row['universe']}{mode}  {row['created_at']}")


@runs_group.command("show")
@click.argument("run_id")
@with_store
@click.option("--json", "as_json", is_flag=True)
def show_command(run_id: str, data_dir: str | None, database_url: str | None, as_json: bool) -> None:
    """One run: status, entities, calls, error."""
    db = _store(data_dir, database_url)
    data = _report_or_exit(db, run_id)
    emit_report(data, as_json)


@runs_group.command("events")
@click.argument("run_id")
@with_store
@click.option("--json", "as_json", is_flag=True)
def events_command(run_id: str, data_dir: str | None, database_url: str | None, as_json: bool) -> None:
    """The run's event log, in order."""
    db = _store(data_dir, database_url)
    _report_or_exit(db, run_id)
    with db.engine.connect() as conn:
        events = journal.events_of(conn, run_id)
    if as_json:
        click.echo(json.dumps(events, indent=2))
        return
    for event in events:
        click.echo(f"{event['seq']:>4}  {event['at']}  {event['type']:<18} {json.dumps(event['payload'])}")


def _steer_command(name: str, action: RunAction, help_text: str) -> None:
    @runs_group.command(name, help=help_text)
    @click.argument("run_id")
    @with_store
    @click.option("--detach", is_flag=True, help="Do not wait for the run to settle.")
    @click.option("--json", "as_json", is_flag=True)
    def command(
        run_id: str, data_dir: str | None, database_url: str | None, detach: bool, as_json: bool
    ) -> None:
        settings = settings_or_exit(data_dir, database_url)
        status, data = asyncio.run(_steer(settings, run_id, action, detach))
        if data is None:
            click.echo(
                json.dumps({"run_id": run_id, "status": status.value})
                if as_json
                else f"{run_id}: {status.value}"
            )
            return
        emit_report(data, as_json)


_steer_command("pause", RunAction.PAUSE, "Pause a run between nodes.")
_steer_command("resume", RunAction.RESUME, "Resume a paused run (or one whose process died) and wait for it.")
_steer_command("cancel", RunAction.CANCEL, "Cancel a run; it makes no further calls.")
_steer_command("retry-anyway", RunAction.RETRY_ANYWAY, "Resend the ambiguous call that stopped a run.")
_steer_command("mark-done", RunAction.MARK_DONE, "Accept that the ambiguous call happened, and go on.")


def _child_command(name: str, make_write: Any, help_text: str) -> None:
    @runs_group.command(name, help=help_text)
    @click.argument("run_id")
    @with_store
    @click.option("--detach", is_flag=True)
    @click.option("--json", "as_json", is_flag=True)
    def command(
        run_id: str, data_dir: str | None, database_url: str | None, detach: bool, as_json: bool
    ) -> None:
        settings = settings_or_exit(data_dir, database_url)
        _, data = asyncio.run(_child(settings, run_id, make_write(run_id), detach))
        emit_report(data, as_json)


_child_command(
    "retry", control.retry, "Start a new run from the failed node, reusing the calls made before it."
)
_child_command("rerun", control.rerun, "Start a new run of the same version with the same event.")


async def _steer(
    settings: Settings, run_id: str, action: RunAction, detach: bool
) -> tuple[RunStatus, dict[str, Any] | None]:
    if settings.database_url:
        # PostgreSQL: nobody owns the runs; a worker obeys the request, wherever it runs.
        return await _steer_remote(settings, run_id, action, detach)
    try:
        runtime = await Runtime.open(settings.runtime())
    except DataDirBusy:
        return await _steer_remote(settings, run_id, action, detach)
    try:
        status = _status_or_exit(runtime, run_id)
        if status is RunStatus.RUNNING and action is RunAction.RESUME:
            status = await runtime.wait(run_id)  # its process died: we own the directory, so resume it
        else:
            status = await _act(runtime, run_id, action)
            if status is RunStatus.QUEUED and not detach:
                status = await runtime.wait(run_id)
        return status, None if detach else durable.report(runtime.db, run_id)
    finally:
        await runtime.close()


async def _act(runtime: Runtime, run_id: str, action: RunAction) -> RunStatus:
    try:
        return await runtime.writer.write(control.act(run_id, action, orphans_owned=True))
    except IllegalTransition as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_INVALID)


async def _steer_remote(
    settings: Settings, run_id: str, action: RunAction, detach: bool
) -> tuple[RunStatus, dict[str, Any] | None]:
    db = durable.open_store(settings)
    writer = GroupCommitWriter(db)
    try:
        try:
            status = await writer.write(control.act(run_id, action))
        except IllegalTransition as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(EXIT_INVALID)
        except LookupError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(EXIT_INVALID)
        if detach:
            return status, None
        status = await asyncio.to_thread(durable.wait_settled, db, run_id, 600.0)
        return status, durable.report(db, run_id)
    finally:
        writer.close()
        db.close()


async def _child(settings: Settings, run_id: str, write: Any, detach: bool) -> tuple[str, dict[str, Any]]:
    try:
        runtime = await Runtime.open(settings.runtime())
    except DataDirBusy:
        db = durable.open_store(settings)
        writer = GroupCommitWriter(db)
        try:
            child = await _write_or_exit(writer, write)
            if not detach:
                await asyncio.to_thread(durable.wait_settled, db, child, 600.0)
            return child, durable.report(db, child)
        finally:
            writer.close()
            db.close()
    try:
        child = await _write_or_exit(runtime.writer, write)
        if not detach:
            await runtime.wait(child)
        return child, durable.report(runtime.db, child)
    finally:
        await runtime.close()


async def _write_or_exit(writer: GroupCommitWriter, write: Any) -> str:
    try:
        return str(await writer.write(write))
    except (IllegalTransition, LookupError) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_INVALID)


def _status_or_exit(runtime: Runtime, run_id: str) -> RunStatus:
    try:
        return durable.status_of(runtime.db, run_id)
    except LookupError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_INVALID)


def _store(data_dir: str | None, database_url: str | None) -> Any:
    settings = settings_or_exit(data_dir, database_url)
    try:
        return durable.open_store(settings)
    except DatabaseError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_INVALID)


def _report_or_exit(db: Any, run_id: str) -> dict[str, Any]:
    try:
        return durable.report(db, run_id)
    except LookupError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_INVALID)


def emit_report(data: dict[str, Any], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(data, indent=2, ensure_ascii=False))
    else:
        render.durable_result(data)
    status = data["status"]
    sys.exit(EXIT_OK if status in ("succeeded", "queued", "running", "paused") else EXIT_FAILED)
