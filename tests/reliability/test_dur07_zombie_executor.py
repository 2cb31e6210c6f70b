"""DUR-07: two runtimes on one PostgreSQL database both pick up the same run (a forced-recovery bug).
The first is stalled inside a call (a slow provider stands in for SIGSTOP) while the second takes the
run over and finishes it. When the first wakes up it must write nothing more: one outcome recorded
per step, the run's end recorded once, and the provider sees the call once after dedup by key."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest
from tests.conftest import truncate_all

from cosmogen.domain.runs import RunStatus
from cosmogen.integrations.egress import EgressPolicy
from cosmogen.runtime import journal
from cosmogen.runtime.journal import EventLog, StaleRun
from cosmogen.runtime.service import Runtime, RuntimeSettings
from cosmogen.store import Database, GroupCommitWriter, new_id, repos
from cosmogen.testing.echo import Answer, ThreadedEchoServer


def document(url: str) -> dict[str, Any]:
    return {
        "cosmogen": "universe/1",
        "name": "dur07",
        "nodes": [
            {"id": "start", "type": "begin", "entity": "order:1", "properties": {"n": 0}},
            {"id": "charge", "type": "become", "entity": "order:1", "transform": {"n": "n + 1"}},
            {"id": "done", "type": "become", "entity": "order:1", "transform": {"closed": "true"}},
        ],
        "edges": [{"source": "start", "target": "charge"}, {"source": "charge", "target": "done"}],
        "bindings": [
            {
                "id": "pay",
                "node": "charge",
                "idempotency_header": "Idempotency-Key",
                "request": {"url": url + "/pay", "body": {"run": "{{ run.id }}"}},
            }
        ],
    }


def test_a_stalled_executor_cannot_overwrite_the_one_that_took_over(pg_url: str) -> None:
    db = Database.open(url=pg_url)
    try:
        truncate_all(db)
    finally:
        db.close()
    settings = RuntimeSettings(database_url=pg_url, egress=EgressPolicy.from_strings(networks="127.0.0.1/32"))
    with ThreadedEchoServer() as echo:
        echo.script = [Answer(200, {"first": True}, delay_s=1.5), Answer(200, {"second": True})]

        async def main() -> tuple[RunStatus, RunStatus, str, Runtime]:
            zombie = await Runtime.open(settings)
            rescuer = await Runtime.open(settings)
            try:
                # No workers: the "forced-recovery bug" is both processes dispatching the run themselves.
                submitted = await zombie.submit(document(echo.url))
                stalling = zombie.dispatch(submitted.run_id)
                while not echo.requests:  # the zombie's call is in flight at the provider
                    await asyncio.sleep(0.02)
                taken_over = await rescuer.dispatch(submitted.run_id)
                stalled = await stalling
                return taken_over, stalled, submitted.run_id, rescuer
            finally:
                await zombie.close()
                await rescuer.close()

        taken_over, stalled, run_id, _ = asyncio.run(main())
    assert taken_over is RunStatus.SUCCEEDED
    assert stalled is RunStatus.SUCCEEDED  # the zombie read back the rescuer's result; it did not write it
    db = Database.open(url=pg_url)
    try:
        with db.engine.connect() as conn:
            record = journal.load_run(conn, run_id)
            events = Counter(e["type"] for e in journal.events_of(conn, run_id))
            effects = journal.effects_of(conn, [run_id])
    finally:
        db.close()
    assert record.attempt == 2
    assert record.state["entities"] == {"order:1": {"n": 1, "closed": True}}
    assert events["run.succeeded"] == 1
    assert events["run.started"] == 2
    ((_, attempts),) = effects.items()
    assert len(attempts) == 1  # one intent, one outcome: the same key both times
    assert attempts[0].response["body"] == {"second": True}  # the zombie's late outcome was not written
    assert len({r.headers["Idempotency-Key"] for r in echo.requests}) == 1


def test_writes_of_an_older_attempt_are_refused(pg_url: str) -> None:
    db = Database.open(url=pg_url)
    try:
        truncate_all(db)
        with GroupCommitWriter(db) as writer:
            saved = writer.submit(
                lambda c: repos.save_version(
                    c, workspace_id="w", name="fence", document=document("http://x.example")
                )
            ).result()
            run_id = new_id()
            writer.submit(
                journal.create_run(
                    run_id=run_id,
                    universe_id=saved.universe_id,
                    version_id=saved.version_id,
                    event={},
                    dry_run=False,
                )
            ).result()
            first = writer.submit(journal.start_run(run_id, "a", EventLog(run_id, 1))).result()
            second = writer.submit(journal.start_run(run_id, "b", EventLog(run_id, 2))).result()
            assert (first.attempt, second.attempt) == (1, 2)
            with pytest.raises(StaleRun):
                writer.submit(journal.checkpoint(run_id, 1, {}, [], EventLog(run_id, 3), attempt=1)).result()
            with pytest.raises(StaleRun):
                writer.submit(
                    journal.transition(run_id, RunStatus.SUCCEEDED, EventLog(run_id, 3), attempt=1)
                ).result()
            writer.submit(journal.checkpoint(run_id, 1, {}, [], EventLog(run_id, 3), attempt=2)).result()
            writer.submit(
                journal.transition(run_id, RunStatus.SUCCEEDED, EventLog(run_id, 3), attempt=2)
            ).result()
    finally:
        db.close()
