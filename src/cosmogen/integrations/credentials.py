"""Accounts (a minimal slice) and their encrypted secret fields, as write functions for the writer.

Secrets are write-only here: `put_secret` stores, `delete_secret` removes, `secret_fields` lists names.
The only way back to a value is `reveal_credentials`, which returns `Secret` objects for the executor to
put into a request; nothing else in this module returns or logs plaintext.

Write functions follow the writer's contract (store/writer.py): they may run more than once, touch the
database only through `conn`, and draw ids before they are built. Each write wraps its data key under the
database's current key (keystore.current_key), read in the same transaction, so a process started before
`cosmogen keys rotate` switches to the new key as soon as it is registered.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Table, and_, bindparam, delete, func, select, update
from sqlalchemy.dialects import postgresql, sqlite

from cosmogen.integrations.channel_secrets import rewrap_channel_secrets
from cosmogen.integrations.keystore import current_key
from cosmogen.integrations.secret import Secret
from cosmogen.integrations.vault import Vault, VaultError
from cosmogen.integrations.webhook_secrets import rewrap_webhook_secrets
from cosmogen.store.tables import (
    ACCOUNT_AUTH_KINDS,
    ACCOUNT_STATUSES,
    ACCOUNT_TIERS,
    accounts,
    channel_secrets,
    credentials,
    new_id,
    oauth_flows,
    utcnow,
    webhook_secrets,
)
from cosmogen.store.workspace_events import announce_account
from cosmogen.store.writer import GroupCommitWriter, WriteFn

_FIELD = re.compile(r"[a-z][a-z0-9_]{0,63}")


class NotFound(LookupError):
    """No account with that id."""


def oauth_verifier_field(state_hash: str) -> str:
    """The field name an OAuth flow's PKCE verifier is sealed under: bound to its flow, not only its
    account, so a verifier cannot be moved to another flow of the same account."""
    return f"pkce_verifier/{state_hash}"


def _check_field(name: str) -> None:
    if not _FIELD.fullmatch(name):
        raise ValueError(f"secret field {name!r}: use 1-64 lower-case letters, digits or '_', e.g. api_key")


# --- accounts (minimal: create, read, set status; the full model comes with the providers) ---------


@dataclass(frozen=True, slots=True)
class AccountRecord:
    id: str
    workspace_id: str
    provider: str
    name: str
    auth_kind: str
    scopes: list[str]
    tier: str
    status: str
    base_url: str | None
    settings: dict[str, Any]
    last_error: dict[str, Any] | None
    version: int
    created_at: datetime
    updated_at: datetime


def create_account(
    *,
    workspace_id: str,
    provider: str,
    name: str,
    auth_kind: str,
    scopes: Sequence[str] = (),
    tier: str = "sandbox",
    base_url: str | None = None,
    settings: Mapping[str, Any] | None = None,
    account_id: str | None = None,
) -> WriteFn[str]:
    """Insert an account (status `pending`); returns its id. Settings are not secret: never put a secret
    there (use put_secret)."""
    if auth_kind not in ACCOUNT_AUTH_KINDS:
        raise ValueError(f"auth_kind {auth_kind!r}: expected one of {', '.join(ACCOUNT_AUTH_KINDS)}")
    if tier not in ACCOUNT_TIERS:
        raise ValueError(f"tier {tier!r}: expected one of {', '.join(ACCOUNT_TIERS)}")
    new = account_id or new_id()  # drawn now: a re-run of the write inserts the same id
    row = {
        "id": new,
        "workspace_id": workspace_id,
        "provider": provider,
        "name": name,
        "auth_kind": auth_kind,
        "scopes": list(scopes),
        "tier": tier,
        "base_url": base_url,
        "settings": dict(settings or {}),
    }

    def write(conn: Connection) -> str:
        conn.execute(accounts.insert().values(**row))
        announce_account(conn, new)
        return new

    return write


def get_account(conn: Connection, account_id: str) -> AccountRecord | None:
    row = conn.execute(select(accounts).where(accounts.c.id == account_id)).one_or_none()
    if row is None:
        return None
    return AccountRecord(
        id=row.id,
        workspace_id=row.workspace_id,
        provider=row.provider,
        name=row.name,
        auth_kind=row.auth_kind,
        scopes=list(row.scopes),
        tier=row.tier,
        status=row.status,
        base_url=row.base_url,
        settings=dict(row.settings),
        last_error=row.last_error,
        version=row.version,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def set_account_status(
    account_id: str, status: str, *, last_error: Mapping[str, Any] | None = None
) -> WriteFn[None]:
    """Set the status (and last_error: what went wrong and what to do, never a secret)."""
    if status not in ACCOUNT_STATUSES:
        raise ValueError(f"status {status!r}: expected one of {', '.join(ACCOUNT_STATUSES)}")
    error = dict(last_error) if last_error is not None else None

    def write(conn: Connection) -> None:
        result = conn.execute(
            update(accounts).where(accounts.c.id == account_id).values(status=status, last_error=error)
        )
        if result.rowcount == 0:
            raise NotFound(f"no account {account_id!r}")
        announce_account(conn, account_id)

    return write


def mark_refused(account_id: str, problem: Mapping[str, Any]) -> WriteFn[bool]:
    """A provider refused the account's credential (a 401, Slack `invalid_auth`...): a `connected`
    account becomes `error` with what to do, so later runs are refused at once instead of calling with a
    dead credential. Any other status is left alone (a person may have disabled it meanwhile). Returns
    whether it changed."""
    error = dict(problem)

    def write(conn: Connection) -> bool:
        result = conn.execute(
            update(accounts)
            .where(accounts.c.id == account_id, accounts.c.status == "connected")
            .values(status="error", last_error=error, updated_at=utcnow())
        )
        if result.rowcount:
            announce_account(conn, account_id)
        return bool(result.rowcount)

    return write


# --- secrets -------------------------------------------------------------------------------------


def _workspace_of(conn: Connection, account_id: str) -> str:
    workspace = conn.execute(select(accounts.c.workspace_id).where(accounts.c.id == account_id)).scalar()
    if workspace is None:
        raise NotFound(f"no account {account_id!r}")
    return str(workspace)


def _use_current_key(conn: Connection, vault: Vault) -> None:
    key = current_key(conn, lock=True)
    if key is None:
        raise VaultError("this database has no vault key registered yet; open the vault once to create one")
    vault.use(key.key_id, key.check_value)


def _upsert(conn: Connection) -> Any:
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    stmt = dialect.insert(credentials)
    return stmt.on_conflict_do_update(
        index_elements=[credentials.c.account_id, credentials.c.field],
        set_={
            "ciphertext": stmt.excluded.ciphertext,
            "wrapped_key": stmt.excluded.wrapped_key,
            "key_id": stmt.excluded.key_id,
            "updated_at": stmt.excluded.updated_at,
        },
    )


def put_secrets(vault: Vault, account_id: str, values: Mapping[str, Secret]) -> WriteFn[None]:
    """Store (insert or replace) secret fields of an account, each under a new data key, and bump the
    account's version (compare-and-set for token refreshes)."""
    for name, value in values.items():
        _check_field(name)
        if not isinstance(value, Secret):
            raise TypeError(f"field {name!r}: pass a Secret, not {type(value).__name__}")
    items = dict(values)

    def write(conn: Connection) -> None:
        workspace = _workspace_of(conn, account_id)
        _use_current_key(conn, vault)
        now = utcnow()
        rows = []
        for name, value in items.items():
            sealed = vault.encrypt(workspace, account_id, name, value)
            rows.append(
                {
                    "account_id": account_id,
                    "field": name,
                    "ciphertext": sealed.ciphertext,
                    "wrapped_key": sealed.wrapped_key,
                    "key_id": sealed.key_id,
                    "created_at": now,
                    "updated_at": now,
                }
            )
        if rows:
            conn.execute(_upsert(conn), rows)
        conn.execute(
            update(accounts).where(accounts.c.id == account_id).values(version=accounts.c.version + 1)
        )

    return write


