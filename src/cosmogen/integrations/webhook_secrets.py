"""Webhook signing secrets in the vault: sealed like credentials, read back only to check a signature or
for the explicit `cosmogen launches reveal-webhook-secret`.

Each secret is AES-256-GCM under a data key of its own, wrapped by the database's current key (same
envelope as credentials, integrations/vault.py). The associated data binds the workspace, the trigger (in
the account slot) and the field `webhook_secret/<secret id>`, which no credential field can spell (those
are `[a-z][a-z0-9_]*`), so a sealed secret moved to another trigger, workspace or row fails to decrypt.

A trigger has one current secret (`expires_at` NULL) and, after a rotation, the one before it until its
grace period ends: at most two are valid at once. Rotation of the vault's keys re-wraps these rows too
(`rewrap_webhook_secrets`, called by credentials.rewrap_batch).

Write functions follow the writer's contract: values and ids are drawn before they are built.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, bindparam, delete, select, update

from cosmogen.domain.webhook_signature import SECRET_PREFIX
from cosmogen.integrations.keystore import current_key
from cosmogen.integrations.secret import Secret
from cosmogen.integrations.vault import Vault, VaultError
from cosmogen.store.tables import launches, triggers, universes, webhook_secrets

FIELD_PREFIX = "webhook_secret/"
DEFAULT_GRACE = timedelta(hours=24)


class NoSuchWebhook(LookupError):
    """No webhook trigger with that id."""


def new_signing_secret() -> Secret:
    """`whsec_` and 256 bits from `secrets`, base64url."""
    return Secret(SECRET_PREFIX + secrets.token_urlsafe(32))


def secret_field(secret_id: str) -> str:
    return FIELD_PREFIX + secret_id


@dataclass(frozen=True, slots=True)
class SealedSecret:
    secret_id: str
    ciphertext: bytes
    wrapped_key: bytes
    key_id: str
    expires_at: datetime | None


def workspace_of_trigger(conn: Connection, trigger_id: str) -> str:
    row = conn.execute(
        select(universes.c.workspace_id, triggers.c.kind)
        .select_from(triggers.join(launches).join(universes))
        .where(triggers.c.id == trigger_id)
    ).first()
    if row is None or row.kind != "webhook":
        raise NoSuchWebhook(f"no webhook trigger {trigger_id!r} (see `cosmogen launches list --json`)")
    return str(row.workspace_id)


def seal_secret(
    conn: Connection,
    vault: Vault,
    *,
    workspace: str,
    trigger_id: str,
    secret_id: str,
    value: Secret,
    now: datetime,
) -> None:
    """Insert `value` as the trigger's current secret, wrapped under the database's current key (read in
    this transaction, FOR SHARE on PostgreSQL, so a retirement cannot slip in between)."""
    key = current_key(conn, lock=True)
    if key is None:
        raise VaultError("this database has no vault key registered yet; open the vault once to create one")
    vault.use(key.key_id, key.check_value)
    sealed = vault.encrypt(workspace, trigger_id, secret_field(secret_id), value)
    conn.execute(
        webhook_secrets.insert().values(
            trigger_id=trigger_id,
            secret_id=secret_id,
            ciphertext=sealed.ciphertext,
            wrapped_key=sealed.wrapped_key,
            key_id=sealed.key_id,
            created_at=now,
            expires_at=None,
        )
    )


def retire_current(conn: Connection, trigger_id: str, *, now: datetime, grace: timedelta) -> None:
    """Before a new current secret: the current one stays valid for `grace`; any older one ends now."""
    conn.execute(
        delete(webhook_secrets).where(
            webhook_secrets.c.trigger_id == trigger_id,
            webhook_secrets.c.expires_at.is_not(None),
        )
    )
    if grace > timedelta(0):
        conn.execute(
            update(webhook_secrets)
            .where(webhook_secrets.c.trigger_id == trigger_id, webhook_secrets.c.expires_at.is_(None))
            .values(expires_at=now + grace)
        )
    else:
        conn.execute(delete(webhook_secrets).where(webhook_secrets.c.trigger_id == trigger_id))


def sealed_secrets(conn: Connection, trigger_id: str, now: datetime) -> list[SealedSecret]:
    """The trigger's secrets still valid at `now`, newest (the current one) first; still sealed."""
    rows = conn.execute(
        select(webhook_secrets)
        .where(
            webhook_secrets.c.trigger_id == trigger_id,
            (webhook_secrets.c.expires_at.is_(None)) | (webhook_secrets.c.expires_at > now),
        )
        .order_by(webhook_secrets.c.expires_at.is_not(None), webhook_secrets.c.created_at.desc())
    )
    return [
        SealedSecret(r.secret_id, bytes(r.ciphertext), bytes(r.wrapped_key), r.key_id, r.expires_at)
        for r in rows
    ]


def unseal(vault: Vault, workspace: str, trigger_id: str, sealed: SealedSecret) -> Secret:
    return vault.decrypt(
        workspace,
        trigger_id,
        secret_field(sealed.secret_id),
        sealed.ciphertext,
        sealed.wrapped_key,
        sealed.key_id,
    )


# --- rotation of the vault's keys ----------------------------------------------------------------


def rewrap_webhook_secrets(
    conn: Connection, vault: Vault, target: str, older: Sequence[str], limit: int
) -> int:
    """Re-wrap up to `limit` secrets whose key is in `older` under `target` (one batch of `cosmogen keys
    rotate`); only wrapped_key and key_id change, each row conditioned on its old key id."""
    if not older or limit < 1:
        return 0
    query = (
        select(
            webhook_secrets.c.trigger_id,
            webhook_secrets.c.secret_id,
            webhook_secrets.c.wrapped_key,
            webhook_secrets.c.key_id,
            universes.c.workspace_id,
        )
        .select_from(webhook_secrets.join(triggers).join(launches).join(universes))
        .where(webhook_secrets.c.key_id.in_(list(older)))
        .order_by(webhook_secrets.c.trigger_id, webhook_secrets.c.secret_id)
        .limit(limit)
    )
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(of=webhook_secrets, skip_locked=True)
    changes: list[dict[str, Any]] = []
    for row in conn.execute(query).all():
        wrapped = vault.rewrap(
            row.workspace_id,
            row.trigger_id,
            secret_field(row.secret_id),
            bytes(row.wrapped_key),
            row.key_id,
            target,
        )
        changes.append(
            {"t_id": row.trigger_id, "s_id": row.secret_id, "old": row.key_id, "w": wrapped, "k": target}
        )
    if changes:
        conn.execute(
            update(webhook_secrets)
            .where(
                and_(
                    webhook_secrets.c.trigger_id == bindparam("t_id"),
                    webhook_secrets.c.secret_id == bindparam("s_id"),
                    webhook_secrets.c.key_id == bindparam("old"),
                )
            )
            .values(wrapped_key=bindparam("w"), key_id=bindparam("k")),
            changes,
        )
    return len(changes)
