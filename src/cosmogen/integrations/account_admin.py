"""Changing accounts the way a person does (the accounts API and the CLI share these): settle an account
after its test call, check non-secret settings, and remove an account with every row that belongs to it.

Nothing here returns or logs a secret value.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import Connection, delete, update

from cosmogen.domain.capabilities import Failure
from cosmogen.domain.ratelimit import RateLimitSettingsError, account_limits
from cosmogen.integrations import credentials
from cosmogen.store.tables import accounts, oauth_flows, oauth_revocations, utcnow
from cosmogen.store.tables import credentials as credential_rows
from cosmogen.store.workspace_events import announce_account
from cosmogen.store.writer import WriteFn

# Which secret field each auth kind stores (what a person types in), and the optional user name.
SECRET_FIELDS = {"api_key": ("api_key",), "basic": ("password", "username"), "none": ()}
# Fields the system keeps for itself (tokens waiting to be revoked): never shown, never set by a person.
_INTERNAL_PREFIX = "revoke_"


class SettingsError(ValueError):
    """The non-secret settings are wrong; the message says which rule."""


def check_settings(provider: str, settings: Any) -> dict[str, Any]:
    """A settings object that the rate limiter accepts, else SettingsError saying what is wrong."""
    if not isinstance(settings, Mapping):
        raise SettingsError("settings must be a JSON object")
    try:
        account_limits(provider, settings)
    except RateLimitSettingsError as exc:
        raise SettingsError(str(exc)) from None
    return dict(settings)


def visible_fields(fields: list[str]) -> list[str]:
    """The secret fields a person may see the names of (internal outbox fields left out)."""
    return sorted(f for f in fields if not f.startswith(_INTERNAL_PREFIX))


def settle(account_id: str, failure: Failure | None, *, verified: bool) -> WriteFn[str]:
    """After a test call: `error` with what to do, or `connected` (verified when a call proved it).
    Returns the new status."""

    def write(conn: Connection) -> str:
        if failure is not None:
            problem = {"code": failure.code, "message": failure.message, "action": failure.action.value}
            credentials.set_account_status(account_id, "error", last_error=problem)(conn)
            return "error"
        credentials.set_account_status(account_id, "connected")(conn)
        if verified:
            conn.execute(update(accounts).where(accounts.c.id == account_id).values(verified_at=utcnow()))
        return "connected"

    return write


def remove_account(account_id: str) -> WriteFn[bool]:
    """Delete an account, its encrypted secrets, its revocation outbox and its flows. True if it existed."""

    def write(conn: Connection) -> bool:
        conn.execute(delete(credential_rows).where(credential_rows.c.account_id == account_id))
        conn.execute(delete(oauth_revocations).where(oauth_revocations.c.account_id == account_id))
        conn.execute(delete(oauth_flows).where(oauth_flows.c.account_id == account_id))
        announce_account(conn, account_id, status="removed")
        return bool(conn.execute(delete(accounts).where(accounts.c.id == account_id)).rowcount)

    return write
