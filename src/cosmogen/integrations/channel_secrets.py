"""Notification channels' secrets in the vault (an SMTP password, a webhook channel's signing secret):
sealed like credentials, read back only by the alert sender (runtime/alerts.py).

Each value is AES-256-GCM under a data key of its own, wrapped by the database's current key. The
associated data binds the workspace, the channel (in the account slot) and the field
`alert_channel/<field>`, which no credential field can spell, so a sealed value moved to another channel,
workspace or row fails to decrypt. Rotation of the vault's keys re-wraps these rows too
(`rewrap_channel_secrets`, called by credentials.rewrap_batch).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, bindparam, delete, select, update

from cosmogen.integrations.keystore import current_key
from cosmogen.integrations.secret import Secret
from cosmogen.integrations.vault import Vault, VaultError
from cosmogen.store.tables import channel_secrets, notification_channels

FIELD_PREFIX = "alert_channel/"


def seal(
    conn: Connection,
    vault: Vault,
    *,
    workspace: str,
    channel_id: str,
    field: str,
    value: Secret,
    now: datetime,
) -> None:
    """Store `value` as the channel's `field`, replacing any previous one, under the current key."""
    key = current_key(conn, lock=True)
    if key is None:
        raise VaultError("this database has no vault key registered yet; open the vault once to create one")
    vault.use(key.key_id, key.check_value)
    sealed = vault.encrypt(workspace, channel_id, FIELD_PREFIX + field, value)
    conn.execute(
        delete(channel_secrets).where(
            channel_secrets.c.channel_id == channel_id, channel_secrets.c.field == field
        )
    )
    conn.execute(
        channel_secrets.insert().values(
            channel_id=channel_id,
            field=field,
            ciphertext=sealed.ciphertext,
            wrapped_key=sealed.wrapped_key,
            key_id=sealed.key_id,
            created_at=now,
        )
    )


def reveal(conn: Connection, vault: Vault, workspace: str, channel_id: str) -> dict[str, Secret]:
    """The channel's secrets, decrypted, for the sender only."""
    rows = conn.execute(select(channel_secrets).where(channel_secrets.c.channel_id == channel_id))
    return {
        row.field: vault.decrypt(
            workspace,
            channel_id,
            FIELD_PREFIX + row.field,
            bytes(row.ciphertext),
            bytes(row.wrapped_key),
            row.key_id,
        )
        for row in rows
    }


def rewrap_channel_secrets(
    conn: Connection, vault: Vault, target: str, older: Sequence[str], limit: int
) -> int:
    """Re-wrap up to `limit` channel secrets whose key is in `older` under `target` (one batch of
    `cosmogen keys rotate`); only wrapped_key and key_id change, each row conditioned on its old key id."""
    if not older or limit < 1:
        return 0
    query = (
        select(
            channel_secrets.c.channel_id,
            channel_secrets.c.field,
            channel_secrets.c.wrapped_key,
            channel_secrets.c.key_id,
            notification_channels.c.workspace_id,
        )
        .select_from(channel_secrets.join(notification_channels))
        .where(channel_secrets.c.key_id.in_(list(older)))
        .order_by(channel_secrets.c.channel_id, channel_secrets.c.field)
        .limit(limit)
    )
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(of=channel_secrets, skip_locked=True)
    changes: list[dict[str, Any]] = []
    for row in conn.execute(query).all():
        wrapped = vault.rewrap(
            row.workspace_id,
            row.channel_id,
            FIELD_PREFIX + row.field,
            bytes(row.wrapped_key),
            row.key_id,
            target,
        )
        changes.append({"c_id": row.channel_id, "f": row.field, "old": row.key_id, "w": wrapped, "k": target})
    if changes:
        conn.execute(
            update(channel_secrets)
            .where(
                and_(
                    channel_secrets.c.channel_id == bindparam("c_id"),
                    channel_secrets.c.field == bindparam("f"),
                    channel_secrets.c.key_id == bindparam("old"),
                )
            )
            .values(wrapped_key=bindparam("w"), key_id=bindparam("k")),
            changes,
        )
    return len(changes)
