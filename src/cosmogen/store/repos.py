"""Repository functions for universes and their versions, over a connection the caller owns.

Every function takes a `Connection` already inside a transaction (a write function handed to the
GroupCommitWriter, or `engine.begin()`), so several calls commit together or not at all.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import Connection, Insert, Row, func, select, update
from sqlalchemy.dialects import postgresql, sqlite

from cosmogen.store.tables import new_id, universe_versions, universes, utcnow


class NotFound(LookupError):
    """No row with that id."""


class SavedVersion(NamedTuple):
    universe_id: str
    version_id: str
    number: int
    created: bool  # False: the document was identical to the latest version, which is returned instead


@dataclass(frozen=True)
class UniverseRecord:
    id: str
    workspace_id: str
    name: str
    created_at: datetime
    updated_at: datetime
    active_version_id: str | None
    deployment_status: str


@dataclass(frozen=True)
class VersionSummary:
    id: str
    universe_id: str
    number: int
    label: str | None
    document_sha256: str
    created_at: datetime
    created_by: str | None
    last_run_summary: dict[str, Any] | None


@dataclass(frozen=True)
class VersionRecord(VersionSummary):
    document: dict[str, Any]


def canonical_json(document: Any) -> str:
    """One spelling per JSON value (sorted keys, no spaces, UTF-8 kept), so equal content hashes equal."""
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def document_sha256(document: Any) -> str:
    return hashlib.sha256(canonical_json(document).encode("utf-8")).hexdigest()


def save_version(
    conn: Connection,
    *,
    workspace_id: str,
    name: str,
    document: dict[str, Any],
    label: str | None = None,
    created_by: str | None = None,
) -> SavedVersion:
    """Save `document` as the next version of the universe called `name`, creating the universe if new.

    Saving under an existing name adds a version to that universe. If the document's content equals
    the latest version's, that version is returned (created=False) instead of a duplicate. The first
    version becomes the universe's active version; later ones wait to be deployed.
    """
    now = utcnow()
    digest = document_sha256(document)
    universe_id = _lock_or_create_universe(conn, workspace_id, name, now)
    latest = conn.execute(
        select(universe_versions.c.id, universe_versions.c.number, universe_versions.c.document_sha256)
        .where(universe_versions.c.universe_id == universe_id)
        .order_by(universe_versions.c.number.desc())
        .limit(1)
    ).first()
    if latest is not None and latest.document_sha256 == digest:
        return SavedVersion(universe_id, latest.id, latest.number, created=False)
    number = 1 if latest is None else latest.number + 1
    version_id = new_id()
    conn.execute(
        universe_versions.insert().values(
            id=version_id,
            universe_id=universe_id,
            number=number,
            label=label,
            document=document,
            document_sha256=digest,
            created_at=now,
            created_by=created_by,
        )
    )
    conn.execute(
        update(universes)
        .where(universes.c.id == universe_id)
        .values(updated_at=now, active_version_id=func.coalesce(universes.c.active_version_id, version_id))
    )
    return SavedVersion(universe_id, version_id, number, created=True)


def _lock_or_create_universe(conn: Connection, workspace_id: str, name: str, now: datetime) -> str:
    """The universe's id, its row locked until commit (PostgreSQL) so concurrent saves under one name,
    even from other processes, number their versions one after another instead of colliding."""
    values = {
        "id": new_id(),
        "workspace_id": workspace_id,
        "name": name,
        "created_at": now,
        "updated_at": now,
    }
    # ON CONFLICT DO NOTHING: if another transaction creates the same name first, we wait for it and
    # then use its row, rather than failing on the unique constraint.
    insert: Insert
    if conn.dialect.name == "postgresql":
        insert = postgresql.insert(universes).values(values).on_conflict_do_nothing()
    else:
        insert = sqlite.insert(universes).values(values).on_conflict_do_nothing()
    conn.execute(insert)
    # FOR UPDATE is dropped by SQLAlchemy on SQLite, where the writer's BEGIN IMMEDIATE already
    # serialises all writers.
    universe_id = conn.execute(
        select(universes.c.id)
        .where(universes.c.workspace_id == workspace_id, universes.c.name == name)
        .with_for_update()
    ).scalar_one()
    return str(universe_id)


def get_version(conn: Connection, version_id: str) -> VersionRecord | None:
    row = conn.execute(select(universe_versions).where(universe_versions.c.id == version_id)).first()
    return None if row is None else VersionRecord(**_summary_fields(row), document=row.document)


def list_universes(conn: Connection, workspace_id: str) -> list[UniverseRecord]:
    rows = conn.execute(
        select(universes).where(universes.c.workspace_id == workspace_id).order_by(universes.c.name)
    )
    return [UniverseRecord(**row._asdict()) for row in rows]


def list_versions(conn: Connection, universe_id: str) -> list[VersionSummary]:
    """The versions of one universe, oldest first, without their documents (which can be large)."""
    columns = [c for c in universe_versions.c if c.name != "document"]
    rows = conn.execute(
        select(*columns)
        .where(universe_versions.c.universe_id == universe_id)
        .order_by(universe_versions.c.number)
    )
    return [VersionSummary(**_summary_fields(row)) for row in rows]


def set_last_run_summary(conn: Connection, version_id: str, summary: dict[str, Any] | None) -> None:
    """Record what the latest run of this version did: the one mutable column of a version."""
    result = conn.execute(
        update(universe_versions).where(universe_versions.c.id == version_id).values(last_run_summary=summary)
    )
    if result.rowcount == 0:
        raise NotFound(f"no universe version {version_id!r}")


def _summary_fields(row: Row[Any]) -> dict[str, Any]:
    data = row._asdict()
    data.pop("document", None)
    return data
