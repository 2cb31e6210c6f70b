"""DUR-01 (CI size): on SQLite, 200 runs, 20 SIGKILLs of the runtime process at random moments, restarts until
every acknowledged run has ended. Half the runs call an idempotent sink (keyed POST), half an
at-most-once sink (bare POST). Nothing acknowledged may be lost; the idempotent sink sees each run's
call once after dedup by key; the at-most-once sink never sees a run's call twice, and a run killed
inside that call ends in needs_attention with its effect ambiguous."""

from __future__ import annotations

import itertools
import os
import random
import sqlite3
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from cosmogen.runtime import journal
from cosmogen.store import Database, GroupCommitWriter, migrate, new_id, repos
from cosmogen.store.tables import effects, node_results, run_events, runs
from cosmogen.testing.chaos import run_and_kill
from cosmogen.testing.echo import EchoServer, ThreadedEchoServer
from cosmogen.testing.workers import WorkerProcess

RUNS = 200
KILLS = 20


def document(echo: EchoServer, keyed: bool) -> dict[str, Any]:
    binding: dict[str, Any] = {
        "id": "pay",
        "node": "charge",
        "request": {"url": echo.url + ("/keyed" if keyed else "/bare"), "body": {"run": "{{ run.id }}"}},
    }
    if keyed:
        binding["idempotency_header"] = "Idempotency-Key"
    nodes = [{"id": "start", "type": "begin", "entity": "order:1", "properties": {"n": 0}}]
    nodes += [
        {"id": f"step{i}", "type": "become", "entity": "order:1", "transform": {"n": "n + 1"}}
        for i in range(1, 4)
    ]
    nodes.insert(2, {"id": "charge", "type": "become", "entity": "order:1", "transform": {"charged": "true"}})
    ids = [n["id"] for n in nodes]
    return {
        "cosmogen": "universe/1",
        "name": "dur01",
        "nodes": nodes,
        "edges": [{"source": a, "target": b} for a, b in itertools.pairwise(ids)],
        "bindings": [binding],
    }


def test_random_kills_lose_no_acknowledged_run(tmp_path: Path) -> None:
    seed = int(os.environ.get("COSMOGEN_DUR01_SEED", "20261128"))
    rng = random.Random(seed)
    data = tmp_path / "data"
    with ThreadedEchoServer() as echo:
        db = Database.open(data_dir=data)
        migrate.upgrade(db)
        with GroupCommitWriter(db) as writer:
            keyed = writer.submit(
                lambda c: repos.save_version(
                    c, workspace_id="default", name="dur01", document=document(echo, True)
                )
            ).result()
            bare = writer.submit(
                lambda c: repos.save_version(
                    c, workspace_id="default", name="dur01", document=document(echo, False)
                )
            ).result()
        db.close()
        acked: set[str] = set()
        kills = restarts = 0
        done = False
        while not (done and kills >= KILLS):
            restarts += 1
            assert restarts < 3 * KILLS, f"no progress (seed {seed})"
            remaining = max(RUNS - len(acked), 0)
            kill_after = rng.randint(1, min(8, remaining)) if kills < KILLS and remaining else None
            # With nothing left to submit, a kill lands while the process recovers and finishes the rest.
            kill_on_recovery = kills < KILLS and not remaining
            done, killed = _one_life(
                data,
                keyed.version_id,
                bare.version_id,
                keyed.universe_id,
                remaining,
                acked,
                1 if kill_on_recovery else kill_after,
                rng,
                "RECOVERED" if kill_on_recovery else "ACK ",
            )
            kills += killed
        assert kills >= KILLS
        _check(data, acked, echo, keyed.version_id, seed)


def _one_life(
    data: Path,
    keyed: str,
    bare: str,
    universe: str,
    count: int,
    acked: set[str],
    kill_after: int | None,
    rng: random.Random,
    marker: str,
) -> tuple[bool, int]:
    """Run the runtime process until DONE, or SIGKILL it a random moment after its `kill_after`-th
    `marker` line (an ACK, or the RECOVERED line)."""

    def on_line(line: str) -> None:
        if line.startswith("ACK "):
            acked.add(line.split()[1])

    command = [
        sys.executable,
        "-m",
        "cosmogen.bench.crash_worker",
        str(data),
        universe,
        str(count),
        keyed,
        bare,
    ]
    done, killed = run_and_kill(
        command, on_line, kill_after=kill_after, rng=rng, marker=marker, jitter_s=0.05
    )
    return done, int(killed)


def _check(data: Path, acked: set[str], echo: EchoServer, keyed_version: str, seed: int) -> None:
    db = Database.open(data_dir=data)
    try:
        _check_runs(db, acked, echo, keyed_version, f"(seed {seed})")
    finally:
        db.close()
    assert len(acked) >= RUNS
    conn_check = sqlite3.connect(data / "cosmogen.db")
    try:
        assert conn_check.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        conn_check.close()


