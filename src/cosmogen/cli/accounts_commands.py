"""`cosmogen accounts add|list|remove|connect|disconnect`: the accounts provider bindings call through.

A secret is read from standard input (or a hidden prompt), never from an argument, so it does not end
up in shell history or `ps`; it goes straight into the vault. Listing shows which secret fields an
account has, never their values. OAuth accounts are connected through the browser with a loopback
redirect (RFC 8252, cli/loopback.py) and disconnected with revocation (integrations/oauth_flow.py).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import webbrowser
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import click
from sqlalchemy import select

from cosmogen.cli.keys_commands import _fail, _open, _store_options
from cosmogen.cli.loading import EXIT_FAILED, EXIT_INVALID
from cosmogen.cli.loopback import LoopbackListener, Page, PortInUse
from cosmogen.domain.capabilities import Failure, Provider, Registry, default_registry
from cosmogen.domain.oauth import MIN_STATE_CHARS, OAUTH_SETTING, OAuthError, requested_scopes, state_hash
from cosmogen.domain.ratelimit import RateLimitSettingsError, account_limits
from cosmogen.integrations import credentials, keystore
from cosmogen.integrations.account_admin import remove_account, settle
from cosmogen.integrations.accounts import probe_account
from cosmogen.integrations.connections import Connection
from cosmogen.integrations.http import HttpClient
from cosmogen.integrations.oauth_flow import (
    TOKEN_FIELDS,
    AuthorizationResponse,
    Connected,
    ConnectError,
    ConnectRequest,
    Disconnected,
    abandon_connect,
    client_config,
    complete_connect,
    connect_settings,
    disconnect,
    new_session,
    pending_revocations,
    start_connect,
)
from cosmogen.integrations.secret import Secret
from cosmogen.integrations.vault import Vault, VaultError
from cosmogen.settings import Settings
from cosmogen.store import Database, GroupCommitWriter, migrate
from cosmogen.store.tables import accounts, utcnow
from cosmogen.store.tables import credentials as credential_rows

# Which secret field each auth kind stores, and what to call it when asking for it.
_FIELDS = {"api_key": ("api_key", "API key"), "basic": ("password", "password")}


@click.group("accounts")
def accounts_group() -> None:
    """Accounts that provider bindings use: add (secret from stdin), connect (OAuth, in the browser),
    list, disable, enable, disconnect (OAuth: revoke), remove."""


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
        vault = _vault_or_fail(db, source)
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
            "scopes": list(r.scopes or []),
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
@click.option(
    "--keep-grant",
    is_flag=True,
    help="OAuth: remove the account even when its grant could not be revoked at the provider now.",
)
@_store_options
def remove_command(name: str, keep_grant: bool, data_dir: str | None, database_url: str | None) -> None:
    """Remove an account and its encrypted secrets (bindings naming it will fail until fixed). An OAuth
    account is disconnected first, so its grant is revoked at the provider before its tokens go."""
    db, source = _open(data_dir, database_url)
    try:
        migrate.upgrade(db)
        with db.engine.connect() as conn:
            found = conn.execute(
                select(accounts.c.id, accounts.c.auth_kind).where(accounts.c.name == name)
            ).one_or_none()
            if found is None:
                _fail(f"no account named {name!r}")
            revocable = found.auth_kind == "oauth2" and (
                pending_revocations(conn, found.id) > 0
                or any(f in TOKEN_FIELDS for f in credentials.secret_fields(conn, found.id))
            )
        if revocable:
            vault = _vault_or_fail(db, source)
            settings = Settings.from_env(os.environ, data_dir=data_dir, database_url=database_url)
            with GroupCommitWriter(db) as writer:
                done = asyncio.run(_disconnect(db, writer, vault, HttpClient(settings.egress), name))
            left = [r for r in done.revocations if r.verdict == "retry"]
            if left and not keep_grant:
                _fail(
                    f"kept account {name!r}: its grant could not be revoked at the provider now "
                    f"({left[0].message}); its tokens are deleted and the revocation is retried in the "
                    "background. Remove it again later, or pass --keep-grant to remove it anyway",
                    code=EXIT_FAILED,
                )
        with db.engine.begin() as conn:
            remove_account(found.id)(conn)  # the same removal as the accounts API
    finally:
        db.close()
    click.echo(f"removed account {name!r} and its secrets")


@accounts_group.command("disable")
@click.argument("name")
@_store_options
def disable_command(name: str, data_dir: str | None, database_url: str | None) -> None:
    """Stop every use of account NAME (bindings naming it fail with "disabled") without removing it;
    `enable` brings it back."""
    db, _ = _open(data_dir, database_url)
    try:
        migrate.upgrade(db)
        with db.engine.begin() as conn:
            found = _named(conn, name)
            if found.status == "disabled":
                _fail(f"account {name!r} is already disabled")
            problem = {"code": "disabled", "message": "disabled by a person", "action": "fix_setting"}
            credentials.set_account_status(found.id, "disabled", last_error=problem)(conn)
    finally:
        db.close()
    click.echo(
        f"disabled account {name!r}; bindings that name it fail until `cosmogen accounts enable {name}`"
    )


@accounts_group.command("enable")
@click.argument("name")
@_store_options
def enable_command(name: str, data_dir: str | None, database_url: str | None) -> None:
    """Use a disabled account NAME again. An API key is checked again with the provider's cheap read
    (OpenAI, Anthropic); an account without a stored credential goes back to `pending` (connect it)."""
    registry = default_registry()
    db, source = _open(data_dir, database_url)
    try:
        migrate.upgrade(db)
        with db.engine.connect() as conn:
            found = _named(conn, name)
            fields = credentials.secret_fields(conn, found.id)
        if found.status != "disabled":
            _fail(f"account {name!r} is {found.status}, not disabled; nothing to enable")
        target = registry.providers.get(found.provider)
        failure: Failure | None = None
        tested = target is not None and target.probe is not None and "api_key" in fields
        if tested and target is not None:
            vault = _vault_or_fail(db, source)
            with db.engine.connect() as conn:
                secrets = credentials.reveal_credentials(conn, vault, found.id)
            connection = Connection(
                found.id, name, found.provider, found.auth_kind, found.base_url or target.base_url, secrets
            )
            failure = asyncio.run(_test(data_dir, database_url, target, connection))
        with db.engine.begin() as conn:
            if fields or found.auth_kind == "none":
                _settle(found.id, failure, verified=tested)(conn)
            else:
                problem = {"code": "not_connected", "message": "no credential stored", "action": "reconnect"}
                credentials.set_account_status(found.id, "pending", last_error=problem)(conn)
        with db.engine.connect() as conn:
            status = _named(conn, name).status
    finally:
        db.close()
    if failure is not None:
        _fail(f"enabled account {name!r}, but the test call was refused: {failure.message}", code=EXIT_FAILED)
    click.echo(f"enabled account {name!r}: {status}")


def _vault_or_fail(db: Database, source: Any) -> Vault:
    """The vault, or exit with its message (a wrong, missing or too-open key); nothing is written."""
    try:
        return keystore.open_vault(db, source)
    except VaultError as exc:
        _fail(str(exc))


def _named(conn: Any, name: str) -> Any:
    found = conn.execute(
        select(
            accounts.c.id, accounts.c.status, accounts.c.provider, accounts.c.auth_kind, accounts.c.base_url
        ).where(accounts.c.name == name)
    ).one_or_none()
    if found is None:
        _fail(f"no account named {name!r}; `cosmogen accounts list` shows them")
    return found


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
    return settle(account_id, failure, verified=verified)  # the same as the accounts API


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


# --- OAuth: connect through the browser, disconnect with revocation -------------------------------


@accounts_group.command("connect")
@click.argument("name")
@click.option("--provider", required=True, help="An OAuth provider: slack, x, instagram, or http (generic).")
@click.option(
    "--client-id", default=None, help="Your OAuth app's client id (a reconnect reuses the stored one)."
)
@click.option(
    "--client-secret-stdin",
    is_flag=True,
    help="Read your app's client secret from standard input (omit for a public client: PKCE alone).",
)
@click.option(
    "--settings",
    "settings_json",
    default=None,
    help='Non-secret settings as JSON; "oauth" overrides the endpoints (a sandbox, the simulator): '
    '{"oauth": {"authorize_url", "token_url", "revoke_url", "issuer", "client_auth"}}.',
)
@click.option(
    "--base-url", default=None, help="Override the provider's API base URL (a sandbox, a simulator)."
)
@click.option("--tier", type=click.Choice(["sandbox", "production"]), default="sandbox", show_default=True)
@click.option("--scope", "extra_scopes", multiple=True, help="Ask for this scope too (repeatable).")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=0,
    show_default=True,
    help="Loopback port for the redirect (0: any free one; fix it when your app registers an exact URL).",
)
@click.option(
    "--timeout",
    "timeout_s",
    type=click.FloatRange(min=1),
    default=300.0,
    show_default=True,
    help="Seconds to wait for the browser to come back.",
)
@click.option(
    "--open/--no-open",
    "open_browser",
    default=None,
    help="Open the authorization URL in a browser (default: only when standard output is a terminal).",
)
@_store_options
def connect_command(
    name: str,
    provider: str,
    client_id: str | None,
    client_secret_stdin: bool,
    settings_json: str | None,
    base_url: str | None,
    tier: str,
    extra_scopes: tuple[str, ...],
    port: int,
    timeout_s: float,
    open_browser: bool | None,
    data_dir: str | None,
    database_url: str | None,
) -> None:
    """Connect the OAuth account NAME: prints the provider's authorization URL, waits for the browser's
    redirect to a temporary listener on 127.0.0.1 (RFC 8252), exchanges the code (PKCE S256) and stores
    the tokens in the vault. Prints the account's status and granted scopes, never a token."""
    registry = default_registry()
    target = registry.providers.get(provider)
    if target is None:
        oauth_ones = sorted(p.id for p in registry.providers.values() if "oauth2" in p.auth_kinds)
        _fail(f"no provider {provider!r}; OAuth providers: {', '.join(oauth_ones)}")
    if "oauth2" not in target.auth_kinds:
        _fail(
            f"{provider} accounts use {', '.join(target.auth_kinds)}, not OAuth; add one with "
            f"`cosmogen accounts add {name} --provider {provider}`"
        )
    settings = _settings(settings_json, provider)
    try:
        scopes = requested_scopes(registry, provider, extra_scopes)
    except OAuthError as exc:
        _fail(str(exc))
    client_secret: Secret | None = None
    if client_secret_stdin:
        text = sys.stdin.readline().strip()
        if not text:
            _fail("--client-secret-stdin was given but standard input held no client secret")
        client_secret = Secret(text)
    db, source = _open(data_dir, database_url)
    try:
        migrate.upgrade(db)
        with db.engine.connect() as conn:
            existing = conn.execute(
                select(accounts.c.settings).where(
                    accounts.c.workspace_id == "default", accounts.c.name == name
                )
            ).scalar()
        if client_id is None:
            stored = (existing or {}).get(OAUTH_SETTING) or {}
            client_id = stored.get("client_id") if isinstance(stored, dict) else None
            if not client_id:
                _fail(f"missing --client-id: the client id of your {target.name} OAuth app")
        try:
            client_config(target, connect_settings(settings, client_id))
        except OAuthError as exc:
            _fail(str(exc))
        vault = _vault_or_fail(db, source)
        runtime_settings = Settings.from_env(os.environ, data_dir=data_dir, database_url=database_url)
        with GroupCommitWriter(db) as writer:
            outcome = asyncio.run(
                _connect(
                    writer,
                    vault,
                    HttpClient(runtime_settings.egress),
                    registry,
                    ConnectOptions(
                        name, target, client_id, client_secret, settings, scopes, tier, base_url, port
                    ),
                    timeout_s,
                    sys.stdout.isatty() if open_browser is None else open_browser,
                )
            )
    finally:
        db.close()
    if isinstance(outcome, tuple):
        message, code = outcome
        _fail(message, code=code)
    expires = (
        f"; the access token expires at {outcome.expires_at:%Y-%m-%d %H:%M} UTC" if outcome.expires_at else ""
    )
    renewal = "with a refresh token" if outcome.has_refresh_token else "without a refresh token"
    click.echo(
        f"connected {outcome.provider} account {outcome.name!r} ({outcome.account_id}), status connected, "
        f"scopes: {', '.join(outcome.scopes) or '(none)'}, {renewal}{expires}"
    )
    if outcome.missing_scopes:
        click.echo(
            f"warning: not granted: {', '.join(outcome.missing_scopes)}; capabilities needing them "
            "will refuse this account until it is reconnected granting them",
            err=True,
        )


