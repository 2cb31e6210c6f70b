"""Accounts as the executor needs them: found by name in the workspace, checked usable for a capability,
their secrets decrypted by the vault. Every refusal says what to do (reconnect, fix the binding, ...).

The vault opens on the first provider call, not at start-up, so a runtime with only HTTP bindings needs
no key; a missing or wrong key then fails that call with the vault's own message (and writes nothing).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import select

from cosmogen.domain.capabilities import Action, Capability, Failure, Provider
from cosmogen.domain.ratelimit import RateLimitSettingsError, limit_for
from cosmogen.integrations.connections import AccountUnavailable, Connection, provider_request
from cosmogen.integrations.http import HttpCallError, HttpClient
from cosmogen.store import Database
from cosmogen.store.tables import accounts

if TYPE_CHECKING:  # the vault imports `cryptography`: loaded on the first provider call, not at start
    from cosmogen.integrations.tokens import TokenManager
    from cosmogen.integrations.vault import Vault

ACCESS = "access_token"

_STATUS_ACTIONS = {
    "pending": ("is not connected yet: finish connecting it", Action.RECONNECT),
    "expired": ("has expired: reconnect it", Action.RECONNECT),
    "error": ("is in error: reconnect it or check its last error", Action.RECONNECT),
    "disabled": ("is disabled: enable it or pick another account", Action.FIX_SETTING),
}


class VaultOpener:
    """The vault, opened on first use and then shared (the resolver and the token manager use one);
    a vault that cannot open refuses the call with its own message."""

    def __init__(self, open_vault: Callable[[], Vault]) -> None:
        self._open_vault = open_vault
        self._vault: Vault | None = None
        self._lock = threading.Lock()

    def __call__(self) -> Vault:
        from cosmogen.integrations.vault import VaultError

        with self._lock:
            if self._vault is None:
                try:
                    self._vault = self._open_vault()
                except VaultError as exc:
                    raise AccountUnavailable(
                        f"the credential vault cannot open: {exc}", Action.CONTACT_PROVIDER
                    ) from None
            return self._vault


class DbAccountResolver:
    """With a token manager, an OAuth account's access token comes from it (refreshed when due, and
    once more after a provider refused it); without one, an expired token is refused."""

    def __init__(
        self,
        db: Database,
        open_vault: Callable[[], Vault],
        now: Callable[[], datetime],
        tokens: TokenManager | None = None,
    ) -> None:
        self._db = db
        self._vault_or_refuse = open_vault if isinstance(open_vault, VaultOpener) else VaultOpener(open_vault)
        self._now = now
        self._tokens = tokens

    async def connection(
        self, workspace: str, account: str, capability: Capability, provider: Provider
    ) -> Connection:
        found = await asyncio.to_thread(self._connection, workspace, account, capability, provider)
        if found.auth_kind == "oauth2" and self._tokens is not None:
            token = await self._tokens.access_token(found.account_id)
            expires = self._tokens.expires_at(found.account_id) or found.token_expires_at
            found = replace(found, secrets={ACCESS: token}, token_expires_at=expires)
        return found

    async def refreshed(self, connection: Connection) -> Connection:
        """The connection with a new access token after a provider refused the one it carries (one
        forced refresh, shared with every caller that saw the same refusal)."""
        if connection.auth_kind != "oauth2" or self._tokens is None:
            raise AccountUnavailable(
                f"account {connection.name!r}'s credential was refused: reconnect it", Action.RECONNECT
            )
        refused = connection.secrets.get(ACCESS)
        token = await self._tokens.access_token(connection.account_id, rejected=refused)
        expires = self._tokens.expires_at(connection.account_id)
        return replace(connection, secrets={ACCESS: token}, token_expires_at=expires)

    def _connection(
        self, workspace: str, name: str, capability: Capability, provider: Provider
    ) -> Connection:
        from cosmogen.integrations.credentials import reveal_credentials

        with self._db.engine.connect() as conn:
            row = conn.execute(
                select(accounts).where(accounts.c.workspace_id == workspace, accounts.c.name == name)
            ).one_or_none()
            if row is None:
                raise AccountUnavailable(
                    f"no account named {name!r} in this workspace; connect one, or fix the binding's account",
                    Action.FIX_SETTING,
                )
            if provider.id != "http" and row.provider != provider.id:
                raise AccountUnavailable(
                    f"account {name!r} is a {row.provider} account, and {capability.id} needs a "
                    f"{provider.id} account",
                    Action.FIX_SETTING,
                )
            if row.status != "connected":
                said, action = _STATUS_ACTIONS.get(row.status, ("is not usable", Action.RECONNECT))
                raise AccountUnavailable(f"account {name!r} {said}", action)
            missing = [
                s for s in capability.scopes if row.auth_kind == "oauth2" and s not in (row.scopes or [])
            ]
            if missing:
                raise AccountUnavailable(
                    f"account {name!r} lacks the scope(s) {', '.join(missing)} that {capability.id} needs; "
                    "reconnect it granting them",
                    Action.RECONNECT,
                )
            managed = row.auth_kind == "oauth2" and self._tokens is not None  # its token comes from there
            expires = row.token_expires_at
            if row.auth_kind == "oauth2" and not managed and expires is not None and expires <= self._now():
                raise AccountUnavailable(
                    f"account {name!r}'s access token has expired: reconnect it", Action.RECONNECT
                )
            try:
                limit = limit_for(row.provider, row.id, row.settings)
            except RateLimitSettingsError as exc:
                raise AccountUnavailable(f"account {name!r}: {exc}", Action.FIX_SETTING) from None
            base_url = row.base_url or provider.base_url
            if not base_url:
                raise AccountUnavailable(
                    f"account {name!r} has no base URL, which {provider.name} accounts need",
                    Action.FIX_SETTING,
                )
            secrets = (
                reveal_credentials(conn, self._vault_or_refuse(), row.id)
                if row.auth_kind != "none" and not managed
                else {}
            )
        if row.auth_kind != "none" and not managed and not secrets:
            raise AccountUnavailable(
                f"account {name!r} has no credential stored: reconnect it", Action.RECONNECT
            )
        return Connection(
            account_id=row.id,
            name=row.name,
            provider=row.provider,
            auth_kind=row.auth_kind,
            base_url=base_url,
            secrets=secrets,
            limit=limit,
            tier=row.tier,
            verified=row.verified_at is not None,
            token_expires_at=row.token_expires_at,
        )


async def probe_account(http: HttpClient, provider: Provider, connection: Connection) -> Failure | None:
    """Send the provider's cheap read with the account's credential: None when it was accepted, else
    what went wrong and what to do. Call only for providers with a `probe`."""
    assert provider.probe is not None
    request = provider_request(provider, connection, provider.probe, timeout_s=15.0)
    try:
        response = await http.send(request)
    except HttpCallError as exc:
        if exc.status is not None:
            found = provider.failure(exc.status, exc.body)
            if found is not None:
                return Failure(found.code, connection.scrub(found.message), found.action, found.retryable)
        return Failure(f"{provider.id}.unreachable", connection.scrub(str(exc)), Action.FIX_SETTING)
    return provider.failure(response.status, response.body)
