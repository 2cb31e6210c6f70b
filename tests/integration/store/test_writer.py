"""The group-commit writer: batching, failure isolation, close semantics, asyncio, both dialects."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, wait
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Connection, delete, func, insert, select, text
from sqlalchemy.exc import IntegrityError

from cosmogen.store import Database, GroupCommitWriter, WriteFunctionError, WriterClosed, migrate, tables
from cosmogen.store.writer import CommitOutcomeUnknown

NOW = datetime(2025, 1, 1, tzinfo=UTC)
U = tables.universes


def insert_universe(name: str) -> Callable[[Connection], str]:
    def write(conn: Connection) -> str:
        conn.execute(insert(U).values(id=f"id-{name}", name=name, created_at=NOW, updated_at=NOW))
        return name

    return write


def names_in(db: Database) -> list[str]:
    with db.engine.connect() as conn:
        return list(conn.execute(select(U.c.name).order_by(U.c.name)).scalars())


def block_writer(writer: GroupCommitWriter) -> tuple[threading.Event, Future[None]]:
    """Occupy the writer with a write that waits for `release`. Whatever is submitted meanwhile queues
    up and joins the blocker's transaction once it returns, so the test decides what one batch holds."""
    started, release = threading.Event(), threading.Event()

    def blocker(conn: Connection) -> None:
        started.set()
        assert release.wait(10)

    future = writer.submit(blocker)
    assert started.wait(10)
    return release, future


