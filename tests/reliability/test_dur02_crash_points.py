"""DUR-02: every persistence boundary of a run, crashed with SIGKILL in a real process, then resumed.

For each named crash point and each kind of call, the process executing the run is set to kill itself
at that point: `cosmogen run` on SQLite, a `cosmogen worker` on PostgreSQL. Then a fresh process
finishes the run: `cosmogen runs resume` on SQLite; on PostgreSQL a healthy worker, once the dead
worker's missing heartbeats hand the run back to the queue. The outcome per boundary must match the
expectation table below, on both dialects.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cosmogen.cli.durable import list_runs
from cosmogen.runtime import journal
from cosmogen.store import Database
from cosmogen.testing.echo import EchoServer, ThreadedEchoServer
from cosmogen.testing.workers import WorkerProcess

# kind -> binding: "keyed" sends an Idempotency-Key (safe to resend); "post" is a bare POST (at most once)
KINDS = {
    "keyed": {"idempotency_header": "Idempotency-Key"},
    "post": {},
}

# (point, kind) -> (status after resume, sink deliveries after dedup by key, raw sink requests)
EXPECTED: dict[tuple[str, str], tuple[str, int, int]] = {
    ("after-start", "keyed"): ("succeeded", 1, 1),
    ("after-start", "post"): ("succeeded", 1, 1),
    ("before-intent", "keyed"): ("succeeded", 1, 1),
    ("before-intent", "post"): ("succeeded", 1, 1),
    # intent committed, nothing sent: a keyed call is resent with its key; a bare POST cannot be told
    # apart from "sent and lost", so it waits for a person
    ("after-intent", "keyed"): ("succeeded", 1, 1),
    ("after-intent", "post"): ("needs_attention", 0, 0),
    # sent and answered, answer not recorded: the keyed resend is dropped by the sink's dedup
    ("after-call", "keyed"): ("succeeded", 1, 2),
    ("after-call", "post"): ("needs_attention", 1, 1),
    ("after-outcome", "keyed"): ("succeeded", 1, 1),
    ("after-outcome", "post"): ("succeeded", 1, 1),
    ("after-checkpoint", "keyed"): ("succeeded", 1, 1),
    ("after-checkpoint", "post"): ("succeeded", 1, 1),
    ("before-finish", "keyed"): ("succeeded", 1, 1),
    ("before-finish", "post"): ("succeeded", 1, 1),
}


def document(echo: EchoServer, kind: str) -> dict[str, Any]:
    return {
        "cosmogen": "universe/1",
        "name": f"crash-{kind}",
        "nodes": [
            {"id": "open", "type": "begin", "entity": "acct:1", "properties": {"balance": 100}},
            {"id": "spend", "type": "become", "entity": "acct:1", "transform": {"balance": "balance - 30"}},
            {"id": "fee", "type": "become", "entity": "acct:1", "transform": {"balance": "balance - 1"}},
            {"id": "done", "type": "become", "entity": "acct:1", "transform": {"closed": "true"}},
        ],
        "edges": [
            {"source": "open", "target": "spend"},
            {"source": "spend", "target": "fee"},
            {"source": "fee", "target": "done"},
        ],
        "bindings": [
            {
                "id": "pay",
                "node": "spend",
                "request": {"url": echo.url + "/pay", "body": {"amount": 30}},
                **KINDS[kind],
            }
        ],
    }


def process_env(crash_at: str | None = None) -> dict[str, str]:
    # Workers here notice a dead one after 2 s instead of 10, to keep 14 PostgreSQL cases quick.
    env = {
        **os.environ,
        "COSMOGEN_EGRESS_ALLOW_NETWORKS": "127.0.0.1/32",
        "COSMOGEN_WORKER_DEAD_AFTER_S": "2",
    }
    env.pop("COSMOGEN_TEST_CRASH_AT", None)
    if crash_at:
        env["COSMOGEN_TEST_CRASH_AT"] = crash_at
    if crash_at == "after-checkpoint":
        env["COSMOGEN_CHECKPOINT_EVERY"] = "1"  # by default a 4-node run never checkpoints before its end
    return env


def cosmogen(store: list[str], *args: str, crash_at: str | None = None) -> subprocess.CompletedProcess[str]:
    env = process_env(crash_at)
    return subprocess.run(
        [sys.executable, "-m", "cosmogen", *args, *store],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> list[str]:
    if request.param == "sqlite":
        return ["--data-dir", str(tmp_path / "data")]
    return ["--database-url", request.getfixturevalue("clean_pg_url")]


@contextlib.contextmanager
def crash_then_resume(store: list[str], path: Path, point: str, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """Crash the run's executor at `point`, resume it in a fresh process; yields the run's report with
    the resuming side still up (on PostgreSQL a worker, which later `runs` commands need)."""
    if store[0] == "--data-dir":
        crashed = cosmogen(store, "run", str(path), "--json", crash_at=point)
        assert crashed.returncode == -signal.SIGKILL, crashed.stderr
        (run,) = runs_in(store)
        assert run["status"] == "running"  # what a dead process leaves behind
        resumed = cosmogen(store, "runs", "resume", run["run_id"], "--json")
        yield json.loads(resumed.stdout)
        return
    queued = cosmogen(store, "run", str(path), "--detach")
    assert queued.returncode == 0, queued.stderr
    run_id = queued.stdout.strip()
    crashed = subprocess.run(
        [sys.executable, "-m", "cosmogen", "worker", *store],
        capture_output=True,
        text=True,
        timeout=120,
        env=process_env(point),
    )
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    (run,) = runs_in(store)
    assert run["status"] == "running"
    with WorkerProcess(store[1], tmp_path / "worker.log", env=process_env()):
        deadline = time.monotonic() + 60
        while runs_in(store)[0]["status"] in ("queued", "running"):
            assert time.monotonic() < deadline, "the run was not resumed by the healthy worker"
            time.sleep(0.1)
        yield json.loads(cosmogen(store, "runs", "show", run_id, "--json").stdout)


@pytest.mark.parametrize(("point", "kind"), sorted(EXPECTED))
def test_crash_at_every_boundary_then_resume(store: list[str], tmp_path: Path, point: str, kind: str) -> None:
    with ThreadedEchoServer() as echo:
        path = tmp_path / "universe.json"
        path.write_text(json.dumps(document(echo, kind)))
        with crash_then_resume(store, path, point, tmp_path) as result:
            _check_outcome(store, result, echo, point, kind)


def _check_outcome(store: list[str], result: dict[str, Any], echo: EchoServer, point: str, kind: str) -> None:
    run_id = result["run_id"]
    status, delivered, raw = EXPECTED[(point, kind)]
    assert result["status"] == status, result
    deliveries = len(echo.keys) if kind == "keyed" else len(echo.requests)
    assert deliveries == delivered
    assert len(echo.requests) == raw
    if kind == "keyed":
        assert all(count == raw for count in Counter(echo.keys).values())
    if status == "succeeded":
        assert result["entities"] == {"acct:1": {"balance": 69, "closed": True}}
        assert sorted(result["nodes"]) == ["done", "fee", "open", "spend"]
    else:
        assert result["error"]["code"] == "ambiguous-effect"
        assert result["error"]["actions"] == ["retry_anyway", "mark_done", "cancel"]
        _settle_ambiguous(store, run_id, echo, raw)
    events = events_of(store, run_id)
    assert [e["seq"] for e in events] == list(range(len(events)))
    assert sum(e["type"] == "run.started" for e in events) == (2 if status == "succeeded" else 3)
    if store[0] == "--data-dir":
        _integrity_ok(Path(store[1]) / "cosmogen.db")


def _settle_ambiguous(store: list[str], run_id: str, echo: EchoServer, raw_before: int) -> None:
    """A person answers: mark it done (no new call), and the run finishes with the recorded state."""
    done = json.loads(cosmogen(store, "runs", "mark-done", run_id, "--json").stdout)
    assert done["status"] == "succeeded"
    assert done["entities"] == {"acct:1": {"balance": 69, "closed": True}}
    assert len(echo.requests) == raw_before


def test_retry_anyway_resends_the_ambiguous_call_once(store: list[str], tmp_path: Path) -> None:
    with ThreadedEchoServer() as echo:
        path = tmp_path / "universe.json"
        path.write_text(json.dumps(document(echo, "post")))
        with crash_then_resume(store, path, "after-call", tmp_path) as stuck:
            assert stuck["status"] == "needs_attention"
            again = json.loads(cosmogen(store, "runs", "retry-anyway", stuck["run_id"], "--json").stdout)
        assert again["status"] == "succeeded"
        assert len(echo.requests) == 2  # the person chose to risk a second delivery
        assert [c["effect"] for c in again["calls"]] == ["cancelled", "succeeded"]


def _open(store: list[str]) -> Database:
    return Database.open(data_dir=Path(store[1])) if store[0] == "--data-dir" else Database.open(url=store[1])


def runs_in(store: list[str]) -> list[dict[str, Any]]:
    """Read straight from the store: the CLI's own listing is tested elsewhere, and each extra process
    costs seconds here."""
    db = _open(store)
    try:
        return list_runs(db, 10)
    finally:
        db.close()


def events_of(store: list[str], run_id: str) -> list[dict[str, Any]]:
    db = _open(store)
    try:
        with db.engine.connect() as conn:
            return journal.events_of(conn, run_id)
    finally:
        db.close()


def _integrity_ok(path: Path) -> None:
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        conn.close()
