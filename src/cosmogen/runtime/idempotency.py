"""The Idempotency-Key store (reliability DUR-11): write functions for the group-commit writer, and the
periodic cleanup. The rules are domain/idempotency.py; this is where they meet the database.

An endpoint that takes a key does:

    claim = await writer.write(begin(ref, fingerprint(body), now))
    if claim.verdict is Verdict.REPLAY: answer claim.status, claim.body
    if claim.verdict is Verdict.MISMATCH: 422;  Verdict.IN_FLIGHT: 409
    ... do the work ...
    await writer.write(complete(ref, claim.owner, status, body, now))   # or release(ref, claim.owner)

`begin` inserts the key (ON CONFLICT DO NOTHING) or reads the row that is there, in one transaction: two
requests with one key cannot both proceed, in one process (the writer runs them one after the other) or
across processes (PostgreSQL waits on the conflicting insert, then the row lock). `complete` and
`release` touch the row only while the caller still owns it, so a request whose lease was taken over
cannot overwrite its successor's result. Only completed results are replayed; a failure releases the
key, so the client's retry runs the request again.

Rows live `ttl` (24 h) from their first request; `purge_expired` deletes them in batches, and the
runtime runs `purge_forever` in every serving or worker process.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, bindparam, delete, select, update
from sqlalchemy.dialects import postgresql, sqlite

from cosmogen.domain.idempotency import DEFAULT_LEASE, DEFAULT_TTL, StoredKey, Verdict, decide
from cosmogen.store.tables import idempotency_keys
from cosmogen.store.writer import GroupCommitWriter, WriteFn

log = logging.getLogger(__name__)

PURGE_EVERY_S = 600.0
PURGE_BATCH = 1000


@dataclass(frozen=True, slots=True)
class KeyRef:
    """(workspace, scope, key): the composite key. `scope` names the endpoint ("webhook:<trigger id>")."""

    workspace_id: str
    scope: str
    key: str

    def where(self) -> Any:
        return and_(
            idempotency_keys.c.workspace_id == self.workspace_id,
            idempotency_keys.c.scope == self.scope,
            idempotency_keys.c.key == self.key,
        )


@dataclass(frozen=True, slots=True)
class Claim:
    verdict: Verdict
    owner: str | None = None  # PROCEED: this request's claim, for complete/release
    status: int | None = None  # REPLAY: the stored response
    body: Any = None


def begin(
    ref: KeyRef,
    request_fingerprint: str,
    now: datetime,
    *,
    ttl: timedelta = DEFAULT_TTL,
    lease: timedelta = DEFAULT_LEASE,
) -> WriteFn[Claim]:
    """Claim the key for this request, or say why not (replay, mismatch, in flight)."""
    owner = secrets.token_hex(16)  # drawn here: the writer may run `write` twice
    fresh = {
        "fingerprint": request_fingerprint,
        "owner": owner,
        "lease_until": now + lease,
        "response_status": None,
        "response_body": None,
        "created_at": now,
        "expires_at": now + ttl,
    }

    def write(conn: Connection) -> Claim:
        dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
        # ON CONFLICT DO NOTHING, not catching the violation: on PostgreSQL a failed statement would abort
        # the writer's whole batch. RETURNING, not rowcount (which RETURNING turns into -1 there).
        inserted = conn.execute(
            dialect.insert(idempotency_keys)
            .values(workspace_id=ref.workspace_id, scope=ref.scope, key=ref.key, **fresh)
            .on_conflict_do_nothing()
            .returning(idempotency_keys.c.key)
        ).first()
        if inserted is not None:
            return Claim(Verdict.PROCEED, owner=owner)
        query = select(idempotency_keys).where(ref.where())
        if conn.dialect.name == "postgresql":
            query = query.with_for_update()
        row = conn.execute(query).one()
        stored = StoredKey(
            fingerprint=row.fingerprint,
            completed=row.response_status is not None,
            lease_until=row.lease_until,
            expires_at=row.expires_at,
        )
        verdict = decide(stored, request_fingerprint, now)
        if verdict is Verdict.PROCEED:  # expired, or a dead holder's lease: start over under our claim
            conn.execute(update(idempotency_keys).where(ref.where()).values(**fresh))
            return Claim(Verdict.PROCEED, owner=owner)
        if verdict is Verdict.REPLAY:
            return Claim(verdict, status=row.response_status, body=row.response_body)
        return Claim(verdict)

    return write


def complete(ref: KeyRef, owner: str, status: int, body: Any) -> WriteFn[bool]:
    """Store the response for replays; False if the claim was lost (taken over after its lease)."""

    def write(conn: Connection) -> bool:
        done = conn.execute(
            update(idempotency_keys)
            .where(ref.where(), idempotency_keys.c.owner == owner)
            .values(owner=None, lease_until=None, response_status=status, response_body=body)
            .returning(idempotency_keys.c.key)
        ).first()
        return done is not None

    return write


def release(ref: KeyRef, owner: str) -> WriteFn[bool]:
    """Forget the claim (the request failed): the client's retry proceeds as a new request."""

    def write(conn: Connection) -> bool:
        gone = conn.execute(
            delete(idempotency_keys)
            .where(ref.where(), idempotency_keys.c.owner == owner)
            .returning(idempotency_keys.c.key)
        ).first()
        return gone is not None

    return write


def purge_expired(now: datetime, limit: int = PURGE_BATCH) -> WriteFn[int]:
    """Delete up to `limit` keys that expired by `now`; returns how many."""

    def write(conn: Connection) -> int:
        rows = conn.execute(
            select(idempotency_keys.c.workspace_id, idempotency_keys.c.scope, idempotency_keys.c.key)
            .where(idempotency_keys.c.expires_at <= now)
            .order_by(idempotency_keys.c.expires_at)
            .limit(limit)
        ).all()
        if rows:
            conn.execute(
                delete(idempotency_keys).where(
                    idempotency_keys.c.workspace_id == bindparam("w"),
                    idempotency_keys.c.scope == bindparam("s"),
                    idempotency_keys.c.key == bindparam("k"),
                    idempotency_keys.c.expires_at <= now,
                ),
                [{"w": r.workspace_id, "s": r.scope, "k": r.key} for r in rows],
            )
        return len(rows)

    return write


async def purge_all(writer: GroupCommitWriter, now: datetime, limit: int = PURGE_BATCH) -> int:
    """Every expired key, a batch per transaction (the writer's other callers get turns in between)."""
    total = 0
    while True:
        n = await writer.write(purge_expired(now, limit))
        total += n
        if n < limit:
            return total


async def purge_forever(
    writer: GroupCommitWriter, clock: Callable[[], datetime], every_s: float = PURGE_EVERY_S
) -> None:
    """The runtime's cleanup: now, then every `every_s`."""
    while True:
        try:
            purged = await purge_all(writer, clock())
        except Exception:  # a database hiccup: try again next round
            log.exception("purging expired idempotency keys failed")
        else:
            if purged:
                log.info("purged %d expired idempotency keys", purged)
        await asyncio.sleep(every_s)
