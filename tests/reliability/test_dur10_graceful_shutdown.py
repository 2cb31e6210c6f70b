"""DUR-10: SIGTERM to `cosmogen serve` (SQLite) or to a `cosmogen worker` (PostgreSQL) with runs in
flight. It exits within 30 s; each run either finished or was parked at a node boundary with its
checkpoint committed; then every run succeeds, no call is repeated and none is left ambiguous."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from sqlalchemy import select
from tests.integration.conftest import free_port

from cosmogen.cli.durable import list_runs
from cosmogen.runtime.service import Runtime, RuntimeSettings
from cosmogen.store import Database
from cosmogen.store.tables import run_events
from cosmogen.testing.echo import EchoServer, ThreadedEchoServer
from cosmogen.testing.workers import WorkerProcess

RUNS = 40


def document(echo: EchoServer) -> dict[str, Any]:
    def call(binding_id: str, node: str) -> dict[str, Any]:
        body = {"run": "{{ run.id }}", "node": node}
        return {"id": binding_id, "node": node, "request": {"url": echo.url + "/pay", "body": body}}

    nodes = [
        {"id": "start", "type": "begin", "entity": "order:1", "properties": {"n": 0}},
        {"id": "first", "type": "become", "entity": "order:1", "transform": {"n": "n + 1"}},
        {"id": "second", "type": "become", "entity": "order:1", "transform": {"n": "n + 1"}},
        {"id": "done", "type": "become", "entity": "order:1", "transform": {"closed": "true"}},
    ]
    ids = [n["id"] for n in nodes]
    return {
        "cosmogen": "universe/1",
        "name": "dur10",
        "nodes": nodes,
        "edges": [{"source": a, "target": b} for a, b in itertools.pairwise(ids)],
        "bindings": [call("a", "first"), call("b", "second")],
    }


def start_serve(env: dict[str, str], port: int, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "cosmogen", "serve", "--port", str(port)],
            env=env,
            stdout=sink,
            stderr=sink,
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2):
                return process
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise AssertionError(log.read_text())


def test_sigterm_parks_runs_and_a_restart_finishes_them(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = {**os.environ, "COSMOGEN_DATA_DIR": str(data), "COSMOGEN_EGRESS_ALLOW_NETWORKS": "127.0.0.1/32"}
    with ThreadedEchoServer() as echo:
        echo.default_delay_s = 0.3
        universe = tmp_path / "u.json"
        universe.write_text(json.dumps(document(echo)))
        created = subprocess.run(
            [
                sys.executable,
                "-m",
                "cosmogen",
                "launch",
                str(universe),
                "--trigger",
                '{"kind": "webhook", "signed": false}',  # DUR-10 is about shutdown, not signatures
                "--real",
                "--json",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        (path,) = json.loads(created.stdout)["webhook_paths"].values()
        port = free_port()
        serve = start_serve(env, port, tmp_path / "serve.log")

        def fire(i: int) -> int:
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}{path}",
                data=json.dumps({"i": i}).encode(),
                method="POST",
                headers={"Content-Type": "application/json", "X-Cosmogen-Delivery": f"d{i}"},
            )
            with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
                return int(response.status)

        with ThreadPoolExecutor(8) as pool:
            assert set(pool.map(fire, range(RUNS))) == {202}
        while len(echo.requests) < 10:
            time.sleep(0.05)
        asked = time.monotonic()
        serve.send_signal(signal.SIGTERM)
        serve.wait(timeout=30)
        assert time.monotonic() - asked < 30
        # uvicorn re-raises the signal once its shutdown is complete, so the exit reads as SIGTERM
        assert serve.returncode in (0, -signal.SIGTERM)
        assert "Traceback" not in (tmp_path / "serve.log").read_text()
        statuses = Counter(r["status"] for r in _runs(data))
        assert statuses["running"] == 0, statuses  # every run finished or was parked at a node boundary
        assert statuses["queued"] > 0, statuses  # the shutdown did catch runs in flight
        delivered_before = len(echo.requests)

        serve = start_serve(env, port, tmp_path / "serve.log")
        try:
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                statuses = Counter(r["status"] for r in _runs(data))
                if statuses["succeeded"] == RUNS:
                    break
                time.sleep(0.2)
            assert statuses == Counter({"succeeded": RUNS}), statuses
        finally:
            serve.send_signal(signal.SIGTERM)
            serve.wait(timeout=30)
        calls = Counter((r.body["run"], r.body["node"]) for r in echo.requests)
        assert len(calls) == 2 * RUNS
        assert set(calls.values()) == {1}  # no call was repeated across the shutdown
        assert len(echo.requests) > delivered_before


def _runs(data: Path) -> list[dict[str, Any]]:
    db = Database.open(data_dir=data)
    try:
        return list_runs(db, 1000)
    finally:
        db.close()


PG_RUNS = 100


def test_sigterm_to_a_postgres_worker_hands_its_runs_to_another(clean_pg_url: str, tmp_path: Path) -> None:
    """DUR-10 on PostgreSQL: 100 runs in flight over two `cosmogen worker`s; SIGTERM one. It exits
    within 30 s, its runs park at a node boundary with a new job each, and the other worker finishes
    them at once (no dead-worker wait): every run succeeds, no call repeated, none ambiguous."""
    env = {"COSMOGEN_EGRESS_ALLOW_NETWORKS": "127.0.0.1/32"}
    with ThreadedEchoServer() as echo:
        echo.default_delay_s = 0.3
        stopping = WorkerProcess(clean_pg_url, tmp_path / "stopping.log", concurrency=64, env=env).start()
        staying = WorkerProcess(clean_pg_url, tmp_path / "staying.log", concurrency=64, env=env).start()
        try:
            run_ids = asyncio.run(_submit(clean_pg_url, document(echo), PG_RUNS))
            while len(echo.requests) < 20:
                time.sleep(0.05)
            asked = time.monotonic()
            code = stopping.stop(timeout_s=40)
            took = time.monotonic() - asked
            deadline = time.monotonic() + 90
            while (statuses := _pg_statuses(clean_pg_url)) != Counter({"succeeded": PG_RUNS}):
                assert time.monotonic() < deadline, statuses
                time.sleep(0.2)
        finally:
            stopping.kill()
            staying.kill()
    assert took < 30, f"the worker took {took:.1f} s to stop"
    assert code == 0, stopping.log()
    assert "Traceback" not in stopping.log()
    assert "parked" in _pg_event_types(clean_pg_url)  # the stop did catch runs in flight
    calls = Counter((r.body["run"], r.body["node"]) for r in echo.requests)
    assert set(calls) == {(run_id, node) for run_id in run_ids for node in ("first", "second")}
    assert set(calls.values()) == {1}  # no call was repeated across the hand-over


async def _submit(url: str, doc: dict[str, Any], count: int) -> list[str]:
    runtime = await Runtime.open(RuntimeSettings(database_url=url))
    try:
        first = await runtime.submit(doc)
        rest = [await runtime.start_run(first.universe_id, first.version_id) for _ in range(count - 1)]
        return [first.run_id, *rest]
    finally:
        await runtime.close()


def _pg_statuses(url: str) -> Counter[str]:
    db = Database.open(url=url)
    try:
        return Counter(r["status"] for r in list_runs(db, 1000))
    finally:
        db.close()


def _pg_event_types(url: str) -> set[str]:
    db = Database.open(url=url)
    try:
        with db.engine.connect() as conn:
            types = conn.execute(select(run_events.c.type).distinct()).scalars()
            return {str(t).removeprefix("run.") for t in types}
    finally:
        db.close()
