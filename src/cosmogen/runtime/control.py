"""Run control from any process: pause, resume, cancel, retry, re-run, and answers to ambiguous effects.

Each action is one write function, so the status check and the change commit together. A running
run is not touched directly: the action is *requested* on its row and its executor obeys it at the
next checkpoint, whichever process that executor lives in.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, select

from cosmogen.domain.runs import IllegalTransition, RunAction, RunStatus, check_action
from cosmogen.runtime import journal
from cosmogen.runtime.executor import LAUNCH_CONFIG, run_metadata
from cosmogen.runtime.journal import EventLog
from cosmogen.store import new_id
from cosmogen.store.tables import effects
from cosmogen.store.writer import WriteFn


def act(run_id: str, action: RunAction, *, orphans_owned: bool = False) -> WriteFn[RunStatus]:
    """Apply `action`; returns the run's status afterwards (a requested action leaves it running).

    `orphans_owned`: the caller owns the data directory, so a `running` run has no live executor (its
    process died) and pause or cancel apply at once instead of waiting for a checkpoint.
    """

    def write(conn: Connection) -> RunStatus:
        record = journal.load_run(conn, run_id)
        check_action(record.status, action)
        if record.status is RunStatus.RUNNING and not orphans_owned:
            # Its executor owns the run's event log; it logs the request when it obeys it.
            journal.request_action(run_id, action.value)(conn)
            return RunStatus.RUNNING
        log = EventLog(run_id, journal.next_event_seq(conn, run_id))
        target = {
            RunAction.PAUSE: RunStatus.PAUSED,
            RunAction.RESUME: RunStatus.QUEUED,
            RunAction.CANCEL: RunStatus.CANCELLED,
            RunAction.RETRY_ANYWAY: RunStatus.QUEUED,
            RunAction.MARK_DONE: RunStatus.QUEUED,
        }[action]
        if action in (RunAction.RETRY_ANYWAY, RunAction.MARK_DONE, RunAction.CANCEL):
            _settle_ambiguous(conn, run_id, action)
        log.add(f"run.{action.value}")
        journal.transition(run_id, target, log)(conn)
        return target

    return write


def retry(run_id: str) -> WriteFn[str]:
    """A new run that starts again at the failed node, reusing the parent's calls made before it."""

    def write(conn: Connection) -> str:
        record = journal.load_run(conn, run_id)
        if record.status is not RunStatus.FAILED:
            raise IllegalTransition(record.status, RunAction.RESUME)
        results = journal.node_results_of(conn, run_id)
        failed = next((r for r in results if r["status"] == "error"), None)
        before = [r["node_id"] for r in results if failed is not None and r["seq"] < failed["seq"]]
        retry_state: dict[str, Any] = {
            "retry": {"of": run_id, "from": failed and failed["node_id"], "before": before}
        }
        return _child(conn, record, retry_state)

    return write


def rerun(run_id: str) -> WriteFn[str]:
    """A new run of the same version with the same event and mode."""

    def write(conn: Connection) -> str:
        record = journal.load_run(conn, run_id)
        return _child(conn, record, {})

    return write


def _child(conn: Connection, record: journal.RunRecord, state: dict[str, Any]) -> str:
    child_id = new_id()
    launch_config = run_metadata(record, LAUNCH_CONFIG)
    if launch_config is not None:
        # A retry or re-run of a launch's run runs under the same launch config (entry node, telemetry).
        state = {**state, LAUNCH_CONFIG: launch_config}
    journal.create_run(
        run_id=child_id,
        universe_id=record.universe_id,
        version_id=record.version_id,
        event=record.event,
        dry_run=record.dry_run,
        state=state,
        parent_run_id=record.id,
        launch_id=record.launch_id,
        trigger_id=record.trigger_id,
    )(conn)
    return child_id


def _settle_ambiguous(conn: Connection, run_id: str, action: RunAction) -> None:
    """Record the person's decision on the effect that stopped the run."""
    status = {
        RunAction.RETRY_ANYWAY: "cancelled",
        RunAction.MARK_DONE: "marked_done",
        RunAction.CANCEL: "cancelled",
    }
    rows = conn.execute(
        select(effects.c.id).where(effects.c.run_id == run_id, effects.c.status == "ambiguous")
    )
    for row in rows:
        journal.set_effect_status(row.id, status[action])(conn)
