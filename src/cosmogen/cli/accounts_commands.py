"""`cosmogen accounts add|list|remove`: the accounts provider bindings call through.

A secret is read from standard input (or a hidden prompt), never from an argument, so it does not end
up in shell history or `ps`; it goes straight into the vault. Listing shows which secret fields an
account has, never their values. Connecting OAuth accounts (the browser flow) comes with the server.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Any

import click
from sqlalchemy import delete, select, update

from cosmogen.cli.keys_commands import _fail, _open, _store_options
from cosmogen.domain.capabilities import Failure, Provider, default_registry
from cosmogen.domain.ratelimit import RateLimitSettingsError, account_limits
from cosmogen.integrations import credentials, keystore
from cosmogen.integrations.accounts import probe_account
from cosmogen.integrations.connections import Connection
from cosmogen.integrations.http import HttpClient
from cosmogen.integrations.secret import Secret
from cosmogen.integrations.vault import VaultError
from cosmogen.settings import Settings
from cosmogen.store import GroupCommitWriter, migrate
from cosmogen.store.tables import accounts, utcnow
from cosmogen.store.tables import credentials as credential_rows

# Which secret field each auth kind stores, and what to call it when asking for it.
_FIELDS = {"api_key": ("api_key", "API key"), "basic": ("password", "password")}


@click.group("accounts")
def accounts_group() -> None:
    """Accounts that provider bindings use: add (secret from stdin), list, remove."""


@accounts_group.command("add")
@click.argument("name")
@click.option(
    "--provider", required=True, help="Provider id, e.g. openai, anthropic, http (`cosmogen providers`)."
)
@click.option(
    "--auth",
    "auth_kind",
    type=click.Choice(["api_key", "basic", "none"]),
    default="api_key",
    show_default=True,
)
@click.option(
    "--base-url", default=None, help="Override the provider's API base URL (a sandbox, a simulator)."
)
@click.option("--tier", type=click.Choice(["sandbox", "production"]), default="sandbox", show_default=True)
@click.option("--username", default=None, help="For --auth basic.")
@click.option(
    "--settings",
    "settings_json",
    default=None,
    help="Non-secret settings as JSON, e.g. '{\"rate_limit\": {...}}'.",
)
@click.option("--secret-stdin", is_flag=True, help="Read the secret from standard input instead of a prompt.")
@click.option("--no-test", is_flag=True, help="Save without the test call (the account stays unverified).")
@_store_options
def add_command(
    name: str,
    provider: str,
    auth_kind: str,
    base_url: str | None,
    tier: str,
    username: str | None,
    settings_json: str | None,
    secret_stdin: bool,
    no_test: bool,
    data_dir: str | None,
    database_url: str | None,
) -> None:
    """Add an account NAME; its secret is read from stdin or a hidden prompt and stored in the vault.
    An API key is checked with a cheap read at the provider (OpenAI, Anthropic) before it counts as
    connected; a refused key leaves the account saved with status `error` and what to do."""
    registry = default_registry()
    if provider not in registry.providers:
        _fail(f"no provider {provider!r}; executable ones: {', '.join(sorted(registry.providers))}")
    allowed = registry.providers[provider].auth_kinds
    if auth_kind not in allowed:
        _fail(f"{provider} accounts use {', '.join(allowed)}, not {auth_kind}")
    settings = _settings(settings_json, provider)
    secret: Secret | None = None
    if auth_kind in _FIELDS:
        label = _FIELDS[auth_kind][1]
        text = sys.stdin.readline().strip() if secret_stdin else click.prompt(label, hide_input=True)
        if not text:
            _fail(f"an empty {label} was given; nothing was saved")
        secret = Secret(text)
    db, source = _open(data_dir, database_url)
    try:
        migrate.upgrade(db)
        try:
            vault = keystore.open_vault(db, source)
        except VaultError as exc:
            _fail(str(exc))
        with GroupCommitWriter(db) as writer:

            def write(conn: Any) -> str:
                account_id = credentials.create_account(
                    workspace_id="default",
                    provider=provider,
                    name=name,
                    auth_kind=auth_kind,
                    tier=tier,
                    base_url=base_url,
                    settings=settings,
                )(conn)
                values = {} if secret is None else {_FIELDS[auth_kind][0]: secret}
                if username is not None:
                    values["username"] = Secret(username)
                if values:
                    credentials.put_secrets(vault, account_id, values)(conn)
                return account_id

            try:
                account_id = writer.submit(write).result()
            except Exception as exc:  # a duplicate name: the unique constraint says so
                if "unique" in str(exc).lower() or "duplicate" in str(exc).lower():
                    _fail(f"an account named {name!r} already exists; remove it first or pick another name")
                raise
            target = registry.providers[provider]
            failure = None
            tested = (
                target.probe is not None and auth_kind == "api_key" and secret is not None and not no_test
            )
            if tested:
                assert secret is not None
                connection = Connection(
                    account_id, name, provider, auth_kind, base_url or target.base_url, {"api_key": secret}
                )
                failure = asyncio.run(_test(data_dir, database_url, target, connection))
            writer.submit(_settle(account_id, failure, verified=tested)).result()
    finally:
        db.close()
    if failure is not None:
        _fail(
            f"saved {provider} account {name!r} with status error: the test call was refused: "
            f"{failure.message} ({failure.action.value}); fix it and add the account again after "
            "`cosmogen accounts remove`",
            code=1,
        )
    how = "verified by a test call" if tested else "not verified by a test call"
    click.echo(f"added {provider} account {name!r} ({account_id}), connected, {how}")


@accounts_group.command("list")
@click.option("--json", "as_json", is_flag=True)
@_store_options
def list_command(as_json: bool, data_dir: str | None, database_url: str | None) -> None:
    """Accounts with their status and which secret fields they hold (never the values)."""
    db, _ = _open(data_dir, database_url)
    try:
        migrate.upgrade(db)
        with db.engine.connect() as conn:
            rows = conn.execute(select(accounts).order_by(accounts.c.name)).all()
            fields: dict[str, list[str]] = {}
            for row in conn.execute(select(credential_rows.c.account_id, credential_rows.c.field)):
                fields.setdefault(row.account_id, []).append(row.field)
    finally:
        db.close()
    listed = [
        {
            "name": r.name,
            "id": r.id,
            "provider": r.provider,
            "auth_kind": r.auth_kind,
            "tier": r.tier,
            "status": r.status,
            "base_url": r.base_url,
            "secret_fields": sorted(fields.get(r.id, [])),
            "verified": r.verified_at is not None,
        }
        for r in rows
    ]
    if as_json:
        click.echo(json.dumps(listed, indent=2))
        return
    for a in listed:
        held = ", ".join(a["secret_fields"]) or "no secret"
        click.echo(f"{a['name']:<24} {a['provider']:<10} {a['status']:<10} {a['tier']:<10} {held}")


@accounts_group.command("remove")
@click.argument("name")
@_store_options
def remove_command(name: str, data_dir: str | None, database_url: str | None) -> None:
    """Remove an account and its encrypted secrets (bindings naming it will fail until fixed)."""
    db, _ = _open(data_dir, database_url)
    try:
        migrate.upgrade(db)
        with db.engine.begin() as conn:
            found = conn.execute(select(accounts.c.id).where(accounts.c.name == name)).scalar()
            if found is None:
                _fail(f"no account named {name!r}")
            conn.execute(delete(credential_rows).where(credential_rows.c.account_id == found))
            conn.execute(delete(accounts).where(accounts.c.id == found))
    finally:
        db.close()
    click.echo(f"removed account {name!r} and its secrets")


async def _test(
    data_dir: str | None, database_url: str | None, provider: Provider, connection: Connection
) -> Failure | None:
    settings = Settings.from_env(os.environ, data_dir=data_dir, database_url=database_url)
    http = HttpClient(settings.egress)  # the same egress guard as every other call
    await http.start()
    try:
        return await probe_account(http, provider, connection)
    finally:
        await http.close()


def _settle(account_id: str, failure: Failure | None, *, verified: bool) -> Any:
    def write(conn: Any) -> None:
        if failure is not None:
            problem = {"code": failure.code, "message": failure.message, "action": failure.action.value}
            credentials.set_account_status(account_id, "error", last_error=problem)(conn)
            return
        credentials.set_account_status(account_id, "connected")(conn)
        if verified:
            conn.execute(update(accounts).where(accounts.c.id == account_id).values(verified_at=utcnow()))

    return write


def _settings(raw: str | None, provider: str) -> dict[str, Any]:
    if raw is None:
        return {}
    try:
        settings = json.loads(raw)
    except json.JSONDecodeError as exc:
        _fail(f"--settings is not JSON: {exc}")
    if not isinstance(settings, dict):
        _fail("--settings must be a JSON object")
    try:
        account_limits(provider, settings)
    except RateLimitSettingsError as exc:
        _fail(str(exc))
    return settings
