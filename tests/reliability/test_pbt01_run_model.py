"""PBT-01: random sequences of run operations against the real journal (SQLite), checked against a
reference model: legal transitions only, a terminal state is reached once and kept, every
acknowledged run exists, and each run's events are numbered without gaps."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, rule

from cosmogen.domain.runs import (
    TERMINAL,
    IllegalTransition,
    RunAction,
    RunStatus,
    allowed_actions,
    can_transition,
)
from cosmogen.runtime import control, journal
from cosmogen.runtime.journal import EventLog, StaleRun
from cosmogen.store import Database, GroupCommitWriter, migrate, new_id, repos

DOCUMENT: dict[str, Any] = {"cosmogen": "universe/1", "name": "pbt", "nodes": [], "edges": []}


class RunModel(RuleBasedStateMachine):
    runs = Bundle("runs")

    def __init__(self) -> None:
        super().__init__()
        self._tmp = tempfile.TemporaryDirectory()
        self.db = Database.open(data_dir=Path(self._tmp.name))
        migrate.upgrade(self.db)
        self.writer = GroupCommitWriter(self.db)
        saved = self.writer.submit(
            lambda conn: repos.save_version(conn, workspace_id="w", name="pbt", document=DOCUMENT)
        ).result()
        self.universe_id, self.version_id = saved.universe_id, saved.version_id
        self.model: dict[str, RunStatus] = {}
        self.ended: dict[str, RunStatus] = {}

    def teardown(self) -> None:
        self.writer.close()
        self.db.close()
        self._tmp.cleanup()

    def _write(self, fn: Any) -> Any:
        return self.writer.submit(fn).result()

    def _log(self, run_id: str) -> EventLog:
        with self.db.engine.connect() as conn:
            return EventLog(run_id, journal.next_event_seq(conn, run_id))

    @rule(target=runs)
    def create(self) -> str:
        run_id = new_id()
        self._write(
            journal.create_run(
                run_id=run_id,
                universe_id=self.universe_id,
                version_id=self.version_id,
                event={},
                dry_run=False,
            )
        )
        self.model[run_id] = RunStatus.QUEUED
        return run_id

    @rule(run_id=runs)
    def start_or_restart_after_crash(self, run_id: str) -> None:
        expected_ok = self.model[run_id] in (RunStatus.QUEUED, RunStatus.RUNNING)
        try:
            self._write(journal.start_run(run_id, "worker", self._log(run_id)))
        except StaleRun:
            assert not expected_ok
        else:
            assert expected_ok
            self.model[run_id] = RunStatus.RUNNING

    @rule(run_id=runs, target_status=st.sampled_from(list(RunStatus)))
    def transition(self, run_id: str, target_status: RunStatus) -> None:
        expected_ok = can_transition(self.model[run_id], target_status)
        log = self._log(run_id)
        log.add(f"run.{target_status.value}")
        try:
            self._write(journal.transition(run_id, target_status, log, state={"cut": True}))
        except IllegalTransition:
            assert not expected_ok
        else:
            assert expected_ok
            self.model[run_id] = target_status

    @rule(run_id=runs, action=st.sampled_from([RunAction.PAUSE, RunAction.RESUME, RunAction.CANCEL]))
    def steer(self, run_id: str, action: RunAction) -> None:
        before = self.model[run_id]
        expected_ok = action in allowed_actions(before)
        try:
            after = self._write(control.act(run_id, action, orphans_owned=True))
        except IllegalTransition:
            assert not expected_ok
        else:
            assert expected_ok
            self.model[run_id] = after

    @rule(run_id=runs)
    def retry(self, run_id: str) -> None:
        try:
            child = self._write(control.retry(run_id))
        except IllegalTransition:
            assert self.model[run_id] is not RunStatus.FAILED
        else:
            assert self.model[run_id] is RunStatus.FAILED
            self.model[child] = RunStatus.QUEUED

    @invariant()
    def database_agrees_with_the_model(self) -> None:
        with self.db.engine.connect() as conn:
            for run_id, status in self.model.items():
                assert journal.load_run(conn, run_id).status is status
                seqs = [e["seq"] for e in journal.events_of(conn, run_id)]
                assert seqs == list(range(len(seqs)))

    @invariant()
    def terminal_states_are_reached_once_and_kept(self) -> None:
        for run_id, status in self.model.items():
            if run_id in self.ended:
                assert status is self.ended[run_id]
            elif status in TERMINAL:
                self.ended[run_id] = status


TestRunModel = RunModel.TestCase
TestRunModel.settings = settings(max_examples=200, stateful_step_count=50, deadline=None)
