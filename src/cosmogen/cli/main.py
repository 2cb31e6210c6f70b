"""The `cosmogen` command line: validate, run, import, bench."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import click

from cosmogen import __version__
from cosmogen.cli import render
from cosmogen.cli.loading import EXIT_FAILED, EXIT_INVALID, EXIT_OK, Loaded, LoadFailure, load, read_source
from cosmogen.domain.diagnostics import Diagnostic, DocumentError
from cosmogen.domain.document import dump_universe, parse_json, universe_from_raw
from cosmogen.domain.fabric import run_plan
from cosmogen.domain.plan import Plan
from cosmogen.domain.validate import validate


class _Group(click.Group):
    """Loads the heavier commands on first use, and never shows a traceback for deep input.

    `runs` and `serve` need the database, the HTTP client and the web server; importing them only
    when used keeps `cosmogen validate` and `cosmogen run --memory` quick to start.
    """

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(
            [
                *super().list_commands(ctx),
                "accounts",
                "backup",
                "keys",
                "launch",
                "launches",
                "providers",
                "restore",
                "runs",
                "serve",
                "tokens",
                "worker",
            ]
        )

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name == "runs":
            from cosmogen.cli.runs_commands import runs_group

            return runs_group
        if cmd_name == "serve":
            from cosmogen.cli.serve import serve_command

            return serve_command
        if cmd_name == "accounts":
            from cosmogen.cli.accounts_commands import accounts_group

            return accounts_group
        if cmd_name == "providers":
            from cosmogen.cli.providers_command import providers_command

            return providers_command
        if cmd_name == "worker":
            from cosmogen.cli.worker import worker_command

            return worker_command
        if cmd_name == "backup":
            from cosmogen.cli.backup_commands import backup_command

            return backup_command
        if cmd_name == "restore":
            from cosmogen.cli.backup_commands import restore_command

            return restore_command
        if cmd_name == "tokens":
            from cosmogen.cli.tokens_commands import tokens_group

            return tokens_group
        if cmd_name == "keys":
            from cosmogen.cli.keys_commands import keys_group

            return keys_group
        if cmd_name == "launch":
            from cosmogen.cli.launch_commands import launch_command

            return launch_command
        if cmd_name == "launches":
            from cosmogen.cli.launch_commands import launches_group

            return launches_group
        return super().get_command(ctx, cmd_name)

    def main(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().main(*args, **kwargs)
        except RecursionError:  # pragma: no cover - defensive: the loaders are iterative
            click.echo("error: the input nests too deeply", err=True)
            sys.exit(EXIT_INVALID)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="cosmogen")
def cli() -> None:
    """cosmogen: design, validate and run universes of entity-state operators."""


@cli.command("validate")
@click.argument("file")
@click.option("--json", "as_json", is_flag=True, help="Print the diagnostics as JSON.")
def validate_command(file: str, as_json: bool) -> None:
    """Check FILE; exit 0 when it is valid, 2 with the diagnostics when not."""
    try:
        loaded = load(file)
    except LoadFailure as exc:
        _emit_invalid(exc.diagnostics, as_json)
        sys.exit(EXIT_INVALID)
    report = loaded.report
    if as_json:
        click.echo(
            json.dumps(
                {
                    "valid": report.valid,
                    "universe": loaded.universe.name,
                    "order": list(report.order),
                    "diagnostics": [d.to_json() for d in loaded.diagnostics],
                },
                indent=2,
            )
        )
    else:
        render.diagnostics(loaded.diagnostics)
        if report.valid:
            click.echo(
                f"{loaded.universe.name}: valid ({len(loaded.universe.nodes)} nodes, "
                f"{len(report.warnings) + len(loaded.notes)} warnings)"
            )
    sys.exit(EXIT_OK if report.valid else EXIT_INVALID)


@cli.command("run")
@click.argument("file")
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
@click.option("--event", "event_name", default="manual", show_default=True, help="Name of the run's event.")
@click.option("--data", "event_data", default=None, help="The event's data, as a JSON object.")
@click.option(
    "--dry-run", is_flag=True, help="Make no calls: render and record each call the run would make."
)
@click.option(
    "--detach", is_flag=True, help="Queue the run, print its id and return (`cosmogen serve` runs it)."
)
@click.option(
    "--memory", is_flag=True, help="Run in memory only: no journal, no calls (bindings are shown, not made)."
)
@click.option(
    "--data-dir",
    default=None,
    help="Data directory (default: $COSMOGEN_DATA_DIR or ~/.local/share/cosmogen).",
)
@click.option("--database-url", default=None, help="PostgreSQL URL instead of the embedded SQLite database.")
@click.option("--quiet", "-q", is_flag=True, help="Print only the summary line.")
def run_command(
    file: str,
    as_json: bool,
    event_name: str,
    event_data: str | None,
    dry_run: bool,
    detach: bool,
    memory: bool,
    data_dir: str | None,
    database_url: str | None,
    quiet: bool,
) -> None:
    """Run FILE durably (journal, calls, crash recovery); exit 1 when the run fails, 2 on bad input."""
    try:
        loaded = load(file)
        data = _event_data(event_data)
    except LoadFailure as exc:
        _emit_invalid(exc.diagnostics, as_json)
        sys.exit(EXIT_INVALID)
    plan = loaded.report.plan
    if plan is None:
        _emit_invalid(loaded.diagnostics, as_json)
        sys.exit(EXIT_INVALID)
    event = {"name": event_name, "data": data}
    if memory:
        _run_in_memory(loaded, plan, event, as_json=as_json, quiet=quiet)
        return
    from cosmogen.cli import durable
    from cosmogen.cli.runs_commands import emit_report, settings_or_exit
    from cosmogen.runtime.service import NoWorkers
    from cosmogen.store import DatabaseError

    settings = settings_or_exit(data_dir, database_url)
    if not as_json and not quiet:
        render.diagnostics([d for d in loaded.diagnostics if d.severity == "warning"])
    document = loaded.universe.model_dump(mode="json", exclude_none=True)
    try:
        with render.progress(len(plan.steps), enabled=not as_json and not quiet and not detach) as advance:
            run_id, result = asyncio.run(
                durable.run_document(
                    settings, document, event, dry_run=dry_run, detach=detach, on_node=advance
                )
            )
    except (DatabaseError, NoWorkers) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_INVALID)
    if result is None:
        click.echo(json.dumps({"run_id": run_id, "status": "queued"}) if as_json else run_id)
        return
    result["warnings"] = [d.to_json() for d in loaded.diagnostics if d.severity == "warning"]
    emit_report(result, as_json)


def _run_in_memory(loaded: Loaded, plan: Plan, event: dict[str, Any], *, as_json: bool, quiet: bool) -> None:
    started = time.perf_counter()
    with render.progress(len(plan.steps), enabled=not as_json and not quiet) as advance:
        state = run_plan(plan, event, on_step=lambda _s, _o: advance())
    elapsed_ms = (time.perf_counter() - started) * 1000
    if as_json:
        result = state.to_json()
        result["universe"] = loaded.universe.name
        result["duration_ms"] = round(elapsed_ms, 3)
        result["warnings"] = [d.to_json() for d in loaded.diagnostics if d.severity == "warning"]
        click.echo(json.dumps(result, indent=2, ensure_ascii=False))
    else:
        if not quiet:
            render.diagnostics([d for d in loaded.diagnostics if d.severity == "warning"])
        render.run_result(loaded.universe, plan, state, elapsed_ms, quiet=quiet)
    sys.exit(EXIT_OK if state.status == "succeeded" else EXIT_FAILED)


@cli.command("import")
@click.argument("file")
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False, writable=True), help="Write here instead of stdout."
)
def import_command(file: str, output: str | None) -> None:
    """Convert a universe saved by the original studio (or any older format) to universe/1."""
    try:
        raw = parse_json(read_source(file))
        universe, notes = universe_from_raw(raw)
    except (DocumentError, LoadFailure) as exc:
        render.diagnostics(exc.diagnostics)
        sys.exit(EXIT_INVALID)
    report = validate(universe)
    text = dump_universe(universe)
    if output:
        Path(output).write_text(text, encoding="utf-8")
    else:
        click.echo(text, nl=False)
    render.diagnostics([*notes, *report.diagnostics])
    if not report.valid:
        where = output or "stdout"
        click.echo(f"converted to {where}, but it needs the fixes above before it can run", err=True)
        sys.exit(EXIT_INVALID)
    if output:
        click.echo(f"converted {universe.name!r} to {output} ({len(notes)} notes)", err=True)


@cli.command("bench")
@click.argument(
    "name", type=click.Choice(["chain40", "throughput", "crash", "commit", "ratelimit", "dashboard"])
)
@click.option("--json", "as_json", is_flag=True, help="Print the figures as one JSON object.")
@click.option(
    "--repeat",
    default=None,
    type=int,
    help="Measured rounds (default: 7, throughput and ratelimit 3); for crash: kills (100).",
)
def bench_command(name: str, as_json: bool, repeat: int | None) -> None:
    """Run a benchmark workload from docs/benchmarks.md and print its figures."""
    if name == "chain40":
        from cosmogen.bench import chain

        figures = chain.run(repeat=repeat or 7)
        text = chain.describe(figures)
    elif name == "crash":
        from cosmogen.bench import crash

        figures = crash.run(kills=repeat or 100)
        text = crash.describe(figures)
    elif name == "dashboard":
        from cosmogen.bench import dashboard

        figures = dashboard.run(rounds=repeat or 3)
        text = dashboard.describe(figures)
    elif name == "throughput":
        from cosmogen.bench import throughput

        figures = throughput.run(rounds=repeat or 3)
        text = throughput.describe(figures)
    elif name == "ratelimit":
        from cosmogen.bench import ratelimit

        figures = ratelimit.run(rounds=repeat or 3)  # PostgreSQL: COSMOGEN_BENCH_POSTGRES_URL
        text = ratelimit.describe(figures)
    else:
        import os

        from cosmogen.bench import commit

        figures = commit.run(repeat=repeat or 7, postgres_url=os.environ.get("COSMOGEN_BENCH_POSTGRES_URL"))
        text = commit.describe(figures)
    click.echo(json.dumps(figures, indent=2) if as_json else text)


def _event_data(text: str | None) -> dict[str, Any]:
    if text is None:
        return {}
    try:
        value = parse_json(text)
    except DocumentError as exc:
        raise LoadFailure([_retag(d, "--data") for d in exc.diagnostics]) from None
    if not isinstance(value, dict):
        raise LoadFailure(
            [
                Diagnostic(
                    "bad-event",
                    "error",
                    "--data must be a JSON object",
                    hint="e.g. --data '{\"amount\": 50}'",
                )
            ]
        )
    return value


def _retag(diagnostic: Diagnostic, field: str) -> Diagnostic:
    return Diagnostic(
        diagnostic.code, diagnostic.severity, diagnostic.message, field=field, hint=diagnostic.hint
    )


def _emit_invalid(diagnostics: list[Diagnostic], as_json: bool) -> None:
    if as_json:
        click.echo(
            json.dumps({"status": "invalid", "diagnostics": [d.to_json() for d in diagnostics]}, indent=2)
        )
    else:
        render.diagnostics(diagnostics)


def main() -> None:
    cli(prog_name="cosmogen")