def _check_runs(db: Database, acked: set[str], echo: EchoServer, keyed_version: str, context: str) -> None:
    """The DUR-01 invariants, on either dialect."""
    with db.engine.connect() as conn:
        rows = {r.id: r for r in conn.execute(select(runs.c.id, runs.c.status, runs.c.version_id))}
        effect_rows = list(conn.execute(select(effects.c.run_id, effects.c.status)))
        result_counts = Counter(r.run_id for r in conn.execute(select(node_results.c.run_id)))
        terminal_events = Counter(
            r.run_id
            for r in conn.execute(
                select(run_events.c.run_id).where(
                    run_events.c.type.in_(["run.succeeded", "run.failed", "run.needs_attention"])
                )
            )
        )
    assert acked <= rows.keys(), f"acknowledged runs lost {context}"
    effects_by_run: dict[str, list[str]] = {}
    for row in effect_rows:
        effects_by_run.setdefault(row.run_id, []).append(row.status)
    bare_deliveries = Counter(r.body["run"] for r in echo.requests if r.path == "/bare")
    keyed_deliveries = Counter(key.split(":")[0] for key in echo.keys)
    for run_id, row in rows.items():
        if row.version_id == keyed_version:
            assert row.status == "succeeded", f"{run_id} is {row.status} {context}"
            assert keyed_deliveries[run_id] == 1, f"{run_id}: keys {keyed_deliveries[run_id]} {context}"
        else:
            assert row.status in ("succeeded", "needs_attention"), f"{run_id} is {row.status} {context}"
            assert bare_deliveries[run_id] <= 1, f"{run_id} delivered twice at most-once sink {context}"
            if row.status == "needs_attention":
                assert effects_by_run[run_id] == ["ambiguous"], context
        if row.status == "succeeded":
            assert result_counts[run_id] == 5, context
            assert terminal_events[run_id] == 1, f"{run_id} ended {terminal_events[run_id]} times {context}"


PG_RUNS = 100
PG_KILLS = 10


def test_random_kills_of_postgres_workers_lose_no_acknowledged_run(clean_pg_url: str, tmp_path: Path) -> None:
    """DUR-01 on PostgreSQL (DUR-05's CI size): two `cosmogen worker` processes share the queue; one of
    them is SIGKILLed at a random moment, again and again, and a fresh one takes its place. The dead
    worker's runs come back through the stalled-job sweeper. The same invariants as on SQLite."""
    seed = int(os.environ.get("COSMOGEN_DUR01_SEED", "20261128"))
    rng = random.Random(seed)
    db = Database.open(url=clean_pg_url)
    migrate.upgrade(db)
    acked: set[str] = set()
    with ThreadedEchoServer() as echo:
        echo.default_delay_s = 0.2  # widens the window between a call and its recorded outcome
        with GroupCommitWriter(db) as writer:
            keyed, bare = (
                writer.submit(
                    lambda c, k=k: repos.save_version(
                        c, workspace_id="default", name=f"dur01-{k}", document=document(echo, k)
                    )
                ).result()
                for k in (True, False)
            )
            env = {"COSMOGEN_EGRESS_ALLOW_NETWORKS": "127.0.0.1/32"}
            lives = itertools.count()
            workers = [
                WorkerProcess(clean_pg_url, tmp_path / f"w{next(lives)}.log", concurrency=8, env=env).start()
                for _ in range(2)
            ]
            try:
                for _kill in range(PG_KILLS):
                    for _ in range(PG_RUNS // PG_KILLS):
                        version = rng.choice([keyed, bare])
                        run_id = new_id()
                        writer.submit(
                            journal.create_run(
                                run_id=run_id,
                                universe_id=version.universe_id,
                                version_id=version.version_id,
                                event={"name": "manual", "data": {}},
                                dry_run=False,
                            )
                        ).result()
                        acked.add(run_id)  # committed: from here on it must not be lost
                    time.sleep(rng.uniform(0.0, 0.3))  # the burst is in flight: kill into it
                    victim = rng.randrange(len(workers))
                    workers[victim].kill()
                    workers[victim] = WorkerProcess(
                        clean_pg_url, tmp_path / f"w{next(lives)}.log", concurrency=8, env=env
                    ).start()
                deadline = time.monotonic() + 180
                while _unfinished(db) and time.monotonic() < deadline:
                    time.sleep(0.2)
            finally:
                for worker in workers:
                    worker.kill()
        try:
            assert _unfinished(db) == 0, f"runs still unfinished after 180 s (seed {seed})"
            _check_runs(db, acked, echo, keyed.version_id, f"(seed {seed}, PostgreSQL)")
            with db.engine.connect() as conn:
                resumed = conn.execute(select(func.count()).where(runs.c.attempt > 1)).scalar()
        finally:
            db.close()
    # The kills landed inside runs: some were taken over by another worker after their worker died.
    assert resumed, f"no run was resumed after a kill: the test did not test recovery (seed {seed})"
    print(f"{PG_RUNS} runs, {PG_KILLS} worker kills: {resumed} runs resumed on another worker")


def _unfinished(db: Database) -> int:
    with db.engine.connect() as conn:
        value = conn.execute(
            select(func.count()).select_from(runs).where(runs.c.status.in_(["queued", "running"]))
        ).scalar()
    return int(value or 0)