def put_secret(vault: Vault, account_id: str, field_name: str, value: Secret) -> WriteFn[None]:
    return put_secrets(vault, account_id, {field_name: value})


def delete_secret(account_id: str, field_name: str) -> WriteFn[bool]:
    """Remove one secret field; True if it existed."""

    def write(conn: Connection) -> bool:
        result = conn.execute(
            delete(credentials).where(
                credentials.c.account_id == account_id, credentials.c.field == field_name
            )
        )
        if result.rowcount:
            conn.execute(
                update(accounts).where(accounts.c.id == account_id).values(version=accounts.c.version + 1)
            )
        return bool(result.rowcount)

    return write


def secret_fields(conn: Connection, account_id: str) -> list[str]:
    """The names of the stored secret fields (what the API shows: a field is set, never its value)."""
    query = (
        select(credentials.c.field)
        .where(credentials.c.account_id == account_id)
        .order_by(credentials.c.field)
    )
    return [str(f) for f in conn.execute(query).scalars()]


def reveal_credentials(
    conn: Connection, vault: Vault, account_id: str, fields: Iterable[str] | None = None
) -> dict[str, Secret]:
    """Decrypt an account's secret fields, for the executor to use in a request. The values stay
    `Secret` (masked in any repr or log) until the request is built with `.reveal()`."""
    workspace = _workspace_of(conn, account_id)
    query = select(credentials).where(credentials.c.account_id == account_id)
    if fields is not None:
        query = query.where(credentials.c.field.in_(list(fields)))
    out: dict[str, Secret] = {}
    for row in conn.execute(query):
        out[row.field] = vault.decrypt(
            workspace, account_id, row.field, bytes(row.ciphertext), bytes(row.wrapped_key), row.key_id
        )
    return out


