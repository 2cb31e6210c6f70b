"""The run journal: every durable write of a run, as write functions for the group-commit writer, and
the reads that resume a run. SQL for runs, node results, effects and run events lives here.

What is committed when (ARCHITECTURE.md, "durability"): the run when it is queued and started; an
effect's intent before its call and its outcome after; a checkpoint after every node that made a call;
and the end. Pure operator nodes in between are recomputed from the last checkpoint on resume (the
fabric is deterministic), so they cost no fsync of their own; their events ride in the next commit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, insert, select, update

from cosmogen.domain.runs import RunStatus, check_transition
from cosmogen.store.tables import effects, node_results, run_events, runs, universe_versions, utcnow
from cosmogen.store.writer import WriteFn


@dataclass(frozen=True, slots=True)
class Event:
    type: str
    payload: dict[str, Any]


@dataclass(slots=True)
class RunRecord:
    id: str
    universe_id: str
    version_id: str
    status: RunStatus
    dry_run: bool
    event: dict[str, Any]
    cursor: int
    state: dict[str, Any]
    requested_action: str | None
    error: dict[str, Any] | None
    attempt: int
    parent_run_id: str | None
    launch_id: str | None
    trigger_id: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


@dataclass(frozen=True, slots=True)
class EffectRecord:
    id: int
    node_id: str
    binding_id: str
    attempt_group: int
    idempotency_key: str
    status: str
    response: Any


@dataclass(slots=True)
class EventLog:
    """Events of one run waiting for the next commit. They are numbered when written, inside the
    transaction, because other processes (a pause request, say) append to the same run's log."""

    run_id: str
    pending: list[Event] = field(default_factory=list)

    def add(self, type_: str, **payload: Any) -> None:
        self.pending.append(Event(type_, payload))

    def drain(self) -> list[Event]:
        events, self.pending = self.pending, []
        return events


class StaleRun(Exception):
    """The run's row is not in the state this write expected (another process moved it on)."""


# --- writes ---------------------------------------------------------------------------------------


def create_run(
    *,
    run_id: str,
    universe_id: str,
    version_id: str,
    event: dict[str, Any],
    dry_run: bool,
    state: dict[str, Any] | None = None,
    parent_run_id: str | None = None,
    launch_id: str | None = None,
    trigger_id: str | None = None,
    claimed_by: str | None = None,
) -> WriteFn[str]:
    """Queue a run; with `claimed_by`, also start it for that worker in the same commit (one fsync
    fewer for a run this process executes at once)."""

    def write(conn: Connection) -> str:
        now = utcnow()
        started = claimed_by is not None
        conn.execute(
            insert(runs).values(
                id=run_id,
                universe_id=universe_id,
                version_id=version_id,
                launch_id=launch_id,
                trigger_id=trigger_id,
                parent_run_id=parent_run_id,
                status=(RunStatus.RUNNING if started else RunStatus.QUEUED).value,
                dry_run=dry_run,
                event=event,
                cursor=0,
                state=state or {},
                created_at=now,
                updated_at=now,
                worker_id=claimed_by,
                attempt=1 if started else 0,
                started_at=now if started else None,
            )
        )
        events = [Event("run.queued", {"dry_run": dry_run, "parent": parent_run_id})]
        if started:
            events.append(Event("run.started", {"attempt": 1, "resumed_at": 0}))
        _append(conn, run_id, events)
        return run_id

    return write


def start_run(run_id: str, worker_id: str, log: EventLog) -> WriteFn[RunRecord]:
    """queued -> running (or running -> running again after a crash), counting the attempt."""

    def write(conn: Connection) -> RunRecord:
        record = _load(conn, run_id)
        if record.status not in (RunStatus.QUEUED, RunStatus.RUNNING):
            raise StaleRun(f"run {run_id} is {record.status.value}, not queued")
        now = utcnow()
        conn.execute(
            update(runs)
            .where(runs.c.id == run_id)
            .values(
                status=RunStatus.RUNNING.value,
                worker_id=worker_id,
                attempt=runs.c.attempt + 1,
                started_at=func.coalesce(runs.c.started_at, now),
                updated_at=now,
            )
        )
        record.attempt += 1
        log.add("run.started", attempt=record.attempt, resumed_at=record.cursor)
        _append(conn, run_id, log.drain())
        return record

    return write


