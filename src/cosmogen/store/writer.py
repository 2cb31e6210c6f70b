"""Group commit: one thread owns the write connection and commits many callers' writes at once.

A durable commit costs one fsync (SQLite FULL) or one WAL flush (PostgreSQL), and that is the ceiling
for one-transaction-per-write. Here callers hand over *write functions* `fn(conn) -> T`; the writer
takes everything queued, runs it in ONE transaction, commits once and resolves every caller's future.
There is no timer: batches form from writes that arrive while the previous batch runs or commits (the
writer tops a batch up with whatever arrived while its functions ran, just before COMMIT), so a lone
write is committed at once and a busy system gets bigger batches, up to `max_batch`.

Write functions may run more than once: if a batch fails, it is rolled back and each function re-runs
in a transaction of its own, so one bad write fails only its own caller (with its own exception); and
a batch whose connection died before COMMIT is run once more on a new connection. They must therefore
only touch the database through `conn`, must not commit or roll back themselves, and should not keep
results from a first attempt in outside state. If the connection dies *during* COMMIT nobody can tell
whether it committed, so nothing is re-run: every caller of that batch gets CommitOutcomeUnknown.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import Connection, RootTransaction
from sqlalchemy.exc import DBAPIError

from cosmogen.store.database import SQLITE_BEGIN, Database

T = TypeVar("T")
WriteFn = Callable[[Connection], T]

log = logging.getLogger(__name__)

DEFAULT_MAX_BATCH = 512

# Key in the writer connection's `info`: the signals of the transaction in progress, or None when nobody
# in this process subscribed (then `signal` costs one dict lookup).
_SIGNALS = "cosmogen.commit_signals"


def signal(conn: Connection, item: Any) -> None:
    """Hand `item` to the writer's commit subscribers once the current transaction commits (dropped if it
    rolls back). Nothing happens when `conn` is not a writer's or nobody subscribed."""
    pending = conn.info.get(_SIGNALS)
    if pending is not None:
        pending.append(item)


class WriterClosed(RuntimeError):
    """The writer was closed (or its thread died) before this write was accepted."""


class CommitOutcomeUnknown(RuntimeError):
    """The connection was lost while committing: the writes may or may not be durable. Re-read the
    database to find out; the writer does not guess (re-running could apply them twice)."""


class WriteFunctionError(RuntimeError):
    """A write function broke the writer's contract (e.g. committed the batch transaction itself)."""


@dataclass(eq=False)
class _Job:
    fn: WriteFn[Any]
    future: Future[Any]


