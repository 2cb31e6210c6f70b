"""DUR-03: the database fails the N-th statement of a run, for N = 1, 2, ... until a run completes
untouched; once (a transient error) and persistently (until the faults stop). Whatever fails, nothing
is left half-written: after the faults stop the run finishes from what was committed, the provider
sees its call once after dedup by key, and `PRAGMA integrity_check` is ok."""

from __future__ import annotations

import asyncio
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event
from tests.reliability.test_dur07_zombie_executor import document

from cosmogen.domain.runs import RunStatus
from cosmogen.integrations.egress import EgressPolicy
from cosmogen.runtime import journal
from cosmogen.runtime.service import Runtime, RuntimeSettings
from cosmogen.testing.echo import EchoServer, ThreadedEchoServer


class Faults:
    """Raises an OperationalError on the N-th statement (once, or on every statement from then on)."""

    def __init__(self, nth: int, persistent: bool) -> None:
        self.nth, self.persistent = nth, persistent
        self.seen = 0
        self.raised = 0
        self.active = True

    def __call__(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if not self.active:
            return
        self.seen += 1
        if self.seen == self.nth or (self.persistent and self.seen > self.nth):
            self.raised += 1
            raise sqlite3.OperationalError("disk I/O error (injected)")


def run_with_faults(data: Path, echo: EchoServer, nth: int, persistent: bool) -> tuple[int, RunStatus, str]:
    settings = RuntimeSettings(data_dir=data, egress=EgressPolicy.from_strings(networks="127.0.0.1/32"))

    async def main() -> tuple[int, RunStatus, str]:
        runtime = await Runtime.open(settings)
        faults = Faults(nth, persistent)
        event.listen(runtime.db.engine, "before_cursor_execute", faults)
        run_id = ""
        try:
            try:
                submitted = await runtime.submit(document(echo.url))
                run_id = submitted.run_id
                await runtime.wait(run_id)
            except Exception:  # noqa: S110 - the injected failure; what matters is what was committed
                pass
            faults.active = False
            if not run_id:  # the submission itself failed: nothing may exist
                with runtime.db.engine.connect() as conn:
                    assert journal.runs_in(conn, list(RunStatus)) == []
                return faults.raised, RunStatus.CANCELLED, ""
            # the faults stopped: whatever is unfinished resumes, as after a restart
            with runtime.db.engine.connect() as conn:
                status = journal.load_run(conn, run_id).status
            if status in (RunStatus.QUEUED, RunStatus.RUNNING):
                await runtime.recover()
                status = await runtime.wait(run_id)
            return faults.raised, status, run_id
        finally:
            event.remove(runtime.db.engine, "before_cursor_execute", faults)
            await runtime.close()

    return asyncio.run(main())


@pytest.mark.parametrize("persistent", [False, True], ids=["once", "persistent"])
def test_injected_io_errors_leave_no_partial_state(tmp_path: Path, persistent: bool) -> None:
    with ThreadedEchoServer() as echo:
        nth = 0
        while True:
            nth += 1
            assert nth < 60, "the loop should reach a fault-free run"
            before = len(echo.requests)
            raised, status, run_id = run_with_faults(tmp_path / f"data{nth}", echo, nth, persistent)
            if run_id:
                assert status is RunStatus.SUCCEEDED, f"N={nth}: {status}"
                keys = Counter(r.headers["Idempotency-Key"] for r in echo.requests[before:])
                assert len(keys) == 1, f"N={nth}: {keys}"
            db_file = tmp_path / f"data{nth}" / "cosmogen.db"
            conn = sqlite3.connect(db_file)
            try:
                assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
            finally:
                conn.close()
            if raised == 0:
                break  # N is past the last statement of a run: the loop has covered every one
        assert nth > 15  # a run with one call takes over a dozen statements; each one failed in turn
