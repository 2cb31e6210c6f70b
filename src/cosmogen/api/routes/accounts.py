"""`/api/v1/accounts`: the accounts provider bindings call through. Viewers read; admins change.

Secrets are write-only (SEC-08): a read shows each stored secret field as the placeholder `"********"`,
never a value or its ciphertext; a write that sends the placeholder back keeps the stored secret; a new
account never stores the placeholder as a value. An API key is checked with the provider's cheap read
before the account counts as connected (like `cosmogen accounts add`). OAuth accounts connect through
the browser (`POST /api/v1/accounts/oauth/start`, then api/routes/oauth_callback.py), refresh now, and
disconnect with revocation. Every change leaves an audit entry (api/audit.py) without a secret.
"""

from __future__ import annotations

import asyncio
import hashlib
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field, SecretStr, StrictBool
from sqlalchemy import Connection, select, update
from starlette.responses import Response

from cosmogen.api import links
from cosmogen.api.audit import record
from cosmogen.api.problems import AUTHENTICATED, Problem, problem_responses
from cosmogen.api.schemas import Strict  # unknown fields are refused (API-04)
from cosmogen.api.security import Admin, Principal, Viewer
from cosmogen.domain.capabilities import Failure, Provider, Registry
from cosmogen.domain.oauth import OAUTH_SETTING, OAuthError, requested_scopes
from cosmogen.integrations import credentials
from cosmogen.integrations.account_admin import (
    SECRET_FIELDS,
    SettingsError,
    check_settings,
    remove_account,
    settle,
    visible_fields,
)
from cosmogen.integrations.accounts import probe_account
from cosmogen.integrations.connections import AccountUnavailable
from cosmogen.integrations.connections import Connection as ProviderConnection
from cosmogen.integrations.oauth_flow import (
    TOKEN_FIELDS,
    ConnectError,
    ConnectRequest,
    client_config,
    connect_settings,
    disconnect,
    pending_revocations,
    start_connect,
)
from cosmogen.integrations.secret import Secret
from cosmogen.integrations.vault import Vault, VaultError
from cosmogen.store.tables import accounts, utcnow

router = APIRouter(
    prefix="/api/v1/accounts",
    tags=["accounts"],
    # A missing account (404), one whose status forbids it (409), a vault that cannot open (503).
    responses=problem_responses(*AUTHENTICATED, 400, 404, 409, 503),
)

PLACEHOLDER: Literal["********"] = "********"  # what a read shows for every stored secret field
_WRITE_ONLY: dict[str, Any] = {"writeOnly": True}


# --- models -------------------------------------------------------------------------------------------


class AccountOut(BaseModel):
    id: str
    name: str
    provider: str
    auth_kind: str
    tier: str
    status: str
    base_url: str | None
    scopes: list[str]
    settings: dict[str, Any]
    token_expires_at: datetime | None
    last_refreshed_at: datetime | None
    verified: bool
    last_error: dict[str, Any] | None
    secrets: dict[str, Literal["********"]] = Field(
        description="Every stored secret field, always shown as the placeholder; the values are write-only"
    )
    created_at: datetime
    updated_at: datetime


class AccountList(BaseModel):
    accounts: list[AccountOut]


Secrets = Annotated[
    dict[str, SecretStr],
    Field(
        json_schema_extra=_WRITE_ONLY,
        description='Secret fields (api_key; password, username). Write-only: reads show "********"',
    ),
]


class AccountCreate(Strict):
    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    provider: str = Field(min_length=1, max_length=64)
    auth_kind: Literal["api_key", "basic", "none"] = "api_key"
    tier: Literal["sandbox", "production"] = "sandbox"
    base_url: str | None = Field(default=None, max_length=2048)
    settings: dict[str, Any] = Field(default_factory=dict)
    secrets: Secrets = Field(default_factory=dict)
    test: StrictBool = Field(
        default=True, description="Check an API key with the provider's cheap read first"
    )


class AccountPatch(Strict):
    name: str | None = Field(
        default=None, min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
    )
    tier: Literal["sandbox", "production"] | None = None
    base_url: str | None = Field(default=None, max_length=2048)
    settings: dict[str, Any] | None = None
    secrets: Secrets = Field(default_factory=dict)