def checkpoint(
    run_id: str, cursor: int, state: dict[str, Any], results: Sequence[dict[str, Any]], log: EventLog
) -> WriteFn[str | None]:
    """Persist progress; returns the action another process requested meanwhile (pause/cancel) or None."""

    def write(conn: Connection) -> str | None:
        now = utcnow()
        conn.execute(
            update(runs).where(runs.c.id == run_id).values(cursor=cursor, state=state, updated_at=now)
        )
        _put_results(conn, run_id, results, now)
        _append(conn, run_id, log.drain())
        action = conn.execute(select(runs.c.requested_action).where(runs.c.id == run_id)).scalar_one()
        return None if action is None else str(action)

    return write


def transition(
    run_id: str,
    target: RunStatus,
    log: EventLog,
    *,
    cursor: int | None = None,
    state: dict[str, Any] | None = None,
    results: Sequence[dict[str, Any]] = (),
    error: dict[str, Any] | None = None,
    summary: dict[str, Any] | None = None,
) -> WriteFn[None]:
    """Move the run to `target` if the state machine allows it, with its last checkpoint and events."""

    def write(conn: Connection) -> None:
        record = _load(conn, run_id)
        check_transition(record.status, target)
        now = utcnow()
        values: dict[str, Any] = {"status": target.value, "updated_at": now, "requested_action": None}
        if cursor is not None:
            values["cursor"] = cursor
        if state is not None:
            values["state"] = state
        if error is not None or target.terminal:
            values["error"] = error
        if target.terminal:
            values["finished_at"] = now
        conn.execute(update(runs).where(runs.c.id == run_id).values(**values))
        _put_results(conn, run_id, results, now)
        _append(conn, run_id, log.drain())
        if summary is not None:
            conn.execute(
                update(universe_versions)
                .where(universe_versions.c.id == record.version_id)
                .values(last_run_summary=summary)
            )

    return write


def record_intent(
    run_id: str,
    node_id: str,
    binding_id: str,
    group: int,
    key: str,
    method: str,
    url: str,
    request: Any,
    log: EventLog,
) -> WriteFn[int]:
    def write(conn: Connection) -> int:
        result = conn.execute(
            insert(effects).values(
                run_id=run_id,
                node_id=node_id,
                binding_id=binding_id,
                attempt_group=group,
                idempotency_key=key,
                method=method,
                url=url,
                request=request,
                status="intent",
                created_at=utcnow(),
            )
        )
        _append(conn, run_id, log.drain())
        primary = result.inserted_primary_key
        assert primary is not None
        return int(primary[0])

    return write


def record_outcome(effect_id: int, run_id: str, status: str, response: Any, log: EventLog) -> WriteFn[None]:
    def write(conn: Connection) -> None:
        conn.execute(
            update(effects)
            .where(effects.c.id == effect_id)
            .values(status=status, response=response, completed_at=utcnow())
        )
        _append(conn, run_id, log.drain())

    return write


def set_effect_status(effect_id: int, status: str) -> WriteFn[None]:
    def write(conn: Connection) -> None:
        conn.execute(update(effects).where(effects.c.id == effect_id).values(status=status))

    return write


def request_action(run_id: str, action: str | None) -> WriteFn[None]:
    def write(conn: Connection) -> None:
        conn.execute(
            update(runs).where(runs.c.id == run_id).values(requested_action=action, updated_at=utcnow())
        )

    return write


