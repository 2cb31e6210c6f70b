"""The durable runtime end to end: real database (both dialects), real HTTP server on 127.0.0.1."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from cosmogen.cli.durable import report
from cosmogen.domain.runs import RunAction, RunStatus
from cosmogen.runtime import journal
from cosmogen.runtime.service import Runtime, RuntimeSettings
from cosmogen.store.tables import universe_versions
from cosmogen.testing.echo import Answer, EchoServer

T = TypeVar("T")


def with_runtime(settings: RuntimeSettings, body: Callable[[Runtime], Awaitable[T]]) -> T:
    async def main() -> T:
        runtime = await Runtime.open(settings)
        try:
            if runtime.queued:  # PostgreSQL: runs go through the job queue to a worker, here in-process
                await runtime.start_worker()
            return await body(runtime)
        finally:
            await runtime.close()

    return asyncio.run(main())


def universe(echo: EchoServer, *, second: dict[str, Any] | None = None, **binding: Any) -> dict[str, Any]:
    """BEGIN -> BECOME (with a POST binding) -> BECOME (with an optional second binding) -> BECOME."""
    bindings = [
        {
            "id": "notify",
            "node": "spend",
            "request": {
                "url": echo.url + "/hook/{{ entity.id }}",
                "headers": {"Authorization": "Bearer sk-test-secret"},
                "body": {"balance": "{{ balance }}"},
            },
            **binding,
        }
    ]
    if second is not None:
        bindings.append({"id": "audit", "node": "fee", **second})
    return {
        "cosmogen": "universe/1",
        "name": "runtime-test",
        "nodes": [
            {"id": "open", "type": "begin", "entity": "acct:1", "properties": {"balance": 100}},
            {"id": "spend", "type": "become", "entity": "acct:1", "transform": {"balance": "balance - 30"}},
            {
                "id": "fee",
                "type": "become",
                "entity": "acct:1",
                "transform": {"balance": "balance - 1", "seen": "nodes.spend.bindings.notify.status"},
            },
            {"id": "done", "type": "become", "entity": "acct:1", "transform": {"closed": "true"}},
        ],
        "edges": [
            {"source": "open", "target": "spend"},
            {"source": "spend", "target": "fee"},
            {"source": "fee", "target": "done"},
        ],
        "bindings": bindings,
    }


def put_audit(echo: EchoServer) -> dict[str, Any]:
    return {"request": {"method": "PUT", "url": echo.url + "/audit", "body": {"n": "{{ balance }}"}}}


def test_run_with_a_binding_commits_calls_events_and_results(
    settings: RuntimeSettings, echo: EchoServer
) -> None:
    async def body(runtime: Runtime) -> None:
        submitted = await runtime.submit(universe(echo))
        assert await runtime.wait(submitted.run_id) is RunStatus.SUCCEEDED
        data = report(runtime.db, submitted.run_id)
        assert data["entities"] == {"acct:1": {"balance": 69, "seen": 200, "closed": True}}
        assert [(c["node"], c["effect"], c["status"]) for c in data["calls"]] == [("spend", "succeeded", 200)]
        with runtime.db.engine.connect() as conn:
            events = [e["type"] for e in journal.events_of(conn, submitted.run_id)]
            summary = conn.execute(universe_versions.select()).one().last_run_summary
            results = journal.node_results_of(conn, submitted.run_id)
        assert events == [
            "run.queued",
            "run.started",
            "node.finished",
            "effect.intent",
            "effect.succeeded",
            "node.finished",
            "node.finished",
            "node.finished",
            "run.succeeded",
        ]
        assert summary["status"] == "success"
        assert summary["completedAt"].endswith("+00:00")
        assert [r["node_id"] for r in results] == ["open", "spend", "fee", "done"]

    with_runtime(settings, body)
    assert len(echo.requests) == 1
    assert echo.requests[0].path == "/hook/acct:1"
    assert echo.requests[0].body == {"balance": 70}


def test_dry_run_makes_no_call_and_shows_the_request_redacted(
    settings: RuntimeSettings, echo: EchoServer
) -> None:
    async def body(runtime: Runtime) -> None:
        submitted = await runtime.submit(universe(echo), dry_run=True)
        assert await runtime.wait(submitted.run_id) is RunStatus.SUCCEEDED
        with runtime.db.engine.connect() as conn:
            (shown,) = [
                e["payload"]
                for e in journal.events_of(conn, submitted.run_id)
                if e["type"] == "effect.dry_run"
            ]
        assert shown["request"]["headers"] == {"Authorization": "***"}
        assert shown["request"]["body"] == {"balance": 70}
        assert "sk-test-secret" not in str(report(runtime.db, submitted.run_id))

    with_runtime(settings, body)
    assert echo.requests == []


def test_failed_call_fails_the_node_and_skips_what_follows(
    settings: RuntimeSettings, echo: EchoServer
) -> None:
    echo.script = [Answer(400, {"error": "bad"})]

    async def body(runtime: Runtime) -> None:
        submitted = await runtime.submit(universe(echo))
        assert await runtime.wait(submitted.run_id) is RunStatus.FAILED
        data = report(runtime.db, submitted.run_id)
        assert data["nodes"]["spend"]["status"] == "error"
        assert data["nodes"]["fee"]["status"] == "skipped"
        assert data["error"]["node"] == "spend"
        assert data["calls"][0]["effect"] == "failed"

    with_runtime(settings, body)
    assert len(echo.requests) == 1  # a 400 is never retried


def test_continue_on_error_records_the_failure_and_goes_on(
    settings: RuntimeSettings, echo: EchoServer
) -> None:
    echo.script = [Answer(422, {"error": "no"})]

    async def body(runtime: Runtime) -> None:
        submitted = await runtime.submit(universe(echo, on_error="continue"))
        assert await runtime.wait(submitted.run_id) is RunStatus.SUCCEEDED
        data = report(runtime.db, submitted.run_id)
        assert data["entities"]["acct:1"]["closed"] is True

    with_runtime(settings, body)


def test_pause_takes_effect_between_nodes_and_resume_finishes(
    settings: RuntimeSettings, echo: EchoServer
) -> None:
    echo.script = [Answer(200, {"ok": 1}, delay_s=0.5)]

    async def body(runtime: Runtime) -> None:
        submitted = await runtime.submit(universe(echo))
        while not echo.requests:  # the first call is in flight (its answer takes 0.5 s)
            await asyncio.sleep(0.01)
        assert await runtime.act(submitted.run_id, RunAction.PAUSE) is RunStatus.RUNNING
        assert await runtime.wait(submitted.run_id) is RunStatus.PAUSED
        paused = report(runtime.db, submitted.run_id)
        assert paused["entities"] == {"acct:1": {"balance": 70}}
        assert await runtime.act(submitted.run_id, RunAction.RESUME) is RunStatus.QUEUED
        assert await runtime.wait(submitted.run_id) is RunStatus.SUCCEEDED
        with runtime.db.engine.connect() as conn:
            types = [e["type"] for e in journal.events_of(conn, submitted.run_id)]
        assert "run.requested" in types
        assert "run.paused" in types
        assert types.count("run.started") == 2

    with_runtime(settings, body)
    assert len(echo.requests) == 1


def test_cancel_a_queued_run(settings: RuntimeSettings, echo: EchoServer) -> None:
    async def body(runtime: Runtime) -> None:
        submitted = await runtime.submit(universe(echo), start=False)
        assert await runtime.act(submitted.run_id, RunAction.CANCEL) is RunStatus.CANCELLED
        assert await runtime.wait(submitted.run_id) is RunStatus.CANCELLED

    with_runtime(settings, body)
    assert echo.requests == []


def test_retry_starts_at_the_failed_node_and_reuses_earlier_calls(
    settings: RuntimeSettings, echo: EchoServer
) -> None:
    echo.script = [Answer(200, {"first": True}), Answer(404, {"error": "missing"})]

    async def body(runtime: Runtime) -> None:
        submitted = await runtime.submit(universe(echo, second=put_audit(echo)))
        assert await runtime.wait(submitted.run_id) is RunStatus.FAILED
        child = await runtime.retry(submitted.run_id)
        assert await runtime.wait(child) is RunStatus.SUCCEEDED
        data = report(runtime.db, child)
        assert data["parent_run_id"] == submitted.run_id
        assert data["entities"]["acct:1"] == {"balance": 69, "seen": 200, "closed": True}
        assert [c["node"] for c in data["calls"]] == ["fee"]  # "spend" was reused from the parent

    with_runtime(settings, body)
    assert [r.path for r in echo.requests] == ["/hook/acct:1", "/audit", "/audit"]


def test_rerun_repeats_with_the_same_event(settings: RuntimeSettings, echo: EchoServer) -> None:
    async def body(runtime: Runtime) -> None:
        submitted = await runtime.submit(universe(echo), event={"name": "deposit", "data": {"x": 1}})
        await runtime.wait(submitted.run_id)
        child = await runtime.rerun(submitted.run_id)
        assert await runtime.wait(child) is RunStatus.SUCCEEDED
        with runtime.db.engine.connect() as conn:
            assert journal.load_run(conn, child).event == {"name": "deposit", "data": {"x": 1}}

    with_runtime(settings, body)
    assert len(echo.requests) == 2
    assert len({r.headers.get("Idempotency-Key") for r in echo.requests}) == 1  # no key header configured


def test_saving_the_same_document_twice_reuses_the_version(
    settings: RuntimeSettings, echo: EchoServer
) -> None:
    async def body(runtime: Runtime) -> None:
        first = await runtime.submit(universe(echo), dry_run=True)
        second = await runtime.submit(universe(echo), dry_run=True)
        assert first.version_id == second.version_id
        changed = universe(echo)
        changed["nodes"][1]["transform"] = {"balance": "balance - 31"}
        third = await runtime.submit(changed, dry_run=True)
        assert (third.universe_id, third.version_number) == (first.universe_id, 2)
        for run in (first, second, third):
            await runtime.wait(run.run_id)

    with_runtime(settings, body)
