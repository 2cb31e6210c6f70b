"""The offline sandbox: the provider simulator served next to `cosmogen serve`, and accounts that use it.

A fresh install has no provider accounts, so nothing with a provider binding could run. With the sandbox
on (the default for the embedded SQLite setup), `serve` starts the simulator on 127.0.0.1 and, the first
time, adds one account per provider, named `sandbox-<provider>`, tier `sandbox`, labelled as the
simulator. The simulator forgets its tokens when it stops, so every later start re-issues them and points
the sandbox accounts at its new address; accounts the user made are never touched, and a sandbox account
the user removed is not brought back.

The simulator is reached through one allowlist entry for its own address and port, never by turning
the egress guard off, so no other service on loopback opens with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import Connection, select, update

from cosmogen.domain.capabilities import Registry
from cosmogen.integrations import credentials
from cosmogen.integrations.secret import Secret
from cosmogen.integrations.vault import Vault
from cosmogen.store.tables import accounts, utcnow
from cosmogen.store.workspace_events import announce_account
from cosmogen.store.writer import WriteFn
from cosmogen.testing.simulator import DEFAULT_API_KEY, Simulator
from cosmogen.testing.simulator.server import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET

SANDBOX_MARK = "sandbox"  # accounts.settings["sandbox"] == SANDBOX_MARK: made and kept up by this module
LABEL = "Simulator on 127.0.0.1, not the real provider: for trying universes offline"
_API_KEY_PROVIDERS = ("openai", "anthropic")
_OAUTH_PROVIDERS = ("slack", "x", "instagram")


@dataclass(frozen=True, slots=True)
class SandboxAccount:
    name: str
    provider: str
    auth_kind: str
    base_url: str
    scopes: tuple[str, ...]
    settings: dict[str, Any]
    secrets: dict[str, Secret]
    token_expires_at: Any = None


def sandbox_accounts(sim: Simulator, registry: Registry) -> list[SandboxAccount]:
    """The accounts that point at `sim`, with fresh credentials its authorization server just issued."""
    made: list[SandboxAccount] = []
    base = {SANDBOX_MARK: SANDBOX_MARK, "label": LABEL}
    for provider in _API_KEY_PROVIDERS:
        made.append(
            SandboxAccount(
                f"sandbox-{provider}", provider, "api_key", sim.url, (), dict(base),
                {"api_key": Secret(DEFAULT_API_KEY)},
            )
        )  # fmt: skip
    for provider in _OAUTH_PROVIDERS:
        scopes = tuple(
            sorted({s for c in registry.capabilities.values() if c.provider == provider for s in c.scopes})
        )
        tokens = sim.oauth.issue(DEFAULT_CLIENT_ID, " ".join(scopes))
        secrets = {
            "access_token": Secret(tokens.access_token),
            "client_secret": Secret(DEFAULT_CLIENT_SECRET),
        }
        if tokens.refresh_token is not None:
            secrets["refresh_token"] = Secret(tokens.refresh_token)
        oauth = {
            "client_id": DEFAULT_CLIENT_ID,
            "authorize_url": f"{sim.url}/oauth/authorize",
            "token_url": f"{sim.url}/oauth/token",
            "revoke_url": f"{sim.url}/oauth/revoke",
            "issuer": sim.oauth.issuer,
        }
        base_url = f"{sim.url}/v21.0" if provider == "instagram" else sim.url
        expires = utcnow() + timedelta(seconds=tokens.expires_in) if tokens.expires_in else None
        made.append(
            SandboxAccount(
                f"sandbox-{provider}", provider, "oauth2", base_url, scopes, {**base, "oauth": oauth},
                secrets, expires,
            )
        )  # fmt: skip
    made.append(SandboxAccount("sandbox-http", "http", "none", f"{sim.url}/webhook", (), dict(base), {}))
    return made


def install(vault: Vault, workspace: str, wanted: list[SandboxAccount]) -> WriteFn[list[str]]:
    """One transaction: on a workspace with no account at all, create the sandbox accounts; otherwise
    refresh the ones this module made (address, tokens). Returns the names it touched."""

    def write(conn: Connection) -> list[str]:
        rows = conn.execute(
            select(accounts.c.id, accounts.c.name, accounts.c.settings).where(
                accounts.c.workspace_id == workspace
            )
        ).all()
        ours = {r.name: r.id for r in rows if (r.settings or {}).get(SANDBOX_MARK) == SANDBOX_MARK}
        fresh = not rows
        touched: list[str] = []
        for account in wanted:
            account_id = ours.get(account.name)
            if account_id is None:
                if not fresh:
                    continue  # removed by the user, or a name the user now uses: leave it alone
                account_id = credentials.create_account(
                    workspace_id=workspace,
                    provider=account.provider,
                    name=account.name,
                    auth_kind=account.auth_kind,
                    scopes=account.scopes,
                    tier="sandbox",
                    base_url=account.base_url,
                    settings=account.settings,
                )(conn)
            if account.secrets:
                credentials.put_secrets(vault, account_id, account.secrets)(conn)
            conn.execute(
                update(accounts)
                .where(accounts.c.id == account_id)
                .values(
                    base_url=account.base_url,
                    settings=account.settings,
                    scopes=list(account.scopes),
                    status="connected",
                    last_error=None,
                    verified_at=utcnow(),
                    token_expires_at=account.token_expires_at,
                )
            )
            announce_account(conn, account_id)
            touched.append(account.name)
        return touched

    return write