class OAuthStart(Strict):
    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    provider: str = Field(min_length=1, max_length=64)
    client_id: str = Field(min_length=1, max_length=512)
    client_secret: SecretStr | None = Field(default=None, json_schema_extra=_WRITE_ONLY)
    settings: dict[str, Any] = Field(default_factory=dict)
    scopes: list[str] = Field(default_factory=list, description="Extra scopes to ask for")
    tier: Literal["sandbox", "production"] = "sandbox"
    base_url: str | None = Field(default=None, max_length=2048)
    return_to: str | None = Field(default=None, max_length=8192)


class OAuthStarted(BaseModel):
    account_id: str
    authorization_url: str
    expires_at: datetime


class Disconnection(BaseModel):
    account: AccountOut
    tokens_deleted: int
    revocations: list[dict[str, str]]
    revocable: bool


# --- helpers ------------------------------------------------------------------------------------------


def _runtime(request: Request) -> Any:
    return request.app.state.runtime


def _registry(request: Request) -> Registry:
    registry: Registry = _runtime(request).executor.registry
    return registry


def _vault(request: Request) -> Vault:
    try:
        vault: Vault = _runtime(request).open_vault()
    except VaultError as exc:
        raise Problem(
            503,
            "vault_unavailable",
            f"the credential vault cannot open: {exc}",
            hint="check the vault key (docs/operations.md)",
        ) from None
    return vault


