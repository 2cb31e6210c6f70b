"""`cosmogen launch FILE` and `cosmogen launches ...`: deploy a version on triggers, and steer launches.

These commands only write to the store; `cosmogen serve` fires the triggers and receives webhooks.

A webhook trigger is signed unless its spec says `"signed": false`: its signing secret is made here, sealed
in the vault and printed once. `launches reveal-webhook-secret` prints it again and
`launches rotate-webhook-secret` replaces it; both say that they print a secret.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from datetime import timedelta
from typing import Any, NoReturn

import click

from cosmogen.cli import durable
from cosmogen.cli.loading import EXIT_INVALID, LoadFailure, load
from cosmogen.cli.runs_commands import settings_or_exit, with_store
from cosmogen.domain.launches import IllegalLaunchTransition, LaunchConfigError, parse_launch_config
from cosmogen.domain.runs import IllegalTransition, RunAction
from cosmogen.domain.schedule import TriggerSpecError, WebhookSpec, parse_trigger_spec
from cosmogen.integrations import keystore
from cosmogen.integrations.vault import KeySource, Vault, VaultError
from cosmogen.integrations.webhook_secrets import NoSuchWebhook
from cosmogen.runtime import control
from cosmogen.runtime import launches as repo
from cosmogen.settings import Settings
from cosmogen.store import Database, GroupCommitWriter, migrate, repos

TRIGGER_HELP = (
    "A trigger: 'manual', 'webhook' (signed), 'interval:SECONDS', 'cron:EXPR' (e.g. 'cron:*/5 * * * *'), "
    'or a JSON object such as \'{"kind": "cron", "expr": "0 9 * * 1", "catchup": "one"}\' or '
    '\'{"kind": "webhook", "signed": false}\'. Repeatable.'
)


def parse_trigger_option(text: str) -> dict[str, Any]:
    """The command-line shorthands for trigger specs; JSON for everything else."""
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            value = json.loads(stripped)
        except ValueError as exc:
            raise TriggerSpecError([f"--trigger is not valid JSON: {exc}"]) from None
        return value if isinstance(value, dict) else {"kind": value}
    kind, _, rest = stripped.partition(":")
    if kind == "interval":
        if not rest.strip().isdigit():
            raise TriggerSpecError([f"--trigger {text!r}: write interval:SECONDS, e.g. interval:60"])
        return {"kind": "interval", "every_s": int(rest)}
    if kind == "cron":
        return {"kind": "cron", "expr": rest.strip()}
    return {"kind": kind}


@click.command("launch")
@click.argument("file")
@with_store
@click.option("--trigger", "triggers", multiple=True, help=TRIGGER_HELP)
@click.option("--live/--draft", default=True, show_default=True, help="Go live at once, or leave it a draft.")
@click.option(
    "--real/--dry-run",
    "real",
    default=False,
    show_default=True,
    help="Make real calls. Launches are dry runs unless you say --real.",
)
@click.option("--config", "config_json", default=None, help="The launch config as a JSON object.")
@click.option("--json", "as_json", is_flag=True)
def launch_command(
    file: str,
    data_dir: str | None,
    database_url: str | None,
    triggers: tuple[str, ...],
    live: bool,
    real: bool,
    config_json: str | None,
    as_json: bool,
) -> None:
    """Save FILE as a version and launch it on triggers (manual, interval, cron, webhook)."""
    settings = settings_or_exit(data_dir, database_url)
    try:
        loaded = load(file)
    except LoadFailure as exc:
        _fail("; ".join(d.message for d in exc.diagnostics))
    if loaded.report.plan is None:
        _fail("the universe is not valid; run `cosmogen validate` for the diagnostics")
    try:
        raw_config = json.loads(config_json) if config_json else {}
        config = parse_launch_config({**raw_config, "dry_run": not real})
        specs = [parse_trigger_spec(parse_trigger_option(t)) for t in (triggers or ("manual",))]
    except (ValueError, TriggerSpecError, LaunchConfigError) as exc:
        _fail(str(exc))
    document = loaded.universe.model_dump(mode="json", exclude_none=True)
    signed = any(isinstance(spec, WebhookSpec) and spec.signed for spec in specs)
    db = settings.runtime().open_database()
    try:
        # Signing secrets go into the vault: its keys are checked before anything is written.
        vault = _open_vault(db, settings) if signed else None
        if vault is None:
            migrate.upgrade(db)
        created = asyncio.run(_create(db, document, config, specs, live, vault))
    finally:
        db.close()
    launch = created.launch
    data = _launch_json(launch)
    data["webhook_paths"] = {tid: f"/hooks/{token}" for tid, token in created.webhook_tokens.items()}
    # Printed this once; afterwards only `launches reveal-webhook-secret` shows them.
    data["webhook_secrets"] = {tid: secret.reveal() for tid, secret in created.webhook_secrets.items()}
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    mode = "dry run" if launch.config.dry_run else "real calls"
    click.echo(f"launch {launch.id}: {launch.status.value} ({mode}), version {launch.version_id}")
    for trigger in launch.triggers:
        when = f", next at {trigger.next_fire_at.isoformat()}" if trigger.next_fire_at else ""
        click.echo(f"  trigger {trigger.id}: {trigger.kind}{when}")
    for trigger_id, path in data["webhook_paths"].items():
        click.echo(f"  webhook {trigger_id}: POST {path}   (shown once; keep it secret)")
        secret = data["webhook_secrets"].get(trigger_id)
        if secret is None:
            click.echo("    unsigned: anyone holding the URL can post to it")
        else:
            click.echo(f"    signing secret: {secret}   (shown once; sign every delivery, docs/launches.md)")


def _open_vault(db: Database, settings: Settings, *, create: bool = True) -> Vault:
    """The start-up sequence of every process that seals: check the keys (reads only), migrate, open.
    `create`: a store with no key yet gets one (only commands that seal need that)."""
    try:
        source = KeySource.for_data_dir(settings.data_dir, settings.vault_keys)
        checked = keystore.check_keys(db, source, create=create)
        migrate.upgrade(db)
        return checked.open(db)
    except VaultError as exc:
        _fail(str(exc))


async def _create(
    db: Database, document: dict[str, Any], config: Any, specs: list[Any], live: bool, vault: Vault | None
) -> Any:
    writer = GroupCommitWriter(db)
    try:
        saved = await writer.write(
            lambda conn: repos.save_version(
                conn, workspace_id="default", name=str(document["name"]), document=document
            )
        )
        created = await writer.write(
            repo.create_launch(saved.universe_id, saved.version_id, config, specs, vault=vault)
        )
        if live:
            launch = await writer.write(repo.go_live(created.launch.id))
            created = repo.CreatedLaunch(launch, created.webhook_tokens, created.webhook_secrets)
        return created
    except (LaunchConfigError, IllegalLaunchTransition, LookupError) as exc:
        _fail(str(exc))
    finally:
        writer.close()


@click.group("launches")
def launches_group() -> None:
    """List and steer launches: pause, resume, stop (back to draft, cancelling its runs), archive."""


@launches_group.command("list")
@with_store
@click.option("--json", "as_json", is_flag=True)
def list_launches(data_dir: str | None, database_url: str | None, as_json: bool) -> None:
    """Every launch with its status and triggers."""
    db = durable.open_store(settings_or_exit(data_dir, database_url))
    try:
        with db.engine.connect() as conn:
            found = repo.list_launches(conn)
    finally:
        db.close()
    rows = [_launch_json(launch) for launch in found]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no launches yet")
    for row in rows:
        kinds = ", ".join(t["kind"] for t in row["triggers"])
        click.echo(f"{row['id']}  {row['status']:<8} {'dry run' if row['dry_run'] else 'real'}  [{kinds}]")


def _steer(name: str, action: Any, help_text: str) -> None:
    @launches_group.command(name, help=help_text)
    @click.argument("launch_id")
    @with_store
    @click.option("--json", "as_json", is_flag=True)
    def command(launch_id: str, data_dir: str | None, database_url: str | None, as_json: bool) -> None:
        db = durable.open_store(settings_or_exit(data_dir, database_url))
        try:
            data = asyncio.run(_apply(db, launch_id, action))
        finally:
            db.close()
        if as_json:
            click.echo(json.dumps(data, indent=2))
        else:
            cancelled = data.get("cancelled_runs", [])
            extra = f"; cancelled {len(cancelled)} unfinished runs" if cancelled else ""
            click.echo(f"launch {data['id']}: {data['status']}{extra}")


async def _apply(db: Database, launch_id: str, action: Any) -> dict[str, Any]:
    writer = GroupCommitWriter(db)
    try:
        if action is repo.stop:
            stopped = await writer.write(repo.stop(launch_id))
            for run_id in stopped.unfinished_run_ids:
                with contextlib.suppress(IllegalTransition):  # it ended on its own between the two writes
                    await writer.write(control.act(run_id, RunAction.CANCEL))
            return {**_launch_json(stopped.launch), "cancelled_runs": stopped.unfinished_run_ids}
        return _launch_json(await writer.write(action(launch_id)))
    except (IllegalLaunchTransition, LookupError) as exc:
        _fail(str(exc))
    finally:
        writer.close()


@launches_group.command("reveal-webhook-secret")
@click.argument("trigger_id")
@with_store
@click.option("--json", "as_json", is_flag=True)
def reveal_webhook_secret(
    trigger_id: str, data_dir: str | None, database_url: str | None, as_json: bool
) -> None:
    """PRINT the signing secret of webhook trigger TRIGGER_ID (and the previous one while it is still
    valid). The output is a secret: keep it out of logs, tickets and shell history."""
    settings = settings_or_exit(data_dir, database_url)
    db = settings.runtime().open_database()
    try:
        vault = _open_vault(db, settings, create=False)
        try:
            with db.engine.connect() as conn:
                found = repo.reveal_webhook_secrets(conn, vault, trigger_id)
        except NoSuchWebhook as exc:
            _fail(str(exc))
    finally:
        db.close()
    if not found:
        _fail(
            f"webhook trigger {trigger_id} has no signing secret (it is unsigned); "
            f"`cosmogen launches rotate-webhook-secret {trigger_id}` makes one and requires signatures"
        )
    click.echo(f"warning: printing the signing secret of webhook trigger {trigger_id}", err=True)
    secrets = [
        {"secret": one.secret.reveal(), "expires_at": one.expires_at.isoformat() if one.expires_at else None}
        for one in found
    ]
    if as_json:
        click.echo(json.dumps({"trigger_id": trigger_id, "secrets": secrets}, indent=2))
        return
    for one in secrets:
        until = f"   (previous one, valid until {one['expires_at']})" if one["expires_at"] else "   (current)"
        click.echo(f"{one['secret']}{until}")


@launches_group.command("rotate-webhook-secret")
@click.argument("trigger_id")
@with_store
@click.option(
    "--grace-seconds",
    default=int(timedelta(hours=24).total_seconds()),
    show_default=True,
    type=click.IntRange(0, 7 * 24 * 3600),
    help="How long the current secret keeps working beside the new one; 0 ends it now (a leaked secret).",
)
@click.option("--json", "as_json", is_flag=True)
def rotate_webhook_secret(
    trigger_id: str, data_dir: str | None, database_url: str | None, grace_seconds: int, as_json: bool
) -> None:
    """Make a new signing secret for webhook trigger TRIGGER_ID and PRINT it (once). An unsigned trigger
    becomes signed: deliveries without a valid signature are refused from now on."""
    settings = settings_or_exit(data_dir, database_url)
    db = settings.runtime().open_database()
    grace = timedelta(seconds=grace_seconds)
    try:
        vault = _open_vault(db, settings)
        with GroupCommitWriter(db) as writer:
            try:
                secret = writer.submit(repo.rotate_webhook_secret(vault, trigger_id, grace=grace)).result()
            except NoSuchWebhook as exc:
                _fail(str(exc))
    finally:
        db.close()
    click.echo(f"warning: printing the new signing secret of webhook trigger {trigger_id}", err=True)
    if as_json:
        click.echo(
            json.dumps({"trigger_id": trigger_id, "secret": secret.reveal(), "grace_seconds": grace_seconds})
        )
        return
    click.echo(secret.reveal())
    if grace_seconds:
        click.echo(
            f"the previous secret (if any) keeps working for {grace_seconds} s; signatures are required",
            err=True,
        )
    else:
        click.echo("the previous secret no longer works; signatures are required", err=True)


_steer("pause", repo.pause, "Stop firing its triggers for now (runs in flight go on).")
_steer("resume", repo.resume, "Fire its triggers again, from now (no backlog).")
_steer("stop", repo.stop, "Back to draft: no more triggers, and its unfinished runs are cancelled.")
_steer("archive", repo.archive, "Retire a launch for good.")


def _launch_json(launch: Any) -> dict[str, Any]:
    return {
        "id": launch.id,
        "universe_id": launch.universe_id,
        "version_id": launch.version_id,
        "status": launch.status.value,
        "dry_run": launch.config.dry_run,
        "triggers": [
            {
                "id": t.id,
                "kind": t.kind,
                "spec": t.spec.to_dict(),
                "next_fire_at": t.next_fire_at.isoformat() if t.next_fire_at else None,
            }
            for t in launch.triggers
        ],
    }


def _fail(message: str) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(EXIT_INVALID)
