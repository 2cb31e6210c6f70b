"""How the CLI shows diagnostics, progress and run results to a person."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from cosmogen.domain.diagnostics import Diagnostic
from cosmogen.domain.fabric import MAIN, FabricState
from cosmogen.domain.model import Universe
from cosmogen.domain.plan import Plan

_MARKS = {"complete": "✓", "skipped": "·", "error": "✗"}


def diagnostics(items: list[Diagnostic]) -> None:
    for item in items:
        click.echo(item.render(), err=True)


@contextmanager
def progress(total: int, *, enabled: bool) -> Iterator[Callable[[], None]]:
    """A progress bar on stderr while nodes run; silent when stderr is not a terminal."""
    console = Console(stderr=True)
    if not enabled or not console.is_terminal:
        yield lambda: None
        return
    with Progress(
        TextColumn("running"), BarColumn(), MofNCompleteColumn(), console=console, transient=True
    ) as bar:
        task = bar.add_task("nodes", total=total)
        yield lambda: bar.advance(task)


def run_result(universe: Universe, plan: Plan, state: FabricState, elapsed_ms: float, *, quiet: bool) -> None:
    counts: dict[str, int] = {}
    for outcome in state.outcomes.values():
        counts[outcome.status] = counts.get(outcome.status, 0) + 1
    summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    click.echo(f"{universe.name}: {state.status} in {elapsed_ms:.1f} ms ({len(plan.steps)} nodes: {summary})")
    if quiet:
        return
    click.echo("\nNarrative")
    steps_by_node: dict[str, list[str]] = {}
    for traced in state.trace:
        steps_by_node.setdefault(traced.node, []).append(traced.narrative)
    width = max((len(s.id) for s in plan.steps), default=4)
    for step in plan.steps:
        outcome = state.outcomes[step.id]
        lines = steps_by_node.get(step.id) or [outcome.reason or outcome.status]
        mark = _MARKS[outcome.status]
        for i, line in enumerate(lines):
            label = step.id if i == 0 else ""
            click.echo(f"  {mark if i == 0 else ' '} {label:<{width}}  {line}")
        if outcome.status == "error" and lines[0] != outcome.reason:
            click.echo(f"    {'':<{width}}  error: {outcome.reason}")
    click.echo(f"\nEntities in {MAIN}")
    _entities(state.main.entities)
    for branch in state.branches:
        click.echo(f"\nBranch {branch.universe} ({branch.reason})")
        _entities(branch.entities)
    if state.paradoxes:
        click.echo("\nParadoxes")
        for paradox in state.paradoxes:
            status = "resolved" if paradox.resolved else "open"
            where = f"{paradox.kind} at {paradox.node} on {paradox.entity}"
            click.echo(f"  {where}: {paradox.constraint} ({status}; {paradox.message})")


def _entities(entities: dict[str, Any]) -> None:
    if not entities:
        click.echo("  (none)")
    for entity, props in entities.items():
        click.echo(f"  {entity}  {json.dumps(props, ensure_ascii=False)}")


def durable_result(data: dict[str, Any]) -> None:
    """A durable run's report (see cli/durable.report) for a person."""
    mode = " dry run" if data["dry_run"] else ""
    click.echo(f"{data['universe']} v{data['version']}{mode}: {data['status']} (run {data['run_id']})")
    waiting = data.get("waiting")
    if waiting:
        asked = waiting["reason"] == "rate_limit_retry_after"
        why = "rate limit, the provider asked to wait" if asked else "rate limit"
        click.echo(f"  waiting: {why} until {waiting['until']} ({waiting['node']}.{waiting['binding']})")
    narratives: dict[str, list[str]] = {}
    for step in data["trace"]:
        narratives.setdefault(step["node"], []).append(step["narrative"])
    if data["nodes"]:
        click.echo("\nNarrative")
        width = max(len(n) for n in data["nodes"])
        for node, outcome in data["nodes"].items():
            lines = narratives.get(node) or [outcome.get("reason") or outcome["status"]]
            for i, line in enumerate(lines):
                mark = _MARKS[outcome["status"]] if i == 0 else " "
                click.echo(f"  {mark} {node if i == 0 else '':<{width}}  {line}")
    if data["calls"]:
        click.echo("\nCalls")
        for call in data["calls"]:
            where = f"{call['node']}.{call['binding']}"
            click.echo(f"  {where}  {call['method']} {call['url']}  {call['effect']} {call['status'] or ''}")
    if data["error"]:
        error = data["error"]
        click.echo(f"\nError: {error.get('message')}")
        if error.get("actions"):
            choices = "|".join(a.replace("_", "-") for a in error["actions"])
            click.echo(f"  choose one: cosmogen runs {{{choices}}} {data['run_id']}")
    if data["status"] in ("succeeded", "failed"):
        click.echo(f"\nEntities in {MAIN}")
        _entities(data["entities"])
        for branch in data["branches"]:
            click.echo(f"\nBranch {branch['universe']} ({branch['reason']})")
            _entities(branch["entities"])
