"""The run journal: every durable write of a run, as write functions for the group-commit writer, and
the reads that resume a run. SQL for runs, node results, effects and run events lives here.

What is committed when (ARCHITECTURE.md, "durability"): the run when it is queued (and started, in the
same commit when this process runs it at once); an effect's intent before its call and its outcome
after; a checkpoint every so many nodes or when someone asks to pause or cancel; and the end. Pure
operator nodes are recomputed from the last checkpoint on resume (the fabric is deterministic) and
recorded outcomes are reused, so neither costs an fsync of its own; their events ride in the next
commit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, func, insert, select, text, update
from sqlalchemy.dialects import postgresql, sqlite

from cosmogen.domain.runs import TRANSITIONS, IllegalTransition, RunStatus
from cosmogen.runtime import notify
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
    job_id: int | None = None
    waiting: dict[str, Any] | None = None


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
    """Events of one run waiting for the next commit, numbered in order.

    The process executing a run is the only writer of its events while it runs (a pause or cancel
    from elsewhere only sets `requested_action`; the executor logs it when it obeys), so the numbers
    are kept here instead of being read back on every commit; `next_seq` is read once when a run is
    picked up. A second executor of the same run would collide on (run_id, seq) and fail its write.
    """

    run_id: str
    next_seq: int = 0
    pending: list[Event] = field(default_factory=list)

    def add(self, type_: str, **payload: Any) -> None:
        self.pending.append(Event(type_, payload))

    def drain(self) -> list[dict[str, Any]]:
        now = utcnow()
        rows = [
            {
                "run_id": self.run_id,
                "seq": self.next_seq + i,
                "type": e.type,
                "payload": e.payload,
                "created_at": now,
            }
            for i, e in enumerate(self.pending)
        ]
        self.next_seq += len(self.pending)
        self.pending = []
        return rows


class StaleRun(Exception):
    """The run's row is not in the state this write expected (another process moved it on)."""


class RunOwned(StaleRun):
    """A live worker's job is executing the run; a second job for it stands down."""


# Statements built once: rebuilding `update(...).values(...)` per call costs more CPU than the commit.
_INSERT_RUN = insert(runs)
_INSERT_EVENTS = insert(run_events)
_INSERT_EFFECT = insert(effects)
_UPDATE_EFFECT = (
    update(effects)
    .where(effects.c.id == bindparam("effect_id"))
    .values(status=bindparam("status"), response=bindparam("response"), completed_at=bindparam("at"))
)
_CHECKPOINT = (
    update(runs)
    .where(runs.c.id == bindparam("rid"), runs.c.attempt == bindparam("fence"), runs.c.status == "running")
    .values(cursor=bindparam("cursor"), state=bindparam("state"), updated_at=bindparam("at"))
    .returning(runs.c.requested_action)
)
_FINISH = (
    update(runs)
    .where(
        runs.c.id == bindparam("rid"),
        runs.c.attempt == bindparam("fence"),
        runs.c.status.in_(bindparam("sources", expanding=True)),
    )
    .values(
        status=bindparam("status"),
        updated_at=bindparam("updated_at"),
        requested_action=bindparam("requested_action"),
        cursor=bindparam("cursor"),
        state=bindparam("state"),
        error=bindparam("error"),
        finished_at=bindparam("finished_at"),
        waiting=None,  # a run that moves on waits for nothing
    )
)
_REQUESTED = select(runs.c.requested_action).where(runs.c.id == bindparam("rid"))
# PostgreSQL only: is the queue job still being executed (by a worker with a heartbeat or not)?
_JOB_RUNNING = text("SELECT 1 FROM procrastinate_jobs WHERE id = :job AND status = 'doing'")
_SUMMARY = (
    update(universe_versions)
    .where(
        universe_versions.c.id
        == select(runs.c.version_id).where(runs.c.id == bindparam("rid")).scalar_subquery()
    )
    .values(last_run_summary=bindparam("summary"))
)
# For each target status, the statuses a run may come from (domain/runs.py decides; SQL enforces).
_SOURCES = {
    target: tuple(source.value for source, targets in TRANSITIONS.items() if target in targets)
    for target in RunStatus
}


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
) -> WriteFn[RunRecord]:
    """Queue a run; with `claimed_by`, also start it for that worker in the same commit (one fsync
    fewer for a run this process executes at once). Returns the record as written."""

    def write(conn: Connection) -> RunRecord:
        now = utcnow()
        started = claimed_by is not None
        conn.execute(
            _INSERT_RUN,
            {
                "id": run_id,
                "universe_id": universe_id,
                "version_id": version_id,
                "launch_id": launch_id,
                "trigger_id": trigger_id,
                "parent_run_id": parent_run_id,
                "status": (RunStatus.RUNNING if started else RunStatus.QUEUED).value,
                "dry_run": dry_run,
                "event": event,
                "cursor": 0,
                "state": state or {},
                "created_at": now,
                "updated_at": now,
                "worker_id": claimed_by,
                "attempt": 1 if started else 0,
                "started_at": now if started else None,
            },
        )
        log = EventLog(run_id)
        log.add("run.queued", dry_run=dry_run, parent=parent_run_id)
        if started:
            log.add("run.started", attempt=1, resumed_at=0)
        else:
            _enqueue(conn, run_id)
        _append(conn, log)
        return RunRecord(
            id=run_id,
            universe_id=universe_id,
            version_id=version_id,
            status=RunStatus.RUNNING if started else RunStatus.QUEUED,
            dry_run=dry_run,
            event=event,
            cursor=0,
            state=state or {},
            requested_action=None,
            error=None,
            attempt=1 if started else 0,
            parent_run_id=parent_run_id,
            launch_id=launch_id,
            trigger_id=trigger_id,
            created_at=now,
            started_at=now if started else None,
            finished_at=None,
        )

    return write


