"""Connecting an OAuth account (authorization code + PKCE) and disconnecting it (RFC 7009 revocation).

Connect, in three steps:
1. `start_connect` (one transaction): the account (created `pending`, or an unconnected one reused for a
   reconnect), its client secret in the vault, and a flow row: `state` stored as its SHA-256, the PKCE
   verifier sealed by the vault, the authorization server, the redirect URI, the session that started it
   and a 10-minute expiry. It returns the authorization URL to send the person to.
2. `complete_connect`, when the browser comes back: first one transaction that marks the flow used
   (state is single-use, whatever follows) and runs every check of domain.oauth.callback_refusal; only
   then the code exchange at the token endpoint (integrations.oauth.token_call, through the egress guard).
3. One transaction stores the tokens in the vault (`access_token`, `refresh_token`; `client_secret` was
   stored in step 1) and sets the account `connected` with its granted scopes and expiry.

Disconnect (`disconnect`): one transaction deletes the token ciphertexts and sets the account `expired`
with a last error saying "reconnect" (seed-spec §2.2 moves an account whose grant ended to `expired`;
`disabled` would tell a person to enable an account that has no grant left), and puts each token to
revoke in an outbox (`oauth_revocations`; the token stays encrypted in a credential field of its own until
revoked). Then each revocation is sent at once; one the endpoint does not take now is retried later by
`deliver_revocations` (the runtime calls `revocation_loop`), with backoff, for about 20 hours.

Nothing here returns, logs or raises a token, a code, a verifier or a client secret.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, delete, func, or_, select, update

from cosmogen.domain.capabilities import Provider, Registry
from cosmogen.domain.oauth import (
    FLOW_TTL,
    OAUTH_SETTING,
    Callback,
    CallbackRefusal,
    OAuthClientConfig,
    OAuthError,
    RevocationVerdict,
    StoredFlow,
    TokenGrant,
    TokenRefusal,
    authorization_request,
    authorization_server_id,
    callback_refusal,
    oauth_config,
    revocation_retry_at,
    revocation_verdict,
    safe_return_to,
    scope_separator,
    session_hash,
    state_hash,
)
from cosmogen.integrations import credentials
from cosmogen.integrations.http import HttpCallError, HttpClient
from cosmogen.integrations.keystore import current_key
from cosmogen.integrations.oauth import NO_RETRIES, client_request, new_state, new_verifier, token_call
from cosmogen.integrations.secret import Secret
from cosmogen.integrations.vault import Vault, VaultError
from cosmogen.store import Database, GroupCommitWriter
from cosmogen.store.tables import accounts, new_id, oauth_flows, oauth_revocations
from cosmogen.store.workspace_events import announce_account
from cosmogen.store.writer import WriteFn

log = logging.getLogger(__name__)

TOKEN_FIELDS = ("access_token", "refresh_token")
CLIENT_SECRET = "client_secret"  # noqa: S105 - a field name, not a secret
# A flow row is kept this long after it expired, so a late or replayed response is told "already used".
_FLOW_KEEP = timedelta(days=1)
# A taker of a revocation pushes its next attempt this far ahead, so another process does not send it too.
_CLAIM = timedelta(minutes=2)


def new_session() -> str:
    """A session binding for a flow started outside a browser session (the CLI): 256 random bits."""
    return secrets.token_urlsafe(32)


class ConnectError(Exception):
    """The connection cannot be started or completed; `code` names the rule, the message says what to
    do. Never carries a token, a code or a state."""

    def __init__(self, code: str, message: str, account_id: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.account_id = account_id


# --- 1. starting a connection -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConnectRequest:
    workspace: str
    name: str
    provider: Provider
    client_id: str
    client_secret: Secret | None  # None: a public client (PKCE alone), or keep the one stored
    settings: Mapping[str, Any]  # the account's non-secret settings; "oauth" holds endpoint overrides
    scopes: tuple[str, ...]
    redirect_uri: str
    session: str  # the browser session id or the CLI's new_session(): only it may complete the flow
    tier: str = "sandbox"
    base_url: str | None = None
    return_to: str | None = None


@dataclass(frozen=True, slots=True)
class ConnectStarted:
    account_id: str
    authorization_url: str
    state_hash: str
    expires_at: datetime
    reused: bool  # an existing, unconnected account is being reconnected


def client_config(provider: Provider, settings: Mapping[str, Any] | None) -> OAuthClientConfig:
    """The account's OAuth client: its settings over the provider's endpoints. Raises OAuthError."""
    defaults = None
    if provider.oauth is not None:
        defaults = (provider.oauth.authorize_url, provider.oauth.token_url, provider.oauth.revoke_url)
    return oauth_config(provider.id, defaults, settings)


def connect_settings(settings: Mapping[str, Any] | None, client_id: str) -> dict[str, Any]:
    """`settings` with the client id put into "oauth" (which may hold endpoint overrides)."""
    merged = dict(settings or {})
    raw = merged.get(OAUTH_SETTING) or {}
    if not isinstance(raw, Mapping):
        raise OAuthError('the account setting "oauth" must be an object, e.g. {"token_url": "..."}')
    merged[OAUTH_SETTING] = {**raw, "client_id": client_id}
    return merged


def start_connect(
    vault: Vault, request: ConnectRequest, now: Callable[[], datetime]
) -> tuple[WriteFn[ConnectStarted], str]:
    """The write that starts a connection, and the `state` it sends (the caller's listener may want to
    recognise its own callback). Raises OAuthError (bad settings, scopes or endpoints) before writing."""
    if "oauth2" not in request.provider.auth_kinds:
        raise ConnectError(
            "no_oauth",
            f"{request.provider.id} accounts use {', '.join(request.provider.auth_kinds)}, not OAuth; "
            "add one with `cosmogen accounts add`",
        )
    settings = connect_settings(request.settings, request.client_id)
    config = client_config(request.provider, settings)
    state, verifier = new_state(), new_verifier()  # drawn once: a re-run of the write reuses them
    hashed_state = state_hash(state)
    hashed_session = session_hash(request.session)
    separator = scope_separator(request.provider.id)
    url = authorization_request(
        config.authorize_url,
        client_id=config.client_id,
        redirect_uri=request.redirect_uri,
        scopes=(separator.join(request.scopes),) if request.scopes else (),
        state=state,
        verifier=verifier,
    ).url
    fresh_id = new_id()
    started_at = now()
    expires_at = started_at + FLOW_TTL
    return_to = safe_return_to(request.return_to) if request.return_to is not None else None

    def write(conn: Connection) -> ConnectStarted:
        conn.execute(delete(oauth_flows).where(oauth_flows.c.expires_at < started_at - _FLOW_KEEP))
        existing = conn.execute(
            select(accounts).where(
                accounts.c.workspace_id == request.workspace, accounts.c.name == request.name
            )
        ).one_or_none()
        values: dict[str, Any] = {
            "scopes": list(request.scopes),
            "tier": request.tier,
            "base_url": request.base_url,
            "settings": settings,
        }
        if existing is None:
            account_id = credentials.create_account(
                workspace_id=request.workspace,
                provider=request.provider.id,
                name=request.name,
                auth_kind="oauth2",
                account_id=fresh_id,
                **values,
            )(conn)
        else:
            account_id = existing.id
            if existing.auth_kind != "oauth2" or existing.provider != request.provider.id:
                raise ConnectError(
                    "name_taken",
                    f"an account named {request.name!r} already exists ({existing.provider}, "
                    f"{existing.auth_kind}); pick another name or remove it first",
                    account_id,
                )
            if existing.status == "connected":
                raise ConnectError(
                    "already_connected",
                    f"account {request.name!r} is connected; disconnect it first "
                    f"(`cosmogen accounts disconnect {request.name}`) to connect it again",
                    account_id,
                )
            conn.execute(update(accounts).where(accounts.c.id == account_id).values(**values))
        if request.client_secret is not None:
            credentials.put_secrets(vault, account_id, {CLIENT_SECRET: request.client_secret})(conn)
        _use_current_key(conn, vault)
        sealed = vault.encrypt(
            request.workspace, account_id, credentials.oauth_verifier_field(hashed_state), Secret(verifier)
        )
        conn.execute(
            oauth_flows.insert().values(
                state_hash=hashed_state,
                account_id=account_id,
                issuer=authorization_server_id(config),
                expects_iss=config.issuer is not None,
                redirect_uri=request.redirect_uri,
                verifier_ciphertext=sealed.ciphertext,
                verifier_wrapped_key=sealed.wrapped_key,
                key_id=sealed.key_id,
                return_to=return_to,
                session_hash=hashed_session,
                created_at=started_at,
                expires_at=expires_at,
            )
        )
        return ConnectStarted(account_id, url, hashed_state, expires_at, existing is not None)

    return write, state


def abandon_connect(hashed_state: str, now: Callable[[], datetime]) -> WriteFn[bool]:
    """Spend a flow nobody will complete (the CLI timed out): its link stops working at once."""

    def write(conn: Connection) -> bool:
        result = conn.execute(
            update(oauth_flows)
            .where(oauth_flows.c.state_hash == hashed_state, oauth_flows.c.used_at.is_(None))
            .values(used_at=now())
        )
        return bool(result.rowcount)

    return write


def _use_current_key(conn: Connection, vault: Vault) -> None:
    key = current_key(conn, lock=True)
    if key is None:
        raise VaultError("this database has no vault key registered yet; open the vault once to create one")
    vault.use(key.key_id, key.check_value)


# --- 2 and 3. completing it -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AuthorizationResponse:
    """The query of the redirect back from the authorization server, and where it arrived."""

    state: str | None
    code: str | None
    iss: str | None
    error: str | None
    error_description: str | None
    provider: str  # whose callback received it
    redirect_uri: str  # the callback URL it arrived at

    @classmethod
    def from_query(
        cls, query: Mapping[str, str], *, provider: str, redirect_uri: str
    ) -> AuthorizationResponse:
        def get(name: str) -> str | None:
            value = query.get(name)
            return value if value else None

        return cls(
            get("state"),
            get("code"),
            get("iss"),
            get("error"),
            get("error_description"),
            provider,
            redirect_uri,
        )


@dataclass(frozen=True, slots=True)
class Connected:
    account_id: str
    name: str
    provider: str
    scopes: tuple[str, ...]  # granted (or, when the server did not say, requested)
    missing_scopes: tuple[str, ...]  # requested but not granted: capabilities needing them will refuse
    expires_at: datetime | None
    has_refresh_token: bool
    return_to: str | None


@dataclass(frozen=True)
class _Claim:
    account_id: str
    workspace: str
    name: str
    provider: str
    config: OAuthClientConfig
    verifier: Secret = field(repr=False)
    client_secret: Secret | None = field(repr=False)
    redirect_uri: str
    requested: tuple[str, ...]
    return_to: str | None


async def complete_connect(
    writer: GroupCommitWriter,
    vault: Vault,
    http: HttpClient,
    registry: Registry,
    response: AuthorizationResponse,
    *,
    session: str,
    now: Callable[[], datetime],
) -> Connected:
    """Check the authorization response, exchange its code, store the tokens. Raises ConnectError; a
    refused response causes no token request at all (reliability.md OA-09, OA-10)."""
    callback = Callback(
        state=response.state,
        code=response.code,
        iss=response.iss,
        error=response.error,
        error_description=response.error_description,
        provider=response.provider,
        redirect_uri=response.redirect_uri,
        session_hash=session_hash(session),
        server_id="",
    )
    if not response.state:
        refused = callback_refusal(None, callback, now())
        assert refused is not None
        raise ConnectError(refused.code, refused.message)
    try:
        hashed = state_hash(response.state)
    except OAuthError:
        raise ConnectError("unknown_state", "the authorization response's state is malformed") from None
    claimed = await writer.write(_claim(vault, registry, hashed, callback, now))
    if isinstance(claimed, tuple):
        account_id, refused = claimed
        if account_id is not None and refused.code not in _NOT_THE_ACCOUNTS:
            await writer.write(_record_problem(account_id, refused.code, refused.message, now))
        raise ConnectError(refused.code, refused.message, account_id)
    assert response.code is not None
    form = {
        "grant_type": "authorization_code",
        "code": response.code,
        "redirect_uri": claimed.redirect_uri,
        "code_verifier": claimed.verifier.reveal(),
    }
    answer = await token_call(http, claimed.config, claimed.client_secret, form, now)
    if isinstance(answer, TokenRefusal):
        message = _exchange_refused(answer)
        await writer.write(_record_problem(claimed.account_id, f"token_{answer.code}", message, now))
        raise ConnectError(f"token_{answer.code}", message, claimed.account_id)
    return await writer.write(_store_grant(vault, claimed, answer, now))


def _exchange_refused(refusal: TokenRefusal) -> str:
    """What to tell a person about a refused code exchange: from the error code only. The server's
    error_description is left out on purpose: a server may echo what it was sent (the Basic header with
    the client secret, LEAK-01's echo case), and nothing here knows every form a secret can take."""
    code = refusal.code if refusal.code.replace("_", "").isalnum() else "unexpected"
    hint = {
        "invalid_client": "check the app's client id and secret (--client-id, --client-secret-stdin)",
        "unauthorized_client": "the app may not use the authorization-code grant: check its settings",
        "invalid_grant": "the code expired or was already used, or the redirect URL differs",
        "invalid_scope": "a requested scope is unknown to the provider",
    }.get(code, f"{refusal.kind.value} failure")
    return f"the code exchange was refused ({code[:64]}: {hint}); start connecting again"


# Refusals that say nothing about the account (someone else's or a stale response): not recorded on it.
_NOT_THE_ACCOUNTS = frozenset({"state_used", "expired", "other_session", "already_connected"})


def _claim(
    vault: Vault, registry: Registry, hashed: str, callback: Callback, now: Callable[[], datetime]
) -> WriteFn[_Claim | tuple[str | None, CallbackRefusal]]:
    def write(conn: Connection) -> _Claim | tuple[str | None, CallbackRefusal]:
        at = now()
        query = (
            select(oauth_flows, accounts.c.workspace_id, accounts.c.provider, accounts.c.name)
            .add_columns(accounts.c.settings, accounts.c.status, accounts.c.scopes)
            .join(accounts, accounts.c.id == oauth_flows.c.account_id)
            .where(oauth_flows.c.state_hash == hashed)
        )
        if conn.dialect.name == "postgresql":
            query = query.with_for_update(of=oauth_flows)
        row = conn.execute(query).one_or_none()
        if row is None:
            refused = callback_refusal(None, callback, at)
            assert refused is not None
            return None, refused
        # Spent now, whatever the checks say: a state is good for one response (OA-09).
        spent = conn.execute(
            update(oauth_flows)
            .where(oauth_flows.c.state_hash == hashed, oauth_flows.c.used_at.is_(None))
            .values(used_at=at)
        ).rowcount
        provider = registry.providers.get(row.provider)
        config: OAuthClientConfig | None = None
        if provider is not None:
            try:
                config = client_config(provider, row.settings)
            except OAuthError as exc:
                return row.account_id, CallbackRefusal("settings", f"the account's OAuth settings: {exc}")
        flow = StoredFlow(
            provider=row.provider,
            server_id=row.issuer,
            expects_iss=bool(row.expects_iss),
            redirect_uri=row.redirect_uri,
            session_hash=row.session_hash,
            expires_at=row.expires_at,
            used=row.used_at is not None or spent == 0,
            account_status=row.status,
        )
        server_now = authorization_server_id(config) if config is not None else "(unknown provider)"
        refused = callback_refusal(flow, replace(callback, server_id=server_now), at)
        if refused is not None:
            return row.account_id, refused
        assert config is not None
        field_name = credentials.oauth_verifier_field(hashed)
        try:
            verifier = vault.decrypt(
                row.workspace_id,
                row.account_id,
                field_name,
                bytes(row.verifier_ciphertext),
                bytes(row.verifier_wrapped_key),
                row.key_id,
            )
        except VaultError:
            return row.account_id, CallbackRefusal(
                "no_verifier", "the connection's stored PKCE verifier cannot be read; start connecting again"
            )
        stored = credentials.reveal_credentials(conn, vault, row.account_id, [CLIENT_SECRET])
        return _Claim(
            account_id=row.account_id,
            workspace=row.workspace_id,
            name=row.name,
            provider=row.provider,
            config=config,
            verifier=verifier,
            client_secret=stored.get(CLIENT_SECRET),
            redirect_uri=row.redirect_uri,
            requested=tuple(row.scopes or ()),
            return_to=row.return_to,
        )

    return write


def _record_problem(account_id: str, code: str, message: str, now: Callable[[], datetime]) -> WriteFn[None]:
    """What went wrong, on the account (a pending account goes to `error`; a reconnect keeps its status)."""

    def write(conn: Connection) -> None:
        problem = {"code": code, "message": message, "action": "reconnect", "at": now().isoformat()}
        conn.execute(update(accounts).where(accounts.c.id == account_id).values(last_error=problem))
        conn.execute(
            update(accounts)
            .where(accounts.c.id == account_id, accounts.c.status == "pending")
            .values(status="error")
        )
        announce_account(conn, account_id)

    return write


def _store_grant(
    vault: Vault, claim: _Claim, grant: TokenGrant, now: Callable[[], datetime]
) -> WriteFn[Connected]:
    def write(conn: Connection) -> Connected:
        at = now()
        values = {"access_token": Secret(grant.access_token)}
        if grant.refresh_token is not None:
            values["refresh_token"] = Secret(grant.refresh_token)
        else:  # a refresh token of an earlier grant must not outlive it
            credentials.delete_secret(claim.account_id, "refresh_token")(conn)
        credentials.put_secrets(vault, claim.account_id, values)(conn)
        scopes = grant.scopes if grant.scopes is not None else claim.requested
        conn.execute(
            update(accounts)
            .where(accounts.c.id == claim.account_id)
            .values(
                status="connected",
                scopes=list(scopes),
                token_expires_at=grant.expires_at,
                last_refreshed_at=at,
                verified_at=at,
                last_error=None,
                refresh_lease_owner=None,
                refresh_lease_expires_at=None,
                refresh_failures=0,  # a new grant starts with no backoff (integrations/tokens.py)
                refresh_retry_at=None,
            )
        )
        announce_account(conn, claim.account_id)
        return Connected(
            account_id=claim.account_id,
            name=claim.name,
            provider=claim.provider,
            scopes=tuple(scopes),
            missing_scopes=tuple(s for s in claim.requested if s not in scopes),
            expires_at=grant.expires_at,
            has_refresh_token=grant.refresh_token is not None,
            return_to=claim.return_to,
        )

    return write


# --- disconnecting: delete here, revoke there (RFC 7009) --------------------------------------------


@dataclass(frozen=True, slots=True)
class Revocation:
    id: str
    token_type_hint: str
    verdict: str  # "done" | "retry" | "failed" | "skipped" (taken by another process meanwhile)
    message: str


@dataclass(frozen=True, slots=True)
class Disconnected:
    account_id: str
    name: str
    provider: str
    tokens_deleted: int
    revocations: tuple[Revocation, ...]
    revocable: bool  # False: the provider has no revocation endpoint (end the grant at the provider)


def _account_row(conn: Connection, workspace: str, name: str) -> Any:
    row = conn.execute(
        select(accounts).where(accounts.c.workspace_id == workspace, accounts.c.name == name)
    ).one_or_none()
    if row is None:
        raise ConnectError("no_account", f"no account named {name!r}")
    if row.auth_kind != "oauth2":
        raise ConnectError(
            "not_oauth",
            f"account {name!r} is an {row.auth_kind} account; only OAuth accounts are disconnected "
            "(use `cosmogen accounts remove` to delete it)",
        )
    return row


def forget_tokens(
    vault: Vault, registry: Registry, workspace: str, name: str, now: Callable[[], datetime]
) -> WriteFn[tuple[Any, list[str], bool, int]]:
    """One transaction: the token ciphertexts deleted, the account `expired` saying "reconnect", and each
    token to revoke moved into the outbox (encrypted under a field of its own)."""
    # Ids drawn before the write (it may run twice); one per token at most.
    fresh = {hint: new_id() for hint in ("refresh_token", "access_token")}

    def write(conn: Connection) -> tuple[Any, list[str], bool, int]:
        at = now()
        row = _account_row(conn, workspace, name)
        provider = registry.providers.get(row.provider)
        revoke_url = None
        if provider is not None:
            try:
                revoke_url = client_config(provider, row.settings).revoke_url
            except OAuthError:
                revoke_url = None  # settings broken: the grant cannot be revoked from here
        tokens = credentials.reveal_credentials(conn, vault, row.id, TOKEN_FIELDS)
        queued = []
        if revoke_url is not None:
            # The refresh token first: revoking it ends the whole grant (RFC 7009 §2.1).
            for hint in ("refresh_token", "access_token"):
                if hint not in tokens:
                    continue
                outbox_id = fresh[hint]
                field_name = f"revoke_{outbox_id.lower()}"
                credentials.put_secrets(vault, row.id, {field_name: tokens[hint]})(conn)
                conn.execute(
                    oauth_revocations.insert().values(
                        id=outbox_id,
                        account_id=row.id,
                        field=field_name,
                        token_type_hint=hint,
                        revoke_url=revoke_url,
                        next_attempt_at=at,
                        created_at=at,
                    )
                )
                queued.append(outbox_id)
        deleted = 0
        for token_field in TOKEN_FIELDS:
            deleted += int(credentials.delete_secret(row.id, token_field)(conn))
        # Connections in progress for this account end too.
        conn.execute(
            update(oauth_flows)
            .where(oauth_flows.c.account_id == row.id, oauth_flows.c.used_at.is_(None))
            .values(used_at=at)
        )
        if deleted or row.status == "connected":
            problem = {
                "code": "disconnected",
                "message": f"disconnected on {at:%Y-%m-%d %H:%M} UTC; reconnect it "
                f"(`cosmogen accounts connect {name} --provider {row.provider} ...`) to use it again",
                "action": "reconnect",
                "at": at.isoformat(),
            }
            conn.execute(
                update(accounts)
                .where(accounts.c.id == row.id)
                .values(
                    status="expired",
                    token_expires_at=None,
                    last_error=problem,
                    refresh_lease_owner=None,
                    refresh_lease_expires_at=None,
                    refresh_failures=0,
                    refresh_retry_at=None,
                    version=accounts.c.version + 1,
                )
            )
            announce_account(conn, row.id)
        return row, queued, revoke_url is not None, deleted

    return write


async def disconnect(
    db: Database,
    writer: GroupCommitWriter,
    vault: Vault,
    http: HttpClient,
    registry: Registry,
    *,
    workspace: str,
    name: str,
    now: Callable[[], datetime],
) -> Disconnected:
    """Disconnect an OAuth account: its tokens deleted here and revoked at the provider. Revocations the
    endpoint does not take now stay in the outbox for `deliver_revocations`; so do ones left from an
    earlier disconnect, which are retried now. Raises ConnectError for an unknown or non-OAuth account."""
    row, queued, revocable, deleted = await writer.write(forget_tokens(vault, registry, workspace, name, now))
    with db.engine.connect() as conn:
        waiting = conn.execute(
            select(oauth_revocations.c.id)
            .where(oauth_revocations.c.account_id == row.id, oauth_revocations.c.status == "pending")
            .order_by(oauth_revocations.c.created_at, oauth_revocations.c.id)
        ).scalars()
        ids = [*queued, *(i for i in waiting if i not in queued)]
    done = await deliver_revocations(writer, vault, http, registry, now=now, ids=ids)
    return Disconnected(row.id, row.name, row.provider, deleted, tuple(done), revocable)


@dataclass(frozen=True)
class _Taken:
    id: str
    hint: str
    url: str
    secret_field: str
    attempts: int
    config: OAuthClientConfig | None
    token: Secret | None = field(repr=False)
    client_secret: Secret | None = field(repr=False)
    problem: str | None


def _take(
    vault: Vault, registry: Registry, outbox_id: str, force: bool, now: Callable[[], datetime]
) -> WriteFn[_Taken | None]:
    def write(conn: Connection) -> _Taken | None:
        at = now()
        due = or_(oauth_revocations.c.next_attempt_at.is_(None), oauth_revocations.c.next_attempt_at <= at)
        condition = and_(oauth_revocations.c.id == outbox_id, oauth_revocations.c.status == "pending")
        taken = conn.execute(
            update(oauth_revocations)
            .where(condition if force else and_(condition, due))
            .values(next_attempt_at=at + _CLAIM, attempts=oauth_revocations.c.attempts + 1)
        ).rowcount
        if not taken:
            return None
        row = conn.execute(
            select(oauth_revocations, accounts.c.provider, accounts.c.settings)
            .join(accounts, accounts.c.id == oauth_revocations.c.account_id)
            .where(oauth_revocations.c.id == outbox_id)
        ).one()
        provider = registry.providers.get(row.provider)
        config, problem = None, None
        try:
            if provider is None:
                raise OAuthError(f"the provider {row.provider!r} is no longer known")
            config = client_config(provider, row.settings)
        except OAuthError as exc:
            problem = f"the account's OAuth settings: {exc}"
        stored = credentials.reveal_credentials(conn, vault, row.account_id, [row.field, CLIENT_SECRET])
        if row.field not in stored:
            problem = "the token to revoke is no longer stored"
        return _Taken(
            row.id,
            row.token_type_hint,
            row.revoke_url,
            row.field,
            row.attempts,
            config,
            stored.get(row.field),
            stored.get(CLIENT_SECRET),
            problem,
        )

    return write


def _settle(
    taken: _Taken, verdict: RevocationVerdict, message: str, now: Callable[[], datetime]
) -> WriteFn[str]:
    def write(conn: Connection) -> str:
        at = now()
        outcome = verdict.value
        values: dict[str, Any] = {
            "last_error": None
            if verdict is RevocationVerdict.DONE
            else {
                "code": outcome,
                "message": message,
                "at": at.isoformat(),
            }
        }
        if verdict is RevocationVerdict.RETRY:
            retry_at = revocation_retry_at(at, taken.attempts)
            if retry_at is None:
                outcome = RevocationVerdict.FAILED.value
                values["last_error"]["message"] = f"{message}; gave up after {taken.attempts} attempts"
            else:
                values["next_attempt_at"] = retry_at
        if outcome != RevocationVerdict.RETRY.value:
            values |= {"status": outcome, "done_at": at, "next_attempt_at": None}
            # Revoked, or never will be from here: the token is not kept any longer.
            account_id = conn.execute(
                select(oauth_revocations.c.account_id).where(oauth_revocations.c.id == taken.id)
            ).scalar_one()
            credentials.delete_secret(account_id, taken.secret_field)(conn)
        conn.execute(update(oauth_revocations).where(oauth_revocations.c.id == taken.id).values(**values))
        return outcome

    return write


async def _revoke(http: HttpClient, taken: _Taken) -> tuple[RevocationVerdict, str]:
    if taken.problem is not None or taken.token is None or taken.config is None:
        return RevocationVerdict.FAILED, taken.problem or "nothing to revoke"
    # RFC 7009 §2.1: the token in the form body, never in the URL; the client authenticated as usual.
    form = {"token": taken.token.reveal(), "token_type_hint": taken.hint}
    request = client_request(taken.url, taken.config, taken.client_secret, form)
    try:
        response = await http.send(request, retry=NO_RETRIES)
    except HttpCallError as exc:
        if exc.kind == "egress":
            return RevocationVerdict.FAILED, f"the revocation endpoint is not reachable: {exc}"
        return revocation_verdict(exc.status, exc.body)
    return revocation_verdict(response.status, response.body)


async def deliver_revocations(
    writer: GroupCommitWriter,
    vault: Vault,
    http: HttpClient,
    registry: Registry,
    *,
    now: Callable[[], datetime],
    ids: Sequence[str],
    force: bool = True,
) -> list[Revocation]:
    """Send the outbox entries `ids` (each taken in a transaction first, so two processes do not both
    send it); `force` ignores their backoff. Returns what happened to each."""
    done = []
    for outbox_id in ids:
        taken = await writer.write(_take(vault, registry, outbox_id, force, now))
        if taken is None:
            done.append(Revocation(outbox_id, "", "skipped", "taken by another process or settled"))
            continue
        verdict, message = await _revoke(http, taken)
        outcome = await writer.write(_settle(taken, verdict, message, now))
        done.append(Revocation(outbox_id, taken.hint, outcome, message))
    return done


def due_revocations(conn: Connection, at: datetime, limit: int = 50) -> list[str]:
    query = (
        select(oauth_revocations.c.id)
        .where(oauth_revocations.c.status == "pending", oauth_revocations.c.next_attempt_at <= at)
        .order_by(oauth_revocations.c.next_attempt_at, oauth_revocations.c.id)
        .limit(limit)
    )
    return [str(i) for i in conn.execute(query).scalars()]


def pending_revocations(conn: Connection, account_id: str | None = None) -> int:
    query = select(func.count()).where(oauth_revocations.c.status == "pending")
    if account_id is not None:
        query = query.where(oauth_revocations.c.account_id == account_id)
    return int(conn.execute(query).scalar_one())


async def retry_due_revocations(
    db: Database,
    writer: GroupCommitWriter,
    open_vault: Callable[[], Vault],
    http: HttpClient,
    registry: Registry,
    *,
    now: Callable[[], datetime],
    limit: int = 50,
) -> list[Revocation]:
    """One round of the outbox: the revocations whose backoff has passed. Opens the vault only when one
    is due (a runtime without OAuth accounts needs no key for this)."""
    with db.engine.connect() as conn:
        ids = due_revocations(conn, now(), limit)
    if not ids:
        return []
    return await deliver_revocations(writer, open_vault(), http, registry, now=now, ids=ids, force=False)


async def revocation_loop(
    db: Database,
    writer: GroupCommitWriter,
    open_vault: Callable[[], Vault],
    http: HttpClient,
    registry: Registry,
    *,
    now: Callable[[], datetime],
    every_s: float = 60.0,
) -> None:
    """Retry due revocations every `every_s` until cancelled; failures are logged, never raised."""
    while True:
        try:
            done = await retry_due_revocations(db, writer, open_vault, http, registry, now=now)
        except Exception:  # the vault or the database is unavailable now: next round
            log.exception("retrying OAuth revocations failed")
        else:
            for item in done:
                log.info("OAuth revocation %s: %s (%s)", item.id, item.verdict, item.message)
        await asyncio.sleep(every_s)
