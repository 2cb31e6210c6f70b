"""Login throttling state in the store: one counter per account name and one per client address.

The decisions are in domain/login_throttle.py. The account key is the normalised email whether or not
such a user exists, so an unknown email is throttled exactly like a known one (no enumeration).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import Connection, delete, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from cosmogen.domain.login_throttle import (
    Counter,
    ThrottlePolicy,
    after_account_failure,
    after_ip_failure,
    wait_left,
)
from cosmogen.store.tables import login_throttle
from cosmogen.store.writer import WriteFn


def account_key(email: str) -> str:
    return "account:" + email.strip().lower()


def ip_key(address: str) -> str:
    return "ip:" + address


def _read(conn: Connection, key: str) -> Counter | None:
    row = conn.execute(select(login_throttle).where(login_throttle.c.key == key)).one_or_none()
    if row is None:
        return None
    return Counter(row.failures, row.window_start, row.locked_until)


def wait_for(conn: Connection, keys: list[str], now: datetime) -> timedelta:
    """How long these keys must still wait before an attempt is even checked."""
    found = [c for c in (_read(conn, k) for k in keys) if c is not None]
    return wait_left(found, now)


def _store(conn: Connection, key: str, counter: Counter, now: datetime) -> None:
    values = {
        "key": key,
        "failures": counter.failures,
        "window_start": counter.window_start,
        "last_failure_at": now,
        "locked_until": counter.locked_until,
    }
    insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    statement = insert(login_throttle).values(**values)
    conn.execute(
        statement.on_conflict_do_update(
            index_elements=[login_throttle.c.key],
            set_={k: statement.excluded[k] for k in values if k != "key"},
        )
    )


def record_failure(policy: ThrottlePolicy, account: str, address: str, now: datetime) -> WriteFn[None]:
    def write(conn: Connection) -> None:
        _store(conn, account, after_account_failure(policy, _read(conn, account), now), now)
        _store(conn, address, after_ip_failure(policy, _read(conn, address), now), now)

    return write


def record_success(account: str) -> WriteFn[None]:
    """A success resets the account's count (the address's window keeps counting its failures)."""

    def write(conn: Connection) -> None:
        conn.execute(delete(login_throttle).where(login_throttle.c.key == account))

    return write