class GroupCommitWriter:
    """The single writer of one database. Thread-safe; usable from threads and from asyncio code."""

    def __init__(
        self,
        db: Database,
        *,
        max_batch: int = DEFAULT_MAX_BATCH,
        name: str = "cosmogen-writer",
        on_commit: Callable[[float, int], None] | None = None,
    ):
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._max_batch = max_batch
        self._queue: deque[_Job] = deque()
        self._cond = threading.Condition()
        self._closed = False
        # Counters, written only by the writer thread.
        self.commits = 0  # transactions committed (batches, plus single re-runs after a failed batch)
        self.batched_writes = 0  # write functions whose result was committed
        self.failed_writes = 0  # write functions that raised (their caller got the exception)
        self.largest_batch = 0
        # Told (seconds, writes) after each batch commit, on the writer thread (telemetry/hooks.py).
        self._on_commit = on_commit
        # Called in the writer thread after each commit with that transaction's signals (`signal`).
        self._subscribers: list[Callable[[list[Any]], None]] = []
        # The connection is opened here rather than in the thread so a dead database fails the
        # constructor, not some later caller.
        self._conn = db.engine.connect()
        if db.dialect == "sqlite":
            # Take the write lock at BEGIN: with a deferred BEGIN, a batch that reads first could hit
            # SQLITE_BUSY when upgrading to a write lock held by another process.
            self._conn.execution_options(**{SQLITE_BEGIN: "IMMEDIATE"})
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    # --- callers -----------------------------------------------------------------------------------

    def submit(self, fn: WriteFn[T]) -> Future[T]:
        """Queue `fn`; the future resolves with its result once committed, or with its exception."""
        future: Future[T] = Future()
        with self._cond:
            if self._closed:
                raise WriterClosed("the group-commit writer is closed; no more writes are accepted")
            self._queue.append(_Job(fn, future))
            self._cond.notify()
        return future

    async def write(self, fn: WriteFn[T]) -> T:
        """`submit` for asyncio code: awaits the commit without blocking the event loop."""
        return await asyncio.wrap_future(self.submit(fn))

    def close(self, timeout: float | None = None) -> None:
        """Stop accepting writes, commit everything already accepted, then stop. Idempotent."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        if threading.current_thread() is not self._thread:  # a write function closing us must not self-join
            self._thread.join(timeout)

    def subscribe_commits(self, callback: Callable[[list[Any]], None]) -> Callable[[], None]:
        """Call `callback(signals)` in the writer thread after every commit that carried signals; it must
        be quick and must not raise (hand the work to another thread or loop). Returns the unsubscriber."""
        with self._cond:
            self._subscribers = [*self._subscribers, callback]

        def unsubscribe() -> None:
            with self._cond:
                self._subscribers = [s for s in self._subscribers if s is not callback]

        return unsubscribe

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> GroupCommitWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the writer thread -------------------------------------------------------------------------

    def _next_batch(self) -> list[_Job] | None:
        """Everything queued (up to max_batch), waiting for the first; None once closed and drained."""
        with self._cond:
            while not self._queue:
                if self._closed:
                    return None
                self._cond.wait()
            size = min(len(self._queue), self._max_batch)
            return [self._queue.popleft() for _ in range(size)]

    def _take_queued(self, limit: int) -> list[_Job]:
        """Up to `limit` queued jobs, without waiting; cancelled ones are dropped."""
        with self._cond:
            taken = [self._queue.popleft() for _ in range(min(limit, len(self._queue)))]
        return [job for job in taken if job.future.set_running_or_notify_cancel()]

    def _run(self) -> None:
        live: list[_Job] = []
        try:
            while (batch := self._next_batch()) is not None:
                # A caller may have cancelled its future while it waited; skip those.
                live = [job for job in batch if job.future.set_running_or_notify_cancel()]
                if live:
                    self._commit_batch(live)
        except BaseException as exc:
            # Only a BaseException (SystemExit from a write function, a bug here) gets this far. Logged,
            # not re-raised (a thread has nowhere to raise to); callers must not be left waiting forever.
            log.exception("group-commit writer thread died")
            self._fail_pending(live, exc)
        finally:
            self._conn.close()

    def _commit_batch(self, batch: list[_Job], *, may_reconnect: bool = True) -> None:
        began = time.perf_counter()
        try:
            results = self._transaction(batch, top_up=True)
        except CommitOutcomeUnknown as exc:
            # Re-running could apply the writes twice: every caller learns the truth is unknown.
            for job in batch:
                self._resolve_failure(job, exc)
            return
        except Exception as exc:
            if may_reconnect and isinstance(exc, DBAPIError) and exc.connection_invalidated:
                # The connection died before COMMIT (e.g. the server restarted while we were idle), so
                # nothing was committed: run the same batch once more, on a new connection.
                log.warning("database connection lost before commit; retrying the batch once: %s", exc)
                self._commit_batch(batch, may_reconnect=False)
                return
            if len(batch) == 1:
                self._resolve_failure(batch[0], exc)
                return
            # Some function (or the commit) failed and the whole batch was rolled back. Re-run each alone
            # so the failure lands on its own caller and everybody else's write still commits.
            for job in batch:
                self._commit_alone(job)
            return
        self.commits += 1
        self.batched_writes += len(batch)
        self.largest_batch = max(self.largest_batch, len(batch))
        if self._on_commit is not None:
            try:
                self._on_commit(time.perf_counter() - began, len(batch))
            except Exception:  # telemetry must never leave callers waiting
                log.warning("the commit hook failed", exc_info=True)
        for job, result in zip(batch, results, strict=True):
            job.future.set_result(result)

    def _commit_alone(self, job: _Job) -> None:
        try:
            [result] = self._transaction([job])
        except Exception as exc:
            self._resolve_failure(job, exc)
            return
        self.commits += 1
        self.batched_writes += 1
        self.largest_batch = max(self.largest_batch, 1)
        job.future.set_result(result)

    def _transaction(self, jobs: list[_Job], *, top_up: bool = False) -> list[Any]:
        """Run `jobs` in one transaction and commit; on any failure the transaction is rolled back.

        With `top_up`, jobs queued meanwhile are appended to `jobs` (in place, so the caller resolves or
        re-runs them too) until the queue is empty or the batch reaches max_batch.
        """
        transaction = self._conn.begin()
        # Reset at every begin, so a rolled-back transaction's signals are never delivered.
        subscribers = self._subscribers
        signals: list[Any] | None = [] if subscribers else None
        self._conn.info[_SIGNALS] = signals
        results: list[Any] = []
        try:
            while len(results) < len(jobs):
                results.append(self._call(jobs[len(results)].fn))
                if top_up and len(results) == len(jobs):
                    # Writes that arrived while this batch ran ride along in the same commit.
                    jobs.extend(self._take_queued(self._max_batch - len(jobs)))
        except BaseException:
            self._rollback(transaction)
            raise
        try:
            transaction.commit()
        except DBAPIError as exc:
            self._rollback(transaction)
            if exc.connection_invalidated:
                # The COMMIT was sent but its answer never came: the server may have committed.
                raise CommitOutcomeUnknown(
                    "lost the database connection during COMMIT: these writes may or may not be committed"
                ) from exc
            raise
        if signals:
            for callback in subscribers:
                try:
                    callback(signals)
                except Exception:  # a subscriber's bug must not fail writes that are already committed
                    log.exception("a commit subscriber failed")
        return results

    def _rollback(self, transaction: RootTransaction) -> None:
        try:
            # Also when no longer active (e.g. after a lost connection): rollback() is what detaches it.
            transaction.rollback()
        except Exception:
            # A dead connection cannot roll back; the server discards the transaction, and SQLAlchemy
            # reconnects on the next begin().
            log.warning("rollback after a failed write batch failed", exc_info=True)

    def _call(self, fn: WriteFn[T]) -> T:
        result = fn(self._conn)
        if not self._conn.in_transaction():
            raise WriteFunctionError(
                f"{fn!r} ended the writer's transaction; write functions must not commit"
            )
        return result

    def _resolve_failure(self, job: _Job, exc: BaseException) -> None:
        self.failed_writes += 1
        job.future.set_exception(exc)

    def _fail_pending(self, in_flight: list[_Job], exc: BaseException) -> None:
        with self._cond:
            self._closed = True
            queued = list(self._queue)
            self._queue.clear()
        died = WriterClosed(f"the group-commit writer thread died: {exc!r}")
        for job in in_flight:
            if not job.future.done():
                job.future.set_exception(died)
        for job in queued:
            if job.future.set_running_or_notify_cancel():
                job.future.set_exception(died)
