"""Telling other processes (and this one's live feed) that something was committed: PostgreSQL NOTIFY sent
inside the writing transaction, or on SQLite a signal the group-commit writer hands to its in-process
subscribers after COMMIT. Listening is the runtime's business (runtime/notify.py); sending is here, so
any store write (the journal, an account's status change) can do it in its own transaction.

Channels:
- `cosmogen_run_events`: new rows in `run_events`, a run's (payload `<run id>:<last seq>`) or a
  workspace's (payload `workspace:<id>`);
- `cosmogen_control`, payload `<run id>`: someone asked a running run to pause or cancel.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, text

from cosmogen.store.writer import signal

EVENTS_CHANNEL = "cosmogen_run_events"
CONTROL_CHANNEL = "cosmogen_control"

_NOTIFY = text("SELECT pg_notify(:channel, :payload)")


@dataclass(frozen=True, slots=True)
class Notification:
    channel: str
    payload: str


def publish(conn: Connection, channel: str, payload: str) -> None:
    """Sent when (and only if) `conn`'s transaction commits."""
    if conn.dialect.name == "postgresql":
        conn.execute(_NOTIFY, {"channel": channel, "payload": payload})
    else:
        signal(conn, Notification(channel, payload))
