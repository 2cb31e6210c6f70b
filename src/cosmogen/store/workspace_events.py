"""A workspace's events outside any run, for the live stream: an account's or a launch's status changed.

Written in the transaction that made the change, into `run_events` (no run, no seq, `workspace_id` set), so
they share the stream's one cursor with run events and are sent only if the change commits. Payloads hold
ids, names, statuses and reason codes, never a secret or a person's message text.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import Connection, select

from cosmogen.store.signals import EVENTS_CHANNEL, publish
from cosmogen.store.tables import accounts, launches, run_events, universes

ACCOUNT_STATUS = "account.status"
LAUNCH_STATUS = "launch.status"


def write_workspace_event(conn: Connection, workspace_id: str, type_: str, data: Mapping[str, Any]) -> None:
    conn.execute(run_events.insert().values(workspace_id=workspace_id, type=type_, payload=dict(data)))
    publish(conn, EVENTS_CHANNEL, f"workspace:{workspace_id}")


def announce_account(conn: Connection, account_id: str, *, status: str | None = None) -> None:
    """The account's status as it stands in this transaction (`status`: instead, e.g. `removed` just
    before the row is deleted). An account that does not exist says nothing."""
    row = conn.execute(
        select(accounts.c.workspace_id, accounts.c.name, accounts.c.provider, accounts.c.status,
               accounts.c.last_error).where(accounts.c.id == account_id)
    ).one_or_none()  # fmt: skip
    if row is None:
        return
    data: dict[str, Any] = {
        "account_id": account_id,
        "account": row.name,
        "provider": row.provider,
        "status": status or row.status,
    }
    error = row.last_error if isinstance(row.last_error, Mapping) else None
    if error is not None and status is None:
        # What went wrong and what to do, as codes: the message may quote a provider's words.
        data.update({k: error[k] for k in ("code", "action") if isinstance(error.get(k), str)})
    write_workspace_event(conn, str(row.workspace_id), ACCOUNT_STATUS, data)


def announce_launch(conn: Connection, launch_id: str) -> None:
    """The launch's status as it stands in this transaction."""
    row = conn.execute(
        select(universes.c.workspace_id, launches.c.universe_id, launches.c.version_id, launches.c.status)
        .join(universes, universes.c.id == launches.c.universe_id)
        .where(launches.c.id == launch_id)
    ).one_or_none()
    if row is None:
        return
    data = {"launch_id": launch_id, "universe_id": row.universe_id, "version_id": row.version_id,
            "status": row.status}  # fmt: skip
    write_workspace_event(conn, str(row.workspace_id), LAUNCH_STATUS, data)