# --- rotation: re-wrap data keys under the current key -------------------------------------------


def rows_to_rewrap(conn: Connection, older: Sequence[str]) -> int:
    if not older:
        return 0
    total = 0
    for table in (credentials, oauth_flows, webhook_secrets, channel_secrets):
        total += int(conn.execute(select(func.count()).where(table.c.key_id.in_(list(older)))).scalar_one())
    return total


def _rewrap_table(
    conn: Connection,
    vault: Vault,
    table: Table,
    target: str,
    older: list[str],
    limit: int,
) -> int:
    is_flow = table is oauth_flows
    key_col = table.c.state_hash if is_flow else table.c.field
    wrapped_col = table.c.verifier_wrapped_key if is_flow else table.c.wrapped_key
    query = (
        select(
            table.c.account_id,
            key_col.label("k"),
            wrapped_col.label("w"),
            table.c.key_id,
            accounts.c.workspace_id,
        )
        .join(accounts, accounts.c.id == table.c.account_id)
        .where(table.c.key_id.in_(older))
        .order_by(table.c.account_id, key_col)
        .limit(limit)
    )
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(of=table, skip_locked=True)
    rows = conn.execute(query).all()
    if not rows:
        return 0
    changes = []
    for row in rows:
        field_name = oauth_verifier_field(row.k) if is_flow else row.k
        new_wrapped = vault.rewrap(
            row.workspace_id, row.account_id, field_name, bytes(row.w), row.key_id, target
        )
        changes.append({"a": row.account_id, "k": row.k, "old": row.key_id, "w": new_wrapped, "t": target})
    # Only the wrapped key and its key id change; the ciphertext and updated_at stay as they were.
    values: dict[str, Any] = {wrapped_col.name: bindparam("w"), "key_id": bindparam("t")}
    if "updated_at" in table.c:
        values["updated_at"] = table.c.updated_at
    stmt = (
        update(table)
        .where(
            and_(
                table.c.account_id == bindparam("a"),
                key_col == bindparam("k"),
                table.c.key_id == bindparam("old"),
            )
        )
        .values(values)
    )
    conn.execute(stmt, changes)
    return len(changes)


def rewrap_batch(vault: Vault, target: str, older: Sequence[str], limit: int) -> WriteFn[int]:
    """Re-wrap up to `limit` rows whose key is in `older` under `target`; returns how many."""
    if limit < 1:
        raise ValueError("limit must be at least 1")
    older_ids = list(older)

    def write(conn: Connection) -> int:
        if not older_ids:
            return 0
        done = _rewrap_table(conn, vault, credentials, target, older_ids, limit)
        if done < limit:
            done += _rewrap_table(conn, vault, oauth_flows, target, older_ids, limit - done)
        if done < limit:
            done += rewrap_webhook_secrets(conn, vault, target, older_ids, limit - done)
        if done < limit:
            done += rewrap_channel_secrets(conn, vault, target, older_ids, limit - done)
        return done

    return write


def rewrap_all(
    writer: GroupCommitWriter,
    read: Callable[[Callable[[Connection], int]], int],
    vault: Vault,
    target: str,
    older: Sequence[str],
    *,
    batch_size: int = 100,
    on_batch: Callable[[int, int], None] = lambda done, left: None,
    max_batches: int | None = None,
) -> int:
    """Re-wrap every row of an older key, `batch_size` rows per transaction, until none is left (rows
    another process writes meanwhile under an older key are picked up too). Returns rows re-wrapped.

    `read(fn)` runs `fn(conn)` on a read connection. Safe to kill at any point: each batch commits on its
    own, and a re-run picks up the rows still under an older key.
    """
    done = 0
    batches = 0
    while max_batches is None or batches < max_batches:
        n = writer.submit(rewrap_batch(vault, target, older, batch_size)).result()
        batches += 1
        left = read(lambda conn: rows_to_rewrap(conn, older))
        done += n
        if n:
            on_batch(done, left)
        if left == 0:
            break
        if n == 0:
            time.sleep(0.05)  # PostgreSQL: the rows left are locked by other writers; let them commit
    return done
