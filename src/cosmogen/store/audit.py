"""Writing an audit-log row: a write function for any transaction (the API's, the token manager's).

`details` must hold no secret: names, statuses, field names, never a value. A value that is not a plain
JSON scalar, list or mapping is refused, so a `Secret` cannot slip in (its str would be a mask anyway).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from cosmogen.store.tables import audit_log, new_id, utcnow

_PLAIN = (str, int, float, bool, type(None))


def _plain(value: Any, where: str) -> Any:
    if isinstance(value, _PLAIN):
        return value
    if isinstance(value, Mapping):
        return {str(k): _plain(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v, where) for v in value]
    raise TypeError(f"audit details {where}: {type(value).__name__} is not plain JSON")


def write_audit(
    conn: Connection,
    *,
    workspace_id: str,
    action: str,
    object_type: str,
    object_id: str | None,
    details: Mapping[str, Any] | None = None,
    actor_user_id: str | None = None,
    actor_credential_id: str | None = None,
    at: datetime | None = None,
) -> str:
    """Insert one entry in `conn`'s transaction; returns its id."""
    entry = new_id()
    conn.execute(
        audit_log.insert().values(
            id=entry,
            workspace_id=workspace_id,
            actor_user_id=actor_user_id,
            actor_credential_id=actor_credential_id,
            action=action,
            object_type=object_type,
            object_id=object_id,
            at=at or utcnow(),
            details=_plain(dict(details or {}), "details"),
        )
    )
    return entry