def start_run(run_id: str, worker_id: str, log: EventLog, *, job_id: int | None = None) -> WriteFn[RunRecord]:
    """queued -> running (or running -> running again after a crash), counting the attempt.

    `job_id` (PostgreSQL): the queue job asking. It may take a `running` run over only when the run's
    job is itself (redelivered after its worker died) or no longer running; otherwise RunOwned.
    """

    def write(conn: Connection) -> RunRecord:
        record = _load(conn, run_id)
        if record.status not in (RunStatus.QUEUED, RunStatus.RUNNING):
            raise StaleRun(f"run {run_id} is {record.status.value}, not queued")
        if (
            job_id is not None
            and record.status is RunStatus.RUNNING
            and record.job_id not in (None, job_id)
            and conn.execute(_JOB_RUNNING, {"job": record.job_id}).first() is not None
        ):
            raise RunOwned(f"run {run_id} is being executed by job {record.job_id}")
        now = utcnow()
        moved = conn.execute(
            update(runs)
            # Compare-and-set on the attempt: of two executors starting the run at once, one wins.
            .where(runs.c.id == run_id, runs.c.attempt == record.attempt)
            .values(
                status=RunStatus.RUNNING.value,
                worker_id=worker_id,
                job_id=job_id,
                attempt=record.attempt + 1,
                started_at=func.coalesce(runs.c.started_at, now),
                updated_at=now,
                waiting=None,  # left by a process that died while its call waited
            )
        ).rowcount
        if moved != 1:
            raise StaleRun(f"run {run_id} was started by another executor at the same moment")
        record.attempt += 1
        log.add("run.started", attempt=record.attempt, resumed_at=record.cursor)
        _append(conn, log)
        return record

    return write


def checkpoint(
    run_id: str,
    cursor: int,
    state: dict[str, Any],
    results: Sequence[dict[str, Any]],
    log: EventLog,
    *,
    attempt: int,
) -> WriteFn[str | None]:
    """Persist progress; returns the action another process requested meanwhile (pause/cancel) or None.

    `attempt` fences the write: if another executor has started the run since (a higher attempt), this
    one is a zombie and gets StaleRun instead of overwriting the newer state.
    """

    def write(conn: Connection) -> str | None:
        now = utcnow()
        row = conn.execute(
            _CHECKPOINT, {"rid": run_id, "fence": attempt, "cursor": cursor, "state": state, "at": now}
        ).first()
        if row is None:
            raise StaleRun(f"run {run_id} was taken over by a newer attempt than {attempt}")
        action = row[0]
        _put_results(conn, run_id, results, now)
        _append(conn, log)
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
    attempt: int | None = None,
) -> WriteFn[None]:
    """Move the run to `target` if the state machine allows it, with its last checkpoint and events.
    With `attempt` (an executor's own writes), only that attempt may move it (see `checkpoint`)."""

    def write(conn: Connection) -> None:
        now = utcnow()
        values: dict[str, Any] = {
            "status": target.value,
            "updated_at": now,
            "requested_action": None,
            "waiting": None,
        }
        if cursor is not None:
            values["cursor"] = cursor
        if state is not None:
            values["state"] = state
        if error is not None or target.terminal:
            values["error"] = error
        if target.terminal:
            values["finished_at"] = now
        # The status check rides in the UPDATE itself: no read first, and no race with another process.
        if attempt is not None and cursor is not None and state is not None and target.terminal:
            # An executor's end of run, the hot path: one prebuilt statement.
            params = {**values, "rid": run_id, "fence": attempt, "sources": list(_SOURCES[target])}
            moved = conn.execute(_FINISH, params).rowcount
        else:
            where = [runs.c.id == run_id, runs.c.status.in_(_SOURCES[target])]
            if attempt is not None:
                where.append(runs.c.attempt == attempt)
            moved = conn.execute(update(runs).where(*where).values(**values)).rowcount
        if moved != 1:
            current = _load(conn, run_id)
            if attempt is not None and current.attempt != attempt:
                raise StaleRun(f"run {run_id} was taken over by attempt {current.attempt}")
            raise IllegalTransition(current.status, target)
        _put_results(conn, run_id, results, now)
        _append(conn, log)
        if target is RunStatus.QUEUED:
            _enqueue(conn, run_id)
        if summary is not None:
            conn.execute(_SUMMARY, {"rid": run_id, "summary": summary})

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
            _INSERT_EFFECT,
            {
                "run_id": run_id,
                "node_id": node_id,
                "binding_id": binding_id,
                "attempt_group": group,
                "idempotency_key": key,
                "method": method,
                "url": url,
                "request": request,
                "status": "intent",
                "created_at": utcnow(),
            },
        )
        _append(conn, log)
        primary = result.inserted_primary_key
        assert primary is not None
        return int(primary[0])

    return write


