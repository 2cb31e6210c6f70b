"""Run dispatch on PostgreSQL: every queued run is a procrastinate job, and any worker process may take it.

What procrastinate gives us (not home-made): claims with `FOR UPDATE SKIP LOCKED`, LISTEN/NOTIFY wake-ups,
worker heartbeats, and a `queueing_lock` so a run never has two jobs waiting. What we add:

- the job is deferred in the *same transaction* that makes the run queued (`enqueue_run`), so a run is
  never queued without a job, nor a job left for a run that was rolled back;
- a sweeper that hands the jobs of a worker whose heartbeat stopped (killed, frozen, cut off) back to
  the queue, so another worker resumes its runs within `stalled_after_s` plus a sweep;
- `reconcile`, which gives a job to every unfinished run that has none (runs from before this
  revision, or a database restored from a backup).

Two jobs of one run never execute it at once: a job takes a `running` run over only if the run's
recorded job is itself redelivered or no longer running (journal.start_run). procrastinate's own `lock`
would say the same, but its claim query compares every waiting job with every other: 0.37 s per claim
with 5,000 runs queued, against 7.5 ms without (EXPLAIN ANALYZE of procrastinate_fetch_job_v2).
A run's attempt fence (journal.start_run/checkpoint) is what makes a redelivery safe even when the
"dead" worker was only frozen and wakes up later: its next write fails and it stops.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, text
from sqlalchemy.engine import make_url

from cosmogen.domain.runs import RunStatus

RUN_QUEUE = "cosmogen-runs"
RUN_TASK = "cosmogen.run"


@dataclass(frozen=True, slots=True)
class WorkerOptions:
    concurrency: int = 64
    # Liveness: a worker beats every `heartbeat_s`; one silent for `stalled_after_s` is dead and its
    # jobs go back to the queue at the next sweep. 2 + 10 + 2 s keeps redelivery well inside 30 s.
    heartbeat_s: float = 2.0
    stalled_after_s: float = 10.0
    sweep_every_s: float = 2.0
    # How long a stopping worker waits for its runs to park at a node boundary.
    shutdown_s: float = 20.0


def conninfo(database_url: str) -> str:
    """libpq connection string for procrastinate, from our SQLAlchemy URL (`postgresql+psycopg://...`)."""
    return make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)


def enqueue_run(conn: Connection, run_id: str) -> bool:
    """Defer the run's job inside the caller's transaction (procrastinate's `connection=` parameter).

    Returns False when the run already has a job waiting (its `queueing_lock` is the run id): that job
    will run it, so nothing is lost, and the savepoint keeps the caller's transaction usable.
    """
    # Imported here: procrastinate costs a quarter of a second to import, and SQLite never needs it.
    from procrastinate import SyncPsycopgConnector
    from procrastinate.exceptions import AlreadyEnqueued
    from procrastinate.jobs import Job
    from procrastinate.manager import JobManager

    job = Job(
        id=None,
        queue=RUN_QUEUE,
        task_name=RUN_TASK,
        lock=None,
        queueing_lock=run_id,
        task_kwargs={"run_id": run_id},
    )
    try:
        with conn.begin_nested():
            # Never opened: with an explicit connection, the connector only formats the query.
            JobManager(SyncPsycopgConnector()).defer_job(job, connection=conn.connection.driver_connection)
    except AlreadyEnqueued:
        return False
    return True


_ORPHANS = text(
    """
    SELECT r.id FROM runs r
     WHERE r.status IN (:queued, :running)
       AND NOT EXISTS (
           SELECT 1 FROM procrastinate_jobs j
            WHERE j.queueing_lock = r.id AND j.status IN ('todo', 'doing'))
    """
)


def reconcile(conn: Connection) -> list[str]:
    """Give a job to each unfinished run that has none; returns their ids."""
    rows = conn.execute(_ORPHANS, {"queued": RunStatus.QUEUED.value, "running": RunStatus.RUNNING.value})
    return [run_id for run_id in (str(row[0]) for row in rows) if enqueue_run(conn, run_id)]
