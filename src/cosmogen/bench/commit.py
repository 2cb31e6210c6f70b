"""`commit`: durable single-row commits one at a time versus the group-commit writer.

One row is one `run_events` insert (a run's journal entry), on the real schema. "Singles" commit each
row in its own transaction from one connection: the fsync-bound rate. "Group" has 16 producers, each
waiting for its row to be durable before writing the next (as a run checkpointing after each node),
all through one GroupCommitWriter. SQLite runs in a temporary directory with synchronous=FULL;
PostgreSQL in a scratch database created on the server at `postgres_url` and dropped afterwards.
"""

from __future__ import annotations

import itertools
import os
import secrets
import sqlite3
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from time import perf_counter
from typing import Any

from sqlalchemy import Connection, insert, text
from sqlalchemy.engine import make_url

from cosmogen.bench.stats import summary
from cosmogen.store import Database, GroupCommitWriter, migrate, repos, tables

POSTGRES_URL_ENV = "COSMOGEN_BENCH_POSTGRES_URL"

# Built once and executed with parameters: building `insert().values(row)` per row costs more CPU in
# SQLAlchemy than the commit it is measuring (about 300 us against 80 us per row here).
_INSERT_EVENT = insert(tables.run_events)


def run(
    repeat: int = 5,
    *,
    postgres_url: str | None = None,
    data_dir: Path | None = None,
    singles: int = 400,
    producers: int = 16,
    writes_per_producer: int = 100,
) -> dict[str, Any]:
    """Measure both dialects; `repeat` rounds each after one warm-up round.

    `postgres_url` (default: the COSMOGEN_BENCH_POSTGRES_URL environment variable) names a server
    where we may CREATE DATABASE; without one, PostgreSQL is reported as not measured.
    `data_dir` is where the SQLite file goes (default: a temporary directory); it must be on the disk
    you mean to measure, since tmpfs makes fsync free.
    """
    shape = {"singles": singles, "producers": producers, "writes_per_producer": writes_per_producer}
    figures: dict[str, Any] = {
        "workload": "commit: durable single-row commits, one at a time vs group commit",
        "rounds": repeat,
        **shape,
    }
    with (
        tempfile.TemporaryDirectory(prefix="cosmogen-bench-", dir=data_dir) as tmp,
        Database.open(data_dir=Path(tmp)) as db,
    ):
        figures["sqlite"] = {
            "setting": f"WAL, synchronous=FULL, SQLite {sqlite3.sqlite_version}",
            **_measure(db, repeat, **shape),
        }
    postgres_url = postgres_url or os.environ.get(POSTGRES_URL_ENV)
    if postgres_url is None:
        figures["postgresql"] = {
            "skipped": f"no PostgreSQL URL (pass postgres_url or set {POSTGRES_URL_ENV})"
        }
    else:
        with scratch_database(postgres_url) as db:
            with db.engine.connect() as conn:
                version = conn.execute(text("SHOW server_version")).scalar_one()
                sync = conn.execute(text("SHOW synchronous_commit")).scalar_one()
            figures["postgresql"] = {
                "setting": f"synchronous_commit={sync}, PostgreSQL {version}",
                **_measure(db, repeat, **shape),
            }
    return figures


def _measure(
    db: Database, repeat: int, *, singles: int, producers: int, writes_per_producer: int
) -> dict[str, Any]:
    migrate.upgrade(db)
    journals = _seed_runs(db, producers + 1)
    single_rates: list[float] = []
    group_rates: list[float] = []
    commits: list[float] = []
    batch_sizes: list[float] = []
    with GroupCommitWriter(db) as writer:
        for round_no in range(repeat + 1):  # round 0 warms caches and the pool up; not reported
            single_rate = _singles(db, journals[0], singles)
            before_commits, before_writes = writer.commits, writer.batched_writes
            group_rate = _group(writer, journals[1:], writes_per_producer)
            round_commits = writer.commits - before_commits
            round_writes = writer.batched_writes - before_writes
            if round_writes != producers * writes_per_producer:
                raise RuntimeError(
                    f"group commit lost writes: {round_writes} of {producers * writes_per_producer}"
                )
            if round_no == 0:
                continue
            single_rates.append(single_rate)
            group_rates.append(group_rate)
            commits.append(round_commits)
            batch_sizes.append(round_writes / round_commits)
    single_median = summary(single_rates)["median"]
    group_median = summary(group_rates)["median"]
    return {
        "singles_commits_per_s": _rounded(summary(single_rates)),
        "group_rows_per_s": _rounded(summary(group_rates)),
        "group_commits_per_round": _rounded(summary(commits)),
        "group_mean_batch": {k: round(v, 2) for k, v in summary(batch_sizes).items()},
        "speedup": round(group_median / single_median, 1),
    }