@dataclass(frozen=True)
class ConnectOptions:
    name: str
    provider: Provider
    client_id: str
    client_secret: Secret | None = field(repr=False)
    settings: dict[str, Any]
    scopes: tuple[str, ...]
    tier: str
    base_url: str | None
    port: int


async def _connect(
    writer: GroupCommitWriter,
    vault: Vault,
    http: HttpClient,
    registry: Registry,
    options: ConnectOptions,
    timeout_s: float,
    open_browser: bool,
) -> Connected | tuple[str, int]:
    """The flow; returns the connected account, or (what went wrong, exit code)."""
    session = new_session()  # in this process's memory only: no other process can complete the flow
    finished: asyncio.Future[Connected] = asyncio.get_running_loop().create_future()
    ours: list[str] = []  # the flow's state hash, once started

    async def on_callback(query: Mapping[str, str]) -> Page:
        if finished.done():
            return 410, "this connection attempt is over; you can close this tab"
        response = AuthorizationResponse.from_query(
            query, provider=options.provider.id, redirect_uri=listener.redirect_uri
        )
        try:
            connected = await complete_connect(
                writer, vault, http, registry, response, session=session, now=utcnow
            )
        except ConnectError as exc:
            state = response.state
            if state and ours and len(state) >= MIN_STATE_CHARS and state_hash(state) == ours[0]:
                finished.set_exception(exc)  # our flow, spent: nothing more will come
            else:
                click.echo(f"warning: ignored a redirect that is not this connection's: {exc}", err=True)
            return 400, str(exc)
        finished.set_result(connected)
        return 200, f"{connected.provider} account {connected.name!r} is connected; you can close this tab"

    listener = LoopbackListener(on_callback, options.port)
    try:
        await listener.start()
    except PortInUse as exc:
        return f"{exc}; pick another --port (or 0 for any free one)", EXIT_INVALID
    await http.start()
    try:
        request = ConnectRequest(
            workspace="default",
            name=options.name,
            provider=options.provider,
            client_id=options.client_id,
            client_secret=options.client_secret,
            settings=options.settings,
            scopes=options.scopes,
            redirect_uri=listener.redirect_uri,
            session=session,
            tier=options.tier,
            base_url=options.base_url,
        )
        try:
            write, _state = start_connect(vault, request, utcnow)
            started = await writer.write(write)
        except (ConnectError, OAuthError) as exc:
            return str(exc), EXIT_INVALID
        ours.append(started.state_hash)
        click.echo(f"Open this URL in a browser and approve access for {options.provider.name}:")
        click.echo(started.authorization_url)
        click.echo(f"Waiting up to {timeout_s:g} s for the redirect to {listener.redirect_uri} ...")
        if open_browser:
            webbrowser.open(started.authorization_url)
        try:
            return await asyncio.wait_for(asyncio.shield(finished), timeout_s)
        except TimeoutError:
            await writer.write(abandon_connect(started.state_hash, utcnow))
            return (
                f"no redirect came back within {timeout_s:g} s; the authorization link no longer works. Run "
                "the command again (and check that the app's redirect URL allows "
                f"{listener.redirect_uri.replace(str(listener.port), '<port>')})",
                EXIT_FAILED,
            )
        except ConnectError as exc:
            return str(exc), EXIT_FAILED
    finally:
        await listener.close()
        await http.close()