def _out(conn: Connection, row: Any) -> AccountOut:
    fields = visible_fields(credentials.secret_fields(conn, row.id))
    return AccountOut(
        id=row.id,
        name=row.name,
        provider=row.provider,
        auth_kind=row.auth_kind,
        tier=row.tier,
        status=row.status,
        base_url=row.base_url,
        scopes=list(row.scopes or []),
        settings=dict(row.settings),
        token_expires_at=row.token_expires_at,
        last_refreshed_at=row.last_refreshed_at,
        verified=row.verified_at is not None,
        last_error=row.last_error,
        secrets=dict.fromkeys(fields, PLACEHOLDER),
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _row(conn: Connection, caller: Principal, account_id: str) -> Any:
    row = conn.execute(
        select(accounts).where(accounts.c.id == account_id, accounts.c.workspace_id == caller.workspace_id)
    ).one_or_none()
    if row is None:
        raise Problem(
            404, "not_found", "no such account in this workspace", hint="GET /api/v1/accounts lists them"
        )
    return row


async def _read_one(request: Request, caller: Principal, account_id: str) -> AccountOut:
    def read() -> AccountOut:
        with _runtime(request).db.engine.connect() as conn:
            return _out(conn, _row(conn, caller, account_id))

    return await asyncio.to_thread(read)


def _provider(registry: Registry, provider: str) -> Provider:
    found = registry.providers.get(provider)
    if found is None:
        raise Problem(
            422,
            "unknown_provider",
            "no such provider",
            hint=f"use one of: {', '.join(sorted(registry.providers))}",
        )
    return found


def _plain_secrets(given: dict[str, SecretStr], auth_kind: str) -> dict[str, Secret]:
    """The request's secret fields as Secret values; the placeholder is never a value (SEC-08)."""
    allowed = SECRET_FIELDS.get(auth_kind, ())
    out: dict[str, Secret] = {}
    for name, value in given.items():
        if name not in allowed:
            raise Problem(
                422,
                "unknown_secret_field",
                f"{auth_kind} accounts have no secret field {name!r}",
                hint=f"secret fields: {', '.join(allowed) or '(none)'}",
            )
        text = value.get_secret_value()
        if text == PLACEHOLDER:
            out[name] = Secret(PLACEHOLDER)  # marker: "keep"; resolved by the caller
        elif not text.strip():
            raise Problem(
                422,
                "empty_secret",
                f"secret field {name!r} is empty",
                hint="send the value, or leave the field out",
            )
        else:
            out[name] = Secret(text.strip())
    return out


def _is_placeholder(value: Secret) -> bool:
    return value.reveal() == PLACEHOLDER


def _settings_or_422(provider: str, settings: Any) -> dict[str, Any]:
    try:
        return check_settings(provider, settings)
    except SettingsError as exc:
        raise Problem(422, "invalid_settings", str(exc), hint="fix `settings`") from None


async def _probe(
    request: Request,
    target: Provider,
    account_id: str,
    name: str,
    auth_kind: str,
    base_url: str | None,
    values: dict[str, Secret],
) -> Failure | None:
    connection = ProviderConnection(
        account_id, name, target.id, auth_kind, base_url or target.base_url, values
    )
    return await probe_account(_runtime(request).http, target, connection)


def _audit_write(caller: Principal, action: str, account_id: str, details: dict[str, Any]) -> Any:
    def write(conn: Connection) -> None:
        record(conn, caller, action, ("account", account_id), details)

    return write


def _is_unique_violation(exc: Exception) -> bool:
    text = str(exc).lower()
    return "unique" in text or "duplicate" in text


# --- reads --------------------------------------------------------------------------------------------


@router.get(
    "", response_model=AccountList, summary="Accounts of the workspace (secrets as placeholders)",
    responses=links.answer(200, links.account("/accounts/0/id")),
)  # fmt: skip
async def list_accounts(request: Request, caller: Viewer) -> AccountList:
    def read() -> AccountList:
        with _runtime(request).db.engine.connect() as conn:
            rows = conn.execute(
                select(accounts)
                .where(accounts.c.workspace_id == caller.workspace_id)
                .order_by(accounts.c.name)
            ).all()
            return AccountList(accounts=[_out(conn, r) for r in rows])

    return await asyncio.to_thread(read)


@router.get("/{account_id}", response_model=AccountOut, summary="One account (secrets as placeholders)")
async def get_account(request: Request, caller: Viewer, account_id: str) -> AccountOut:
    return await _read_one(request, caller, account_id)


# --- API-key, basic and no-auth accounts --------------------------------------------------------------


@router.post(
    "",
    response_model=AccountOut,
    status_code=201,
    summary="Add an API-key, basic or no-auth account",
    responses=links.answer(201, links.account("/id")),
)
async def create_account(request: Request, caller: Admin, body: AccountCreate) -> AccountOut:
    registry = _registry(request)
    target = _provider(registry, body.provider)
    if body.auth_kind not in target.auth_kinds:
        raise Problem(
            422,
            "wrong_auth_kind",
            f"{target.id} accounts use {', '.join(target.auth_kinds)}",
            hint="OAuth accounts connect with POST /api/v1/accounts/oauth/start",
        )
    settings = _settings_or_422(target.id, body.settings)
    values = _plain_secrets(body.secrets, body.auth_kind)
    if any(_is_placeholder(v) for v in values.values()):
        raise Problem(
            422,
            "placeholder_secret",
            f'"{PLACEHOLDER}" stands for a stored secret; a new account has none to keep',
            hint="send the secret's value",
        )
    main = SECRET_FIELDS[body.auth_kind][:1]
    if main and main[0] not in values:
        raise Problem(
            422,
            "missing_secret",
            f"a {body.auth_kind} account needs secret field {main[0]!r}",
            hint=f'send "secrets": {{"{main[0]}": "..."}}',
        )
    vault = _vault(request) if values else None
    fresh = credentials.create_account(
        workspace_id=caller.workspace_id,
        provider=target.id,
        name=body.name,
        auth_kind=body.auth_kind,
        tier=body.tier,
        base_url=body.base_url,
        settings=settings,
    )

    def write(conn: Connection) -> str:
        account_id = fresh(conn)
        if values:
            assert vault is not None
            credentials.put_secrets(vault, account_id, values)(conn)
        details = {
            "name": body.name,
            "provider": target.id,
            "auth_kind": body.auth_kind,
            "tier": body.tier,
            "secret_fields": sorted(values),
        }
        record(conn, caller, "account.create", ("account", account_id), details)
        return account_id

    writer = _runtime(request).writer
    try:
        account_id = await writer.write(write)
    except Exception as exc:
        if _is_unique_violation(exc):
            raise Problem(
                409,
                "name_taken",
                "an account with this name already exists in the workspace",
                hint="pick another name, or remove that account first",
            ) from None
        raise
    failure = await _test_and_settle(
        request, caller, target, account_id, body.name, body.auth_kind, body.base_url, values, test=body.test
    )
    if failure is not None:
        raise Problem(
            422,
            "test_call_refused",
            f"saved the account with status error: the provider refused the test call: {failure.message}",
            hint=f"{failure.action.value}: fix the secret with PATCH /api/v1/accounts/{account_id}",
            extra={"account_id": account_id},
        )
    return await _read_one(request, caller, account_id)


async def _test_and_settle(
    request: Request,
    caller: Principal,
    target: Provider,
    account_id: str,
    name: str,
    auth_kind: str,
    base_url: str | None,
    values: dict[str, Secret],
    *,
    test: bool,
) -> Failure | None:
    tested = test and target.probe is not None and auth_kind == "api_key" and "api_key" in values
    failure = await _probe(request, target, account_id, name, auth_kind, base_url, values) if tested else None
    settled = settle(account_id, failure, verified=tested)

    def write(conn: Connection) -> None:
        status = settled(conn)
        details = {"status": status, "tested": tested}
        if failure is not None:
            details["error"] = failure.code
        record(
            conn,
            caller,
            "account.connect" if failure is None else "account.error",
            ("account", account_id),
            details,
        )

    await _runtime(request).writer.write(write)
    return failure


@router.patch("/{account_id}", response_model=AccountOut, summary="Change settings, tier, name or secrets")
async def patch_account(request: Request, caller: Admin, account_id: str, body: AccountPatch) -> AccountOut:
    registry = _registry(request)

    def read() -> tuple[Any, list[str]]:
        with _runtime(request).db.engine.connect() as conn:
            row = _row(conn, caller, account_id)
            return row, credentials.secret_fields(conn, account_id)

    row, stored_fields = await asyncio.to_thread(read)
    changes: dict[str, Any] = {}
    if body.name is not None and body.name != row.name:
        changes["name"] = body.name
    if body.tier is not None and body.tier != row.tier:
        changes["tier"] = body.tier
    if "base_url" in body.model_fields_set and body.base_url != row.base_url:
        changes["base_url"] = body.base_url
    if body.settings is not None:
        settings = _settings_or_422(row.provider, body.settings)
        if row.auth_kind == "oauth2":
            settings = _oauth_settings(registry, row, settings)
        if settings != dict(row.settings):
            changes["settings"] = settings
    given = _plain_secrets(body.secrets or {}, row.auth_kind)
    for name, value in given.items():
        if _is_placeholder(value) and name not in stored_fields:
            raise Problem(
                422,
                "placeholder_secret",
                f'"{PLACEHOLDER}" stands for a stored secret; {name!r} has none',
                hint="send the secret's value",
            )
    new_values = {n: v for n, v in given.items() if not _is_placeholder(v)}  # the placeholder keeps it
    vault = _vault(request) if new_values else None

    def write(conn: Connection) -> None:
        if changes:
            conn.execute(
                update(accounts).where(accounts.c.id == account_id).values(**changes, updated_at=utcnow())
            )
        if new_values:
            assert vault is not None
            credentials.put_secrets(vault, account_id, new_values)(conn)
        if changes or new_values:
            details = {"changed": sorted(changes), "secret_fields_replaced": sorted(new_values)}
            record(conn, caller, "account.change", ("account", account_id), details)

    try:
        await _runtime(request).writer.write(write)
    except Exception as exc:
        if _is_unique_violation(exc):
            raise Problem(
                409,
                "name_taken",
                "an account with this name already exists in the workspace",
                hint="pick another name",
            ) from None
        raise
    # A new secret is checked (and may fix an account in error); a disabled account stays disabled.
    if new_values and row.auth_kind in ("api_key", "basic") and row.status != "disabled":
        target = _provider(registry, row.provider)
        base_url = changes.get("base_url", row.base_url)
        failure = await _test_and_settle(
            request, caller, target, account_id, row.name, row.auth_kind, base_url, new_values, test=True
        )
        if failure is not None:
            raise Problem(
                422,
                "test_call_refused",
                f"saved; the provider refused the test call with the new secret: {failure.message}",
                hint=f"{failure.action.value}",
                extra={"account_id": account_id},
            )
    return await _read_one(request, caller, account_id)


def _oauth_settings(registry: Registry, row: Any, settings: dict[str, Any]) -> dict[str, Any]:
    """New settings of an OAuth account keep its client id and must still describe a valid client."""
    stored = (row.settings or {}).get(OAUTH_SETTING) or {}
    client_id = stored.get("client_id") if isinstance(stored, dict) else None
    target = _provider(registry, row.provider)
    try:
        merged = connect_settings(settings, str(client_id)) if client_id else settings
        client_config(target, merged)
    except OAuthError as exc:
        raise Problem(422, "invalid_settings", str(exc), hint="fix `settings.oauth`") from None
    return merged


@router.post("/{account_id}/test", response_model=AccountOut, summary="Check the credential now")
async def test_account(request: Request, caller: Admin, account_id: str) -> AccountOut:
    registry = _registry(request)
    runtime = _runtime(request)
    row = await _read_one(request, caller, account_id)
    target = _provider(registry, row.provider)
    if row.status == "disabled":
        raise Problem(
            409, "disabled", "the account is disabled", hint=f"POST /api/v1/accounts/{account_id}/enable"
        )
    if row.auth_kind == "oauth2":
        try:
            await runtime.tokens.access_token(account_id)
        except AccountUnavailable as exc:
            raise Problem(409, "unusable", str(exc), hint=exc.action.value) from None
        await runtime.writer.write(_audit_write(caller, "account.test", account_id, {"ok": True}))
        return await _read_one(request, caller, account_id)
    if target.probe is None or row.auth_kind != "api_key":
        raise Problem(
            422,
            "no_test_call",
            f"{target.id} {row.auth_kind} accounts have no test call",
            hint="run a universe that uses the account",
        )
    vault = _vault(request)

    def reveal() -> dict[str, Secret]:
        with runtime.db.engine.connect() as conn:
            return credentials.reveal_credentials(conn, vault, account_id, ["api_key"])

    values = await asyncio.to_thread(reveal)
    if "api_key" not in values:
        raise Problem(409, "no_secret", "the account has no API key stored", hint="set one with PATCH")
    failure = await _test_and_settle(
        request, caller, target, account_id, row.name, row.auth_kind, row.base_url, values, test=True
    )
    if failure is not None:
        raise Problem(
            422,
            "test_call_refused",
            f"the provider refused the test call: {failure.message}",
            hint=failure.action.value,
            extra={"account_id": account_id},
        )
    return await _read_one(request, caller, account_id)


# --- status -------------------------------------------------------------------------------------------


@router.post("/{account_id}/disable", response_model=AccountOut, summary="Stop every use of the account")
async def disable_account(request: Request, caller: Admin, account_id: str) -> AccountOut:
    row = await _read_one(request, caller, account_id)
    if row.status == "disabled":
        raise Problem(
            409,
            "already_disabled",
            "the account is already disabled",
            hint=f"POST /api/v1/accounts/{account_id}/enable",
        )
    problem = {"code": "disabled", "message": "disabled by a person", "action": "fix_setting"}

    def write(conn: Connection) -> None:
        credentials.set_account_status(account_id, "disabled", last_error=problem)(conn)
        record(conn, caller, "account.disable", ("account", account_id), {"was": row.status})

    await _runtime(request).writer.write(write)
    return await _read_one(request, caller, account_id)


@router.post("/{account_id}/enable", response_model=AccountOut, summary="Use a disabled account again")
async def enable_account(request: Request, caller: Admin, account_id: str) -> AccountOut:
    runtime = _runtime(request)
    row = await _read_one(request, caller, account_id)
    if row.status != "disabled":
        raise Problem(
            409, "not_disabled", f"the account is {row.status}, not disabled", hint="nothing to enable"
        )
    target = _provider(_registry(request), row.provider)
    fields = list(row.secrets)
    values: dict[str, Secret] = {}
    if target.probe is not None and "api_key" in fields:
        vault = _vault(request)

        def reveal() -> dict[str, Secret]:
            with runtime.db.engine.connect() as conn:
                return credentials.reveal_credentials(conn, vault, account_id, ["api_key"])

        values = await asyncio.to_thread(reveal)
    if fields or row.auth_kind == "none":
        failure = await _test_and_settle(
            request, caller, target, account_id, row.name, row.auth_kind, row.base_url, values, test=True
        )
        if failure is not None:
            raise Problem(
                422,
                "test_call_refused",
                f"enabled, but the test call was refused: {failure.message}",
                hint=failure.action.value,
                extra={"account_id": account_id},
            )
    else:
        problem = {"code": "not_connected", "message": "no credential stored", "action": "reconnect"}

        def write(conn: Connection) -> None:
            credentials.set_account_status(account_id, "pending", last_error=problem)(conn)
            record(conn, caller, "account.enable", ("account", account_id), {"status": "pending"})

        await runtime.writer.write(write)
    return await _read_one(request, caller, account_id)


# --- OAuth: refresh now, disconnect, remove -----------------------------------------------------------


@router.post(
    "/{account_id}/refresh", response_model=AccountOut, summary="OAuth: refresh the access token now"
)
async def refresh_account(request: Request, caller: Admin, account_id: str) -> AccountOut:
    runtime = _runtime(request)
    row = await _read_one(request, caller, account_id)
    if row.auth_kind != "oauth2":
        raise Problem(
            422,
            "not_oauth",
            f"{row.auth_kind} accounts have no token to refresh",
            hint="only OAuth accounts refresh",
        )
    try:
        await runtime.tokens.access_token(account_id, force=True)
    except AccountUnavailable as exc:
        await runtime.writer.write(_audit_write(caller, "account.refresh", account_id, {"ok": False}))
        raise Problem(409, "refresh_failed", str(exc), hint=exc.action.value) from None
    await runtime.writer.write(_audit_write(caller, "account.refresh", account_id, {"ok": True}))
    return await _read_one(request, caller, account_id)


async def _disconnect(request: Request, caller: Principal, row: AccountOut) -> Disconnection:
    runtime = _runtime(request)
    try:
        done = await disconnect(
            runtime.db,
            runtime.writer,
            _vault(request),
            runtime.http,
            _registry(request),
            workspace=caller.workspace_id,
            name=row.name,
            now=utcnow,
        )
    except ConnectError as exc:
        raise Problem(409, exc.code, str(exc), hint="see the account's status") from None
    revocations = [
        {"token_type_hint": r.token_type_hint, "verdict": r.verdict, "message": r.message}
        for r in done.revocations
    ]
    details = {"tokens_deleted": done.tokens_deleted, "revocations": [r["verdict"] for r in revocations]}
    await runtime.writer.write(_audit_write(caller, "account.disconnect", row.id, details))
    account = await _read_one(request, caller, row.id)
    return Disconnection(
        account=account, tokens_deleted=done.tokens_deleted, revocations=revocations, revocable=done.revocable
    )


@router.post(
    "/{account_id}/disconnect",
    response_model=Disconnection,
    summary="OAuth: delete the tokens here and revoke the grant at the provider",
)
async def disconnect_account(request: Request, caller: Admin, account_id: str) -> Disconnection:
    row = await _read_one(request, caller, account_id)
    if row.auth_kind != "oauth2":
        raise Problem(
            422,
            "not_oauth",
            "only OAuth accounts are disconnected",
            hint=f"DELETE /api/v1/accounts/{account_id} removes it",
        )
    return await _disconnect(request, caller, row)


@router.delete("/{account_id}", status_code=204, summary="Remove the account (OAuth: revoke first)")
async def delete_account(
    request: Request,
    caller: Admin,
    account_id: str,
    keep_grant: Annotated[
        bool, Query(description="Remove even if the grant could not be revoked now")
    ] = False,
) -> Response:
    runtime = _runtime(request)
    row = await _read_one(request, caller, account_id)

    def revocable() -> bool:
        with runtime.db.engine.connect() as conn:
            return row.auth_kind == "oauth2" and (
                pending_revocations(conn, account_id) > 0
                or any(f in TOKEN_FIELDS for f in credentials.secret_fields(conn, account_id))
            )

    if await asyncio.to_thread(revocable):
        done = await _disconnect(request, caller, row)
        left = [r for r in done.revocations if r["verdict"] == "retry"]
        if left and not keep_grant:
            raise Problem(
                409,
                "grant_not_revoked",
                f"kept the account: its grant could not be revoked now ({left[0]['message']})",
                hint="its tokens are deleted and the revocation is retried; remove it later, or "
                "pass ?keep_grant=true",
            )
    removing = remove_account(account_id)

    def write(conn: Connection) -> None:
        removing(conn)
        record(
            conn,
            caller,
            "account.remove",
            ("account", account_id),
            {"name": row.name, "provider": row.provider},
        )

    await runtime.writer.write(write)
    return Response(status_code=204)


# --- OAuth: start a connection in the browser ---------------------------------------------------------


def session_binding(caller: Principal) -> str:
    """What binds a flow to the caller's browser: its session (or API token) id, hashed, so the flow
    row never holds the id itself and the binding has the length session_hash wants."""
    return hashlib.sha256(f"cosmogen-oauth-session:{caller.credential_id}".encode()).hexdigest()


def callback_url(request: Request, provider: str) -> str:
    """Our redirect URI for `provider`: one per authorization server, so a response that arrives at
    another provider's callback is a mix-up (domain.oauth.callback_refusal)."""
    return f"{str(request.base_url).rstrip('/')}/oauth/callback/{provider}"


@router.post(
    "/oauth/start",
    response_model=OAuthStarted,
    status_code=201,
    summary="OAuth: start connecting an account; send the browser to authorization_url",
    responses=links.answer(201, links.account("/account_id")),
)
async def oauth_start(request: Request, caller: Admin, body: OAuthStart) -> OAuthStarted:
    registry = _registry(request)
    target = _provider(registry, body.provider)
    if "oauth2" not in target.auth_kinds:
        raise Problem(
            422,
            "not_oauth",
            f"{target.id} accounts use {', '.join(target.auth_kinds)}, not OAuth",
            hint="add it with POST /api/v1/accounts",
        )
    settings = _settings_or_422(target.id, body.settings)
    try:
        scopes = requested_scopes(registry, target.id, body.scopes)
        client_config(target, connect_settings(settings, body.client_id))
    except OAuthError as exc:
        raise Problem(
            422, "invalid_oauth", str(exc), hint="fix `settings.oauth`, `client_id` or `scopes`"
        ) from None
    secret = body.client_secret.get_secret_value() if body.client_secret is not None else None
    if secret == PLACEHOLDER:
        secret = None  # "keep the stored client secret" (a reconnect)
    connect = ConnectRequest(
        workspace=caller.workspace_id,
        name=body.name,
        provider=target,
        client_id=body.client_id,
        client_secret=Secret(secret) if secret else None,
        settings=settings,
        scopes=scopes,
        redirect_uri=callback_url(request, target.id),
        session=session_binding(caller),
        tier=body.tier,
        base_url=body.base_url,
        return_to=body.return_to,
    )
    try:
        write, _state = start_connect(_vault(request), connect, utcnow)
    except (ConnectError, OAuthError) as exc:
        raise Problem(422, getattr(exc, "code", "invalid_oauth"), str(exc), hint="fix the request") from None

    def start(conn: Connection) -> Any:
        started = write(conn)
        details = {"name": body.name, "provider": target.id, "reconnect": started.reused}
        record(conn, caller, "account.connect_start", ("account", started.account_id), details)
        return started

    try:
        started = await _runtime(request).writer.write(start)
    except ConnectError as exc:
        raise Problem(409, exc.code, str(exc), hint="see the account") from None
    return OAuthStarted(
        account_id=started.account_id,
        authorization_url=started.authorization_url,
        expires_at=started.expires_at,
    )


__all__ = ["PLACEHOLDER", "callback_url", "router", "session_binding"]