def test_sixteen_threads_of_writes_all_land_once_in_fewer_commits(
    db: Database, writer: GroupCommitWriter
) -> None:
    threads, per_thread = 16, 200
    results: dict[int, list[str]] = {}
    barrier = threading.Barrier(threads)

    def producer(t: int) -> None:
        barrier.wait()  # start together so writes really arrive concurrently
        # Each producer waits for its commit before the next write, like a run checkpointing.
        results[t] = [
            writer.submit(insert_universe(f"t{t:02d}-{i:03d}")).result(30) for i in range(per_thread)
        ]

    workers = [threading.Thread(target=producer, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    expected = sorted(f"t{t:02d}-{i:03d}" for t in range(threads) for i in range(per_thread))
    assert sorted(name for names in results.values() for name in names) == expected
    assert names_in(db) == expected
    assert writer.batched_writes == threads * per_thread
    assert writer.failed_writes == 0
    assert writer.commits < threads * per_thread  # batching happened
    assert writer.largest_batch > 1


def test_one_poisoned_write_fails_alone_with_its_own_exception(
    db: Database, writer: GroupCommitWriter
) -> None:
    release, blocker = block_writer(writer)

    def poisoned(conn: Connection) -> None:
        conn.execute(insert(U).values(id="id-poison", name="poison", created_at=NOW, updated_at=NOW))
        raise ValueError("poisoned write")

    good = [writer.submit(insert_universe(f"good-{i:02d}")) for i in range(20)]
    bad = writer.submit(poisoned)
    good += [writer.submit(insert_universe(f"good-{i:02d}")) for i in range(20, 40)]
    release.set()

    assert [f.result(10) for f in good] == [f"good-{i:02d}" for i in range(40)]
    assert blocker.result(10) is None
    with pytest.raises(ValueError, match="poisoned write"):
        bad.result(10)
    # The poisoned write's own insert was rolled back; everybody else's is there.
    assert names_in(db) == [f"good-{i:02d}" for i in range(40)]
    # The 42-write batch failed as a whole and was re-run one transaction per write.
    assert writer.commits == 41
    assert writer.failed_writes == 1
    assert writer.batched_writes == 41


def test_a_database_error_in_a_batch_fails_only_that_write(db: Database, writer: GroupCommitWriter) -> None:
    writer.submit(insert_universe("taken")).result(10)
    release, _ = block_writer(writer)
    before = writer.submit(insert_universe("before"))
    duplicate = writer.submit(insert_universe("taken"))  # same primary key: IntegrityError
    after = writer.submit(insert_universe("after"))
    release.set()
    assert before.result(10) == "before"
    assert after.result(10) == "after"
    with pytest.raises(IntegrityError):
        duplicate.result(10)
    assert names_in(db) == ["after", "before", "taken"]


def test_writes_arriving_while_a_batch_runs_join_its_commit(db: Database, writer: GroupCommitWriter) -> None:
    release, blocker = block_writer(writer)
    joined = [writer.submit(insert_universe(f"j{i}")) for i in range(5)]
    release.set()
    assert [f.result(10) for f in joined] == [f"j{i}" for i in range(5)]
    assert blocker.result(10) is None
    assert writer.commits == 1
    assert writer.largest_batch == 6
    assert names_in(db) == [f"j{i}" for i in range(5)]


def test_writes_in_one_batch_see_each_other(db: Database, writer: GroupCommitWriter) -> None:
    release, _ = block_writer(writer)
    first = writer.submit(insert_universe("first"))

    def count(conn: Connection) -> int:
        return int(conn.execute(select(func.count()).select_from(U)).scalar_one())

    counted = writer.submit(count)
    release.set()
    first.result(10)
    assert counted.result(10) == 1


def test_close_commits_everything_accepted_then_refuses_more(db: Database) -> None:
    writer = GroupCommitWriter(db)
    release, _ = block_writer(writer)
    pending = [writer.submit(insert_universe(f"n{i:03d}")) for i in range(100)]
    closer = threading.Thread(target=writer.close)
    closer.start()
    time.sleep(0.05)
    assert closer.is_alive()  # close waits for the queue to drain
    with pytest.raises(WriterClosed, match="closed"):
        writer.submit(insert_universe("late"))
    release.set()
    closer.join(10)
    assert not closer.is_alive()
    assert all(f.done() and f.exception() is None for f in pending)
    assert names_in(db) == [f"n{i:03d}" for i in range(100)]
    writer.close()  # idempotent
    assert writer.closed
    with pytest.raises(WriterClosed):
        writer.submit(insert_universe("later"))


def test_max_batch_caps_the_transaction_size(db: Database) -> None:
    with GroupCommitWriter(db, max_batch=8) as writer:
        release, _ = block_writer(writer)
        futures = [writer.submit(insert_universe(f"m{i:02d}")) for i in range(40)]
        release.set()
        wait(futures, timeout=10)
    assert writer.largest_batch == 8
    assert writer.commits == 6  # the blocker and 40 writes, in batches of at most 8
    assert len(names_in(db)) == 40


def test_a_cancelled_write_is_not_run(db: Database, writer: GroupCommitWriter) -> None:
    release, _ = block_writer(writer)
    cancelled = writer.submit(insert_universe("cancelled"))
    kept = writer.submit(insert_universe("kept"))
    assert cancelled.cancel()
    release.set()
    assert kept.result(10) == "kept"
    assert names_in(db) == ["kept"]


def test_a_write_function_that_commits_is_refused(db: Database, writer: GroupCommitWriter) -> None:
    def commits(conn: Connection) -> None:
        conn.commit()

    with pytest.raises(WriteFunctionError, match="must not commit"):
        writer.submit(commits).result(10)
    assert writer.submit(insert_universe("still-works")).result(10) == "still-works"


def test_asyncio_callers_await_their_commits(db: Database, writer: GroupCommitWriter) -> None:
    async def main() -> list[str]:
        return await asyncio.gather(*(writer.write(insert_universe(f"a{i:03d}")) for i in range(300)))

    assert asyncio.run(main()) == [f"a{i:03d}" for i in range(300)]
    assert names_in(db) == [f"a{i:03d}" for i in range(300)]
    assert writer.commits < 300


def test_asyncio_caller_gets_the_exception(db: Database, writer: GroupCommitWriter) -> None:
    def fails(conn: Connection) -> None:
        raise KeyError("missing")

    async def main() -> None:
        await writer.write(fails)

    with pytest.raises(KeyError, match="missing"):
        asyncio.run(main())


def test_sqlite_batches_take_the_write_lock_at_begin(tmp_path: Path) -> None:
    """BEGIN IMMEDIATE: while another connection holds the write lock, a batch does not even start
    (with a deferred BEGIN its function would run and then hit SQLITE_BUSY at the first write)."""
    db = Database.open(data_dir=tmp_path)
    migrate.upgrade(db)
    other = sqlite3.connect(tmp_path / "cosmogen.db", isolation_level=None)  # like another process
    try:
        with GroupCommitWriter(db) as writer:
            started = threading.Event()

            def write(conn: Connection) -> str:
                started.set()
                return insert_universe("after-lock")(conn)

            other.execute("BEGIN IMMEDIATE")
            future = writer.submit(write)
            assert not started.wait(0.3)
            other.execute("ROLLBACK")
            assert future.result(10) == "after-lock"
            assert started.is_set()
    finally:
        other.close()
        db.close()


def test_postgresql_writer_reconnects_after_losing_its_connection(pg_url: str) -> None:
    db = Database.open(url=pg_url)
    try:
        with GroupCommitWriter(db) as writer:
            pid = writer.submit(
                lambda conn: conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
            ).result(10)
            with db.engine.connect() as other:
                other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            # The next write fails on the dead connection before anything was committed, so it is
            # re-run once on a new connection and succeeds.
            names = [writer.submit(insert_universe(f"r{i}")).result(10) for i in range(3)]
            assert names == ["r0", "r1", "r2"]
            new_pid = writer.submit(lambda conn: conn.execute(text("SELECT pg_backend_pid()")).scalar_one())
            assert new_pid.result(10) != pid
    finally:
        with db.engine.begin() as conn:
            conn.execute(delete(U))
        db.close()


def test_postgresql_connection_lost_during_commit_is_reported_not_retried(pg_url: str) -> None:
    # A deferred constraint trigger runs at COMMIT; this one kills its own backend there, so the
    # client sends COMMIT and never hears back: the one failure a writer cannot classify.
    db = Database.open(url=pg_url)
    ddl = [
        "CREATE TABLE commit_killer (x int)",
        "CREATE FUNCTION commit_killer_fn() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN PERFORM pg_terminate_backend(pg_backend_pid()); RETURN NULL; END $$",
        "CREATE CONSTRAINT TRIGGER commit_killer_trg AFTER INSERT ON commit_killer "
        "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION commit_killer_fn()",
    ]
    try:
        with db.engine.begin() as conn:
            for statement in ddl:
                conn.execute(text(statement))
        with GroupCommitWriter(db) as writer:
            release, _ = block_writer(writer)
            innocent = writer.submit(insert_universe("innocent"))
            killer = writer.submit(
                lambda conn: conn.execute(text("INSERT INTO commit_killer VALUES (1)")) and None
            )
            release.set()
            for future in (innocent, killer):
                with pytest.raises(CommitOutcomeUnknown, match="may or may not"):
                    future.result(10)
            # The writer carries on with a new connection.
            assert writer.submit(insert_universe("after")).result(10) == "after"
        assert names_in(db) == ["after"]  # here the server did roll back; callers could not know that
    finally:
        with db.engine.begin() as conn:
            conn.execute(text("DROP TABLE IF EXISTS commit_killer"))
            conn.execute(text("DROP FUNCTION IF EXISTS commit_killer_fn()"))
            conn.execute(delete(U))
        db.close()