@accounts_group.command("disconnect")
@click.argument("name")
@_store_options
def disconnect_command(name: str, data_dir: str | None, database_url: str | None) -> None:
    """Disconnect the OAuth account NAME: its tokens are deleted here and revoked at the provider (RFC
    7009). A revocation the provider does not take now is retried by the runtime (`cosmogen serve`,
    `cosmogen worker`) or by running this command again."""
    db, source = _open(data_dir, database_url)
    try:
        migrate.upgrade(db)
        vault = _vault_or_fail(db, source)
        settings = Settings.from_env(os.environ, data_dir=data_dir, database_url=database_url)
        with GroupCommitWriter(db) as writer:
            try:
                done = asyncio.run(_disconnect(db, writer, vault, HttpClient(settings.egress), name))
            except ConnectError as exc:
                _fail(str(exc))
    finally:
        db.close()
    _report_disconnect(done)


async def _disconnect(
    db: Database, writer: GroupCommitWriter, vault: Vault, http: HttpClient, name: str
) -> Disconnected:
    await http.start()
    try:
        return await disconnect(
            db, writer, vault, http, default_registry(), workspace="default", name=name, now=utcnow
        )
    finally:
        await http.close()


def _report_disconnect(done: Disconnected) -> None:
    deleted = (
        f"{done.tokens_deleted} token(s) deleted here" if done.tokens_deleted else "no token was left here"
    )
    verdicts = [r.verdict for r in done.revocations]
    if not done.revocable:
        there = (
            f"{done.provider} has no revocation endpoint configured: end the grant in the provider's app "
            "settings too"
        )
    elif not verdicts:
        there = "nothing to revoke at the provider"
    elif all(v in ("done", "skipped") for v in verdicts):
        there = "the grant was revoked at the provider"
    else:
        problems = "; ".join(
            f"{r.token_type_hint}: {r.message}" for r in done.revocations if r.verdict != "done"
        )
        there = f"the revocation did not go through ({problems})"
    click.echo(f"disconnected {done.provider} account {done.name!r}: {deleted}; {there}")
    if "retry" in verdicts:
        click.echo(
            "warning: the revocation waits in the outbox; `cosmogen serve` / `cosmogen worker` retry it "
            f"in the background, or run `cosmogen accounts disconnect {done.name}` again",
            err=True,
        )
    if "failed" in verdicts:
        _fail(
            "the provider refused the revocation; end the grant in the provider's app settings",
            code=EXIT_FAILED,
        )
