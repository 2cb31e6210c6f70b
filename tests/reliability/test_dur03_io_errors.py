"""DUR-03: the database fails the N-th statement of a run, for N = 1, 2, ... until a run completes
untouched; once (a transient error) and persistently (until the faults stop). Whatever fails, nothing
is left half-written: after the faults stop the run finishes from what was committed, the provider
sees its call once after dedup by key, and `PRAGMA integrity_check` is ok. On PostgreSQL the driver's
own OperationalError is injected, and the run is executed in this process (as a worker would)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import event
from tests.conftest import truncate_all
from tests.reliability.test_dur07_zombie_executor import document

from cosmogen.domain.runs import RunStatus
from cosmogen.integrations.egress import EgressPolicy
from cosmogen.runtime import journal
from cosmogen.runtime.service import Runtime, RuntimeSettings
from cosmogen.store import Database
from cosmogen.testing.echo import EchoServer, ThreadedEchoServer


class Faults:
    """Raises an OperationalError on the N-th statement (once, or on every statement from then on)."""

    def __init__(self, nth: int, persistent: bool, error: type[Exception]) -> None:
        self.nth, self.persistent, self.error = nth, persistent, error
        self.seen = 0
        self.raised = 0
        self.active = True

    def __call__(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if not self.active:
            return
        self.seen += 1
        if self.seen == self.nth or (self.persistent and self.seen > self.nth):
            self.raised += 1
            raise self.error("disk I/O error (injected)")


def run_with_faults(
    settings: RuntimeSettings, echo: EchoServer, nth: int, persistent: bool
) -> tuple[int, RunStatus, str]:
    error = psycopg.OperationalError if settings.database_url else sqlite3.OperationalError

    async def main() -> tuple[int, RunStatus, str]:
        runtime = await Runtime.open(settings)
        faults = Faults(nth, persistent, error)
        event.listen(runtime.db.engine, "before_cursor_execute", faults)
        run_id = ""
        try:
            try:
                submitted = await runtime.submit(document(echo.url))
                run_id = submitted.run_id
                await runtime.dispatch(run_id)  # SQLite: already running; PostgreSQL: queued, run it here
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
                if not runtime.queued:
                    await runtime.recover()
                status = await runtime.dispatch(run_id)
            return faults.raised, status, run_id
        finally:
            event.remove(runtime.db.engine, "before_cursor_execute", faults)
            await runtime.close()

    return asyncio.run(main())


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
@pytest.mark.parametrize("persistent", [False, True], ids=["once", "persistent"])
def test_injected_io_errors_leave_no_partial_state(
    request: pytest.FixtureRequest, tmp_path: Path, persistent: bool, dialect: str
) -> None:
    loopback = EgressPolicy.from_strings(networks="127.0.0.1/32")
    with ThreadedEchoServer() as echo:
        nth = 0
        while True:
            nth += 1
            assert nth < 60, "the loop should reach a fault-free run"
            before = len(echo.requests)
            if dialect == "sqlite":
                settings = RuntimeSettings(data_dir=tmp_path / f"data{nth}", egress=loopback)
            else:
                settings = RuntimeSettings(database_url=request.getfixturevalue("pg_url"), egress=loopback)
                _empty(settings.database_url)
            raised, status, run_id = run_with_faults(settings, echo, nth, persistent)
            if run_id:
                assert status is RunStatus.SUCCEEDED, f"N={nth}: {status}"
                keys = Counter(r.headers["Idempotency-Key"] for r in echo.requests[before:])
                assert len(keys) == 1, f"N={nth}: {keys}"
            if dialect == "sqlite":
                conn = sqlite3.connect(tmp_path / f"data{nth}" / "cosmogen.db")
                try:
                    assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
                finally:
                    conn.close()
            if raised == 0:
                break  # N is past the last statement of a run: the loop has covered every one
        assert nth > 15  # a run with one call takes over a dozen statements; each one failed in turn


def _empty(url: str | None) -> None:
    assert url is not None
    db = Database.open(url=url)
    try:
        truncate_all(db)
    finally:
        db.close()