def transition_events(conn: Connection, run_id: str, log: EventLog) -> None:
    """Append the pending events alone (for changes that are not a status transition)."""
    _append(conn, run_id, log.drain())


# --- reads ----------------------------------------------------------------------------------------


def load_run(conn: Connection, run_id: str) -> RunRecord:
    return _load(conn, run_id)


def next_event_seq(conn: Connection, run_id: str) -> int:
    value = conn.execute(select(func.max(run_events.c.seq)).where(run_events.c.run_id == run_id)).scalar()
    return 0 if value is None else int(value) + 1


def effects_of(conn: Connection, run_ids: Sequence[str]) -> dict[tuple[str, str, str], list[EffectRecord]]:
    """Effects by (run, node, binding), oldest attempt group first."""
    rows = conn.execute(
        select(effects)
        .where(effects.c.run_id.in_(list(run_ids)))
        .order_by(effects.c.attempt_group, effects.c.id)
    )
    found: dict[tuple[str, str, str], list[EffectRecord]] = {}
    for row in rows:
        found.setdefault((row.run_id, row.node_id, row.binding_id), []).append(
            EffectRecord(
                row.id,
                row.node_id,
                row.binding_id,
                row.attempt_group,
                row.idempotency_key,
                row.status,
                row.response,
            )
        )
    return found


def runs_in(conn: Connection, statuses: Sequence[RunStatus]) -> list[str]:
    rows = conn.execute(
        select(runs.c.id).where(runs.c.status.in_([s.value for s in statuses])).order_by(runs.c.created_at)
    )
    return [row.id for row in rows]


def events_of(conn: Connection, run_id: str, after_seq: int = -1) -> list[dict[str, Any]]:
    rows = conn.execute(
        select(run_events)
        .where(run_events.c.run_id == run_id, run_events.c.seq > after_seq)
        .order_by(run_events.c.seq)
    )
    return [
        {"seq": r.seq, "type": r.type, "payload": r.payload, "at": r.created_at.isoformat()} for r in rows
    ]


def node_results_of(conn: Connection, run_id: str) -> list[dict[str, Any]]:
    rows = conn.execute(
        select(node_results).where(node_results.c.run_id == run_id).order_by(node_results.c.seq)
    )
    return [dict(r._mapping) for r in rows]


# --- helpers --------------------------------------------------------------------------------------


def _load(conn: Connection, run_id: str) -> RunRecord:
    row = conn.execute(select(runs).where(runs.c.id == run_id)).first()
    if row is None:
        raise LookupError(f"no run {run_id!r}")
    return RunRecord(
        id=row.id,
        universe_id=row.universe_id,
        version_id=row.version_id,
        status=RunStatus(row.status),
        dry_run=bool(row.dry_run),
        event=row.event,
        cursor=row.cursor,
        state=row.state,
        requested_action=row.requested_action,
        error=row.error,
        attempt=row.attempt,
        parent_run_id=row.parent_run_id,
        launch_id=row.launch_id,
        trigger_id=row.trigger_id,
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
    )


def _append(conn: Connection, run_id: str, events: list[Event]) -> None:
    if events:
        first = next_event_seq(conn, run_id)
        now = utcnow()
        conn.execute(
            insert(run_events),
            [
                {"run_id": run_id, "seq": first + i, "type": e.type, "payload": e.payload, "created_at": now}
                for i, e in enumerate(events)
            ],
        )


def _put_results(conn: Connection, run_id: str, results: Sequence[dict[str, Any]], now: datetime) -> None:
    """Insert node results; a node recomputed after a crash replaces its earlier row."""
    if not results:
        return
    ids = [r["node_id"] for r in results]
    conn.execute(
        node_results.delete().where(node_results.c.run_id == run_id, node_results.c.node_id.in_(ids))
    )
    conn.execute(
        insert(node_results),
        [{"run_id": run_id, "started_at": now, "finished_at": now, **r} for r in results],
    )
