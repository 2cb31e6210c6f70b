"""A launch's config applied to its runs, end to end: the scheduler fires the launch's cron trigger through
the real Runtime.start_run, the run makes real calls to a local echo server, and the test reads the run's
results and event log (both dialects)."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any, TypeVar

import pytest

from cosmogen.cli.durable import report
from cosmogen.domain.launches import LaunchConfig, LaunchConfigError, TelemetryLevel
from cosmogen.domain.runs import RunStatus
from cosmogen.domain.schedule import CronSpec
from cosmogen.runtime import journal
from cosmogen.runtime import launches as launch_store
from cosmogen.runtime.scheduler import Scheduler
from cosmogen.runtime.service import Runtime, RuntimeSettings
from cosmogen.store import repos
from cosmogen.testing.echo import Answer, EchoServer
from tests.integration.runtime.launch_helpers import T0, VirtualClock
from tests.integration.runtime.test_runtime import with_runtime

T = TypeVar("T")

SENT_CREDENTIAL = "sk-test-secret"  # sent in a header; must never show in an event
RETURNED_CREDENTIAL = "tok-from-provider"  # returned in a response body; must never show in an event


def two_flows(echo: EchoServer) -> dict[str, Any]:
    """a -> a-call (POST /a) and b -> b-call (POST /b, even when skipped), plus a LAW without edges."""

    def call(binding_id: str, node: str, path: str, **extra: Any) -> dict[str, Any]:
        return {
            "id": binding_id,
            "node": node,
            "request": {
                "url": echo.url + path,
                "headers": {"Authorization": f"Bearer {SENT_CREDENTIAL}"},
                "body": {"n": "{{ n }}"},
            },
            **extra,
        }

    return {
        "cosmogen": "universe/1",
        "name": "two-flows",
        "nodes": [
            {"id": "a", "type": "begin", "entity": "acct:a", "properties": {"n": 1}},
            {"id": "a-call", "type": "become", "entity": "acct:a", "transform": {"n": "n + 1"}},
            {"id": "b", "type": "begin", "entity": "acct:b", "properties": {"n": 10}},
            {"id": "b-call", "type": "become", "entity": "acct:b", "transform": {"n": "n + 1"}},
            {"id": "law", "type": "law", "entity": "acct:*", "invariants": {"small": "n < 100"}},
        ],
        "edges": [{"source": "a", "target": "a-call"}, {"source": "b", "target": "b-call"}],
        "bindings": [call("to-a", "a-call", "/a"), call("to-b", "b-call", "/b", when="always")],
    }


async def fire_launch(runtime: Runtime, document: dict[str, Any], config: LaunchConfig) -> str:
    """Save the version, make a live launch with a cron trigger, let a scheduler fire it once; the run id."""
    clock = VirtualClock(T0 - timedelta(seconds=30))
    saved = await runtime.writer.write(
        lambda conn: repos.save_version(
            conn, workspace_id="default", name=document["name"], document=document
        )
    )
    created = await runtime.writer.write(
        launch_store.create_launch(
            saved.universe_id, saved.version_id, config, [CronSpec("* * * * *")], now=clock()
        )
    )
    await runtime.writer.write(launch_store.go_live(created.launch.id, now=clock()))
    clock.now = T0 + timedelta(seconds=0.5)
    # Earlier launches of the same test planned their next tick a minute on, so only this one is due.
    [(_, _, run_id)] = (await Scheduler(runtime.db, runtime.writer, runtime.start_run, clock).tick()).fired
    return run_id


def events(runtime: Runtime, run_id: str) -> list[dict[str, Any]]:
    with runtime.db.engine.connect() as conn:
        return journal.events_of(conn, run_id)


def load(runtime: Runtime, run_id: str) -> journal.RunRecord:
    with runtime.db.engine.connect() as conn:
        return journal.load_run(conn, run_id)


def test_an_entry_node_skips_unreachable_nodes_and_their_calls_also_on_retry_and_rerun(
    settings: RuntimeSettings, echo: EchoServer
) -> None:
    echo.script = [Answer(400, {"error": "try again"})]  # the first call fails (400: never resent)

    async def body(runtime: Runtime) -> None:
        config = LaunchConfig(dry_run=False, entry_node="a")
        run_id = await fire_launch(runtime, two_flows(echo), config)
        assert await runtime.wait(run_id) is RunStatus.FAILED  # a-call failed: the usual rule
        failed = report(runtime.db, run_id)
        assert failed["error"]["node"] == "a-call"
        for node in ("b", "b-call"):
            assert failed["nodes"][node] == {"node": node, "status": "skipped", "reason": UNREACHABLE}

        retried = await runtime.retry(run_id)
        assert await runtime.wait(retried) is RunStatus.SUCCEEDED
        rerun = await runtime.rerun(retried)
        assert await runtime.wait(rerun) is RunStatus.SUCCEEDED
        for child in (retried, rerun):
            data = report(runtime.db, child)
            statuses = {node: outcome["status"] for node, outcome in data["nodes"].items()}
            assert statuses == {
                "a": "complete",
                "a-call": "complete",
                "b": "skipped",
                "b-call": "skipped",
                "law": "complete",  # laws stay in force whatever the entry node
            }
            assert data["nodes"]["b-call"]["reason"] == UNREACHABLE
            assert data["entities"] == {"acct:a": {"n": 2}}  # acct:b never began
            assert load(runtime, child).launch_id == load(runtime, run_id).launch_id
            finished = [e["payload"] for e in events(runtime, child) if e["type"] == "node.finished"]
            assert {"node": "b", "status": "skipped", "reason": UNREACHABLE} in finished
            with runtime.db.engine.connect() as conn:
                results = {r["node_id"]: r["status"] for r in journal.node_results_of(conn, child)}
            assert results["b-call"] == "skipped"

    with_runtime(settings, body)
    # a-call three times (the failed run, its retry, the re-run); b-call's binding never ran, although it
    # says `when: always`.
    assert [r.path for r in echo.requests] == ["/a", "/a", "/a"]


UNREACHABLE = "not reachable from entry node 'a'"

STANDARD = [
    "run.queued",
    "run.started",
    "node.finished",  # a
    "effect.intent",
    "effect.succeeded",
    "node.finished",  # a-call
    "node.finished",  # b
    "effect.intent",
    "effect.succeeded",
    "node.finished",  # b-call
    "node.finished",  # law
    "run.succeeded",
]


def test_each_telemetry_level_records_its_events(settings: RuntimeSettings, echo: EchoServer) -> None:
    async def body(runtime: Runtime) -> dict[TelemetryLevel, list[dict[str, Any]]]:
        logs = {}
        for level in TelemetryLevel:
            echo.script = [Answer(200, {"ok": True, "access_token": RETURNED_CREDENTIAL})] * 2
            config = LaunchConfig(dry_run=False, telemetry_level=level)
            run_id = await fire_launch(runtime, two_flows(echo), config)
            assert await runtime.wait(run_id) is RunStatus.SUCCEEDED
            logs[level] = events(runtime, run_id)
        return logs

    logs = with_runtime(settings, body)
    assert len(echo.requests) == 6  # every level makes the calls; only what is recorded differs

    assert [e["type"] for e in logs[TelemetryLevel.MINIMAL]] == ["run.queued", "run.started", "run.succeeded"]
    assert [e["type"] for e in logs[TelemetryLevel.STANDARD]] == STANDARD
    assert [e["type"] for e in logs[TelemetryLevel.VERBOSE]] == STANDARD
    for e in logs[TelemetryLevel.STANDARD]:
        assert not {"output", "request", "response"} & set(e["payload"]), e

    verbose = logs[TelemetryLevel.VERBOSE]
    outputs = {e["payload"]["node"]: e["payload"]["output"] for e in verbose if e["type"] == "node.finished"}
    assert outputs["a"] == {"status": "complete", "entity": {"n": 1}}
    assert outputs["a-call"]["bindings"]["to-a"]["body"] == {"ok": True, "access_token": "***"}
    [intent, _] = [e["payload"] for e in verbose if e["type"] == "effect.intent"]
    assert intent["request"] == {
        "method": "POST",
        "url": echo.url + "/a",
        "headers": {"Authorization": "***"},
        "body": {"n": 2},
    }
    [answered, _] = [e["payload"] for e in verbose if e["type"] == "effect.succeeded"]
    assert answered["response"] == {"status": 200, "attempts": 1, "body": {"ok": True, "access_token": "***"}}
    # The secrets went out (the echo server saw the header) and came back, but no event holds them.
    assert echo.requests[-1].headers["Authorization"] == f"Bearer {SENT_CREDENTIAL}"
    everything = json.dumps([logs[level] for level in TelemetryLevel])
    assert SENT_CREDENTIAL not in everything
    assert RETURNED_CREDENTIAL not in everything


def test_start_run_checks_the_config_and_runs_without_one_are_unchanged(
    settings: RuntimeSettings, echo: EchoServer
) -> None:
    async def body(runtime: Runtime) -> None:
        submitted = await runtime.submit(two_flows(echo), dry_run=True)
        assert await runtime.wait(submitted.run_id) is RunStatus.SUCCEEDED
        plain = load(runtime, submitted.run_id)
        assert "launch_config" not in plain.state["run"]
        assert "node.finished" in [e["type"] for e in events(runtime, submitted.run_id)]

        with pytest.raises(LaunchConfigError, match="'telemetry_level' must be one of"):
            await runtime.start_run(
                submitted.universe_id, submitted.version_id, config={"telemetry_level": "loud"}
            )

        # Launches refuse an unknown entry node when created; a caller of start_run that skips that check
        # gets a failed run that says what is wrong, not a crash or a run of everything.
        run_id = await runtime.start_run(
            submitted.universe_id, submitted.version_id, dry_run=True, config={"entry_node": "ghost"}
        )
        assert await runtime.wait(run_id) is RunStatus.FAILED
        error = load(runtime, run_id).error
        assert error is not None and error["code"] == "invalid-launch-config"
        assert "'ghost' is not a node of this version" in error["message"]

    with_runtime(settings, body)
    assert echo.requests == []
