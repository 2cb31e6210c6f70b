"""OAuth accounts on the provider simulator, for tests of the token manager: a keyring shared by every
process of a test, an account whose grant the simulator issued, and reads of what storage holds.

Test-only: the connect flow (integrations/oauth_flow.py) is how real accounts get their grant.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select, update

from cosmogen.integrations import keystore
from cosmogen.integrations.credentials import (
    create_account,
    put_secrets,
    reveal_credentials,
    secret_fields,
    set_account_status,
)
from cosmogen.integrations.secret import Secret
from cosmogen.integrations.vault import KeySource, Vault, new_key
from cosmogen.store import Database
from cosmogen.store.tables import accounts

KEYS_ENV = "COSMOGEN_VAULT_KEYS"


def new_keyring() -> str:
    """A keyring (COSMOGEN_VAULT_KEYS's JSON) for one test: every process it starts gets the same."""
    return json.dumps({"active": "k1", "keys": {"k1": base64.b64encode(new_key()).decode()}})


def open_vault(db: Database, keyring: str) -> Vault:
    return keystore.open_vault(db, KeySource(Path("/nonexistent/vault.keys"), Secret(keyring)))


def oauth_settings(sim_url: str, client_id: str) -> dict[str, Any]:
    return {
        "oauth": {
            "client_id": client_id,
            "authorize_url": f"{sim_url}/oauth/authorize",
            "token_url": f"{sim_url}/oauth/token",
            "revoke_url": f"{sim_url}/oauth/revoke",
        }
    }


def connect(
    db: Database,
    vault: Vault,
    *,
    sim_url: str,
    client_id: str,
    client_secret: str,
    access_token: str,
    refresh_token: str | None,
    expires_at: datetime | None,
    name: str = "team-slack",
    provider: str = "slack",
    scopes: tuple[str, ...] = ("chat:write",),
    workspace: str = "default",
) -> str:
    """A connected OAuth account holding the simulator's grant; returns its id."""
    fields = {"access_token": Secret(access_token), "client_secret": Secret(client_secret)}
    if refresh_token is not None:
        fields["refresh_token"] = Secret(refresh_token)
    with db.engine.begin() as conn:
        account_id = create_account(
            workspace_id=workspace,
            provider=provider,
            name=name,
            auth_kind="oauth2",
            scopes=scopes,
            base_url=sim_url,
            settings=oauth_settings(sim_url, client_id),
        )(conn)
        put_secrets(vault, account_id, fields)(conn)
        set_account_status(account_id, "connected")(conn)
        conn.execute(update(accounts).where(accounts.c.id == account_id).values(token_expires_at=expires_at))
    return account_id


def set_expiry(db: Database, account_id: str, expires_at: datetime | None) -> None:
    """Move the stored expiry (what a clock passing does, as far as the token manager can tell)."""
    with db.engine.begin() as conn:
        conn.execute(update(accounts).where(accounts.c.id == account_id).values(token_expires_at=expires_at))


def store_grant(
    db: Database, vault: Vault, account_id: str, access: str, refresh: str | None, expires_at: datetime | None
) -> None:
    """Another writer saves a grant (a reconnect, or a process with a stale cache that refreshed)."""
    fields = {"access_token": Secret(access)}
    if refresh is not None:
        fields["refresh_token"] = Secret(refresh)
    with db.engine.begin() as conn:
        put_secrets(vault, account_id, fields)(conn)
        conn.execute(update(accounts).where(accounts.c.id == account_id).values(token_expires_at=expires_at))


@dataclass(frozen=True)
class StoredAccount:
    status: str
    version: int
    token_expires_at: datetime | None
    last_error: dict[str, Any] | None
    refresh_failures: int
    refresh_retry_at: datetime | None
    lease_owner: str | None
    lease_expires_at: datetime | None
    fields: list[str]
    access_token: str | None
    refresh_token: str | None


def stored(db: Database, vault: Vault, account_id: str) -> StoredAccount:
    """What storage holds for the account, values revealed (tests compare them with the simulator's)."""
    with db.engine.connect() as conn:
        row = conn.execute(select(accounts).where(accounts.c.id == account_id)).one()
        values = reveal_credentials(conn, vault, account_id)
        names = secret_fields(conn, account_id)
    access = values.get("access_token")
    refresh = values.get("refresh_token")
    return StoredAccount(
        status=row.status,
        version=row.version,
        token_expires_at=row.token_expires_at,
        last_error=row.last_error,
        refresh_failures=row.refresh_failures,
        refresh_retry_at=row.refresh_retry_at,
        lease_owner=row.refresh_lease_owner,
        lease_expires_at=row.refresh_lease_expires_at,
        fields=names,
        access_token=access.reveal() if access is not None else None,
        refresh_token=refresh.reveal() if refresh is not None else None,
    )