def record_outcome(
    effect_id: int, run_id: str, status: str, response: Any, log: EventLog, *, was_waiting: bool = False
) -> WriteFn[str | None]:
    """Record a call's outcome; returns the action another process requested meanwhile, if any.
    `was_waiting`: the call had set runs.waiting, which ends with it."""

    def write(conn: Connection) -> str | None:
        conn.execute(
            _UPDATE_EFFECT, {"effect_id": effect_id, "status": status, "response": response, "at": utcnow()}
        )
        if was_waiting:
            conn.execute(update(runs).where(runs.c.id == run_id).values(waiting=None))
        _append(conn, log)
        action = conn.execute(_REQUESTED, {"rid": run_id}).scalar_one()
        return None if action is None else str(action)

    return write


def set_waiting(run_id: str, waiting: dict[str, Any], log: EventLog) -> WriteFn[None]:
    """Say why the run waits and until when (its events go out with it, so listeners hear at once)."""

    def write(conn: Connection) -> None:
        conn.execute(update(runs).where(runs.c.id == run_id).values(waiting=waiting))
        _append(conn, log)

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
        notify.publish(conn, notify.CONTROL_CHANNEL, run_id)

    return write


def append_events(conn: Connection, log: EventLog) -> None:
    """Append pending events of a run that no executor is running (numbered after the last one)."""
    log.next_seq = next_event_seq(conn, log.run_id)
    _append(conn, log)


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
        job_id=row.job_id,
        waiting=row.waiting,
    )


def _append(conn: Connection, log: EventLog) -> None:
    rows = log.drain()
    if rows:
        conn.execute(_INSERT_EVENTS, rows)
        notify.publish(conn, notify.EVENTS_CHANNEL, f"{log.run_id}:{log.next_seq - 1}")


def _enqueue(conn: Connection, run_id: str) -> None:
    """A queued run needs a job on PostgreSQL, deferred in this same transaction (runtime/queue.py). On
    SQLite the owning process's executor or poller picks it up."""
    if conn.dialect.name == "postgresql":
        from cosmogen.runtime.queue import enqueue_run  # procrastinate is imported only where it is used

        enqueue_run(conn, run_id)


def _upsert_results(dialect: Any) -> Any:
    stmt = dialect.insert(node_results)
    return stmt.on_conflict_do_update(
        index_elements=[node_results.c.run_id, node_results.c.node_id],
        set_={name: stmt.excluded[name] for name in ("seq", "status", "output", "error", "finished_at")},
    )


# A node recomputed after a crash replaces its earlier row; built once per dialect (see _INSERT_RUN).
_UPSERT_RESULTS = {"postgresql": _upsert_results(postgresql), "sqlite": _upsert_results(sqlite)}


def _put_results(conn: Connection, run_id: str, results: Sequence[dict[str, Any]], now: datetime) -> None:
    if results:
        rows = [{"run_id": run_id, "started_at": now, "finished_at": now, **r} for r in results]
        conn.execute(_UPSERT_RESULTS[conn.dialect.name], rows)
