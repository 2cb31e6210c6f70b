"""DUR-06: exactly-once job claims under contention, on PostgreSQL.

8 worker processes (the same RunWorker as `cosmogen worker`: procrastinate's `FOR UPDATE SKIP LOCKED`
claims, heartbeats and our stalled-job sweeper) take 5,000 jobs; 2 are SIGKILLed mid-way and never come
back. Each job records (job, worker, claim|done) in a history that the checker below reads like Elle
reads a history: no job may be held by two live workers, none may be lost, and a job is claimed again
only after the worker holding it died. SQLite has no counterpart: one process owns a data directory
(runtime/ownership.py), so there is nothing to contend.
"""

from __future__ import annotations

import contextlib
import os
import random
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

from cosmogen.runtime.queue import enqueue_run
from cosmogen.store import Database, migrate
from cosmogen.testing.claimer import HISTORY_DDL

JOBS = 5000
WORKERS = 8
KILLED = 2
ROOT = Path(__file__).resolve().parents[2]


def test_each_job_is_claimed_by_one_live_worker_and_none_is_lost(clean_pg_url: str, tmp_path: Path) -> None:
    seed = int(os.environ.get("COSMOGEN_DUR06_SEED", time.time_ns() % 1_000_000))
    rng = random.Random(seed)  # which workers die, and when; the seed is in every failure message
    db = Database.open(url=clean_pg_url)
    migrate.upgrade(db)
    with db.engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE IF EXISTS claim_history")
        conn.exec_driver_sql(HISTORY_DDL)
        for i in range(JOBS):
            enqueue_run(conn, f"job-{i:05d}")
    processes: list[subprocess.Popen[str]] = []
    logs = contextlib.ExitStack()
    try:
        for i in range(WORKERS):
            processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "cosmogen.testing.claimer", clean_pg_url, "4"],
                    cwd=ROOT,
                    stdout=subprocess.PIPE,
                    stderr=logs.enter_context((tmp_path / f"claimer{i}.log").open("w")),
                    text=True,
                )
            )
        pids = [int(_ready(p).split()[1]) for p in processes]
        victims = rng.sample(range(WORKERS), KILLED)
        kill_at = sorted(rng.randint(JOBS // 10, JOBS // 2) for _ in victims)
        for victim, threshold in zip(victims, kill_at, strict=True):
            _wait(lambda t=threshold: _count(db, "done") >= t, 120, f"{threshold} jobs done")
            processes[victim].kill()
            processes[victim].wait()
        _wait(lambda: _open_jobs(db) == 0, 180, "every job to end")
    finally:
        for process in processes:
            process.kill()
            process.wait()
            if process.stdout is not None:
                process.stdout.close()
        logs.close()
    killed_pids = {pids[v] for v in victims}
    with db.engine.connect() as conn:
        history = conn.exec_driver_sql("SELECT job, pid, event FROM claim_history ORDER BY id").all()
        left = conn.exec_driver_sql("SELECT status, count(*) FROM procrastinate_jobs GROUP BY status").all()
    db.close()

    by_job: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for job, pid, event in history:
        by_job[job].append((pid, event))
    context = f"(seed {seed}, victims {sorted(killed_pids)}, kills after {kill_at} jobs)"
    assert left == [], f"jobs not finished: {left} {context}"
    assert len(by_job) == JOBS, f"{JOBS - len(by_job)} jobs never ran {context}"
    redelivered = 0
    for job, events in by_job.items():
        claims = [pid for pid, event in events if event == "claim"]
        assert any(event == "done" for _, event in events), f"{job} never completed {context}"
        # A job goes to a second worker only when the first is dead: every claim but the last is a victim's.
        assert all(pid in killed_pids for pid in claims[:-1]), f"{job} double-claimed: {events} {context}"
        live_dones = [pid for pid, event in events if event == "done" and pid not in killed_pids]
        assert len(live_dones) <= 1, f"{job} completed twice by live workers: {events} {context}"
        redelivered += len(claims) - 1
    print(f"{JOBS} jobs, {WORKERS} workers, {KILLED} killed: {redelivered} redelivered")


def _ready(process: subprocess.Popen[str]) -> str:
    assert process.stdout is not None
    line = process.stdout.readline()
    assert line.startswith("READY"), f"claimer did not start: {line!r}"
    return line


def _count(db: Database, event: str) -> int:
    with db.engine.connect() as conn:
        value = conn.exec_driver_sql(
            "SELECT count(*) FROM claim_history WHERE event = %(e)s", {"e": event}
        ).scalar()
    return int(value or 0)


def _open_jobs(db: Database) -> int:
    with db.engine.connect() as conn:
        value = conn.exec_driver_sql(
            "SELECT count(*) FROM procrastinate_jobs WHERE status IN ('todo', 'doing')"
        ).scalar()
    return int(value or 0)


def _wait(predicate: object, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)