class _Journal:
    """One run's event sequence: producers own one each, so seq numbers never collide."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self._seq = itertools.count()

    def next_row(self) -> dict[str, Any]:
        seq = next(self._seq)
        return {
            "run_id": self.run_id,
            "seq": seq,
            "type": "node.finished",
            "payload": {"node": f"n{seq % 40}", "output": {"count": seq}},
            "created_at": tables.utcnow(),
        }


def _seed_runs(db: Database, count: int) -> list[_Journal]:
    with db.engine.begin() as conn:
        saved = repos.save_version(conn, workspace_id="bench", name="commit", document={"nodes": []})
        run_ids = [tables.new_id() for _ in range(count)]
        conn.execute(
            insert(tables.runs),
            [
                {
                    "id": run_id,
                    "universe_id": saved.universe_id,
                    "version_id": saved.version_id,
                    "status": "running",
                    "event": {},
                    "state": {},
                    "created_at": tables.utcnow(),
                    "updated_at": tables.utcnow(),
                }
                for run_id in run_ids
            ],
        )
    return [_Journal(run_id) for run_id in run_ids]


def _singles(db: Database, journal: _Journal, count: int) -> float:
    """Rows per second, one transaction (one fsync) per row."""
    with db.engine.connect() as conn:
        started = perf_counter()
        for _ in range(count):
            with conn.begin():
                conn.execute(_INSERT_EVENT, journal.next_row())
        return count / (perf_counter() - started)


def _group(writer: GroupCommitWriter, journals: list[_Journal], per_producer: int) -> float:
    """Rows per second with one producer thread per journal, each waiting for its commit."""
    barrier = threading.Barrier(len(journals) + 1)
    failures: list[BaseException] = []

    def write_row(journal: _Journal) -> Callable[[Connection], None]:
        row = journal.next_row()  # drawn once, outside the function: a re-run must insert the same row

        def write(conn: Connection) -> None:
            conn.execute(_INSERT_EVENT, row)

        return write

    def producer(journal: _Journal) -> None:
        barrier.wait()
        try:
            for _ in range(per_producer):
                writer.submit(write_row(journal)).result()
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=producer, args=(j,)) for j in journals]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = perf_counter()
    for thread in threads:
        thread.join()
    elapsed = perf_counter() - started
    if failures:
        raise failures[0]
    return len(journals) * per_producer / elapsed


@contextmanager
def scratch_database(server_url: str) -> Iterator[Database]:
    """A new database on the server at `server_url`, dropped afterwards, so the bench never touches
    real data and two benches never collide."""
    name = f"cosmogen_bench_{os.getpid()}_{secrets.token_hex(4)}"
    with Database.open(url=server_url) as admin:
        autocommit = admin.engine.execution_options(isolation_level="AUTOCOMMIT")
        with autocommit.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            scratch_url = make_url(admin.engine.url).set(database=name)
            with Database.open(url=scratch_url.render_as_string(hide_password=False)) as db:
                yield db
        finally:
            with autocommit.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _rounded(stats: dict[str, float]) -> dict[str, float]:
    return {k: round(v) for k, v in stats.items()}


def describe(figures: dict[str, Any]) -> str:
    lines = [
        f"{figures['workload']}: median of {figures['rounds']} rounds (min-max)",
        f"  singles: {figures['singles']} rows, one transaction each, one connection",
        f"  group:   {figures['producers']} producers x {figures['writes_per_producer']} rows, "
        "each waiting for its commit, one GroupCommitWriter",
    ]
    for dialect in ("sqlite", "postgresql"):
        d = figures[dialect]
        if "skipped" in d:
            lines.append(f"{dialect}: not measured: {d['skipped']}")
            continue

        def spread(key: str, unit: str, d: dict[str, Any] = d) -> str:
            s = d[key]
            return f"{s['median']:,}{unit} ({s['min']:,}-{s['max']:,})"

        lines += [
            f"{dialect} ({d['setting']})",
            f"  one at a time:  {spread('singles_commits_per_s', ' commits/s')}",
            f"  group commit:   {spread('group_rows_per_s', ' rows/s')}, {d['speedup']}x",
            f"                  {spread('group_commits_per_round', ' commits')} per round, "
            f"mean batch {spread('group_mean_batch', ' rows')}",
        ]
    return "\n".join(lines)
