"""A procrastinate worker inside a runtime process: takes run jobs from the queue (runtime/queue.py) and
hands each to the runtime's executor; a sweeper returns the jobs of dead workers to the queue."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from procrastinate import App, JobContext, PsycopgConnector

from cosmogen.runtime.queue import RUN_QUEUE, RUN_TASK, WorkerOptions, conninfo

log = logging.getLogger(__name__)

# Advisory lock key of the stalled-job sweep ("cosmogen" in ASCII, as a bigint).
SWEEP_LOCK = 0x636F736D6F67656E


class RunWorker:
    """A procrastinate worker in this process that executes runs with `execute(run_id)`."""

    def __init__(
        self,
        database_url: str,
        execute: Callable[[str, int], Awaitable[Any]],
        options: WorkerOptions,
        name: str,
    ) -> None:
        self.options = options
        self.name = name
        self.app = App(connector=PsycopgConnector(conninfo=conninfo(database_url)))

        async def run(context: JobContext, run_id: str) -> None:
            assert context.job.id is not None  # a fetched job always has its id
            await execute(run_id, context.job.id)

        # Registered on this App instance (no module-level app): the task closes over this runtime.
        self.app.task(name=RUN_TASK, queue=RUN_QUEUE, pass_context=True)(run)
        self._tasks: list[asyncio.Task[None]] = []
        self.redelivered = 0

    async def start(self) -> None:
        await self.app.open_async()
        worker = self.app.run_worker_async(
            queues=[RUN_QUEUE],
            name=self.name,
            concurrency=self.options.concurrency,
            install_signal_handlers=False,
            update_heartbeat_interval=self.options.heartbeat_s,
            stalled_worker_timeout=self.options.stalled_after_s,
            shutdown_graceful_timeout=self.options.shutdown_s,
            # A fallback only: new jobs wake the worker through LISTEN/NOTIFY at once.
            fetch_job_polling_interval=1.0,
            delete_jobs="successful",
        )
        self._tasks = [
            asyncio.create_task(worker, name="procrastinate-worker"),
            asyncio.create_task(self._sweep_forever(), name="stalled-job-sweeper"),
        ]

    async def stop(self) -> None:
        """Stop taking jobs and wait (up to shutdown_s) for the running ones, then close the pool."""
        for task in reversed(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        await self.app.close_async()

    async def sweep(self) -> int:
        """Hand the jobs of dead workers back to the queue; returns how many (0 if another worker's
        sweep is under way).

        One sweep at a time across all workers (a PostgreSQL advisory lock): listing stalled jobs and
        retrying them are separate statements, and `retry_job` only checks that a job is `doing`, so two
        overlapping sweeps would retry a job twice, the second time while a live worker holds it
        (DUR-06 caught exactly that).
        """
        async with self.app.connector.pool.connection() as conn:  # type: ignore[attr-defined]
            locked = await (await conn.execute("SELECT pg_try_advisory_lock(%s)", (SWEEP_LOCK,))).fetchone()
            if not locked or not locked[0]:
                return 0
            try:
                count = await self._sweep_locked()
            finally:
                await conn.execute("SELECT pg_advisory_unlock(%s)", (SWEEP_LOCK,))
        self.redelivered += count
        return count

    async def _sweep_locked(self) -> int:
        manager = self.app.job_manager
        await manager.prune_stalled_workers(self.options.stalled_after_s)
        stalled = await manager.get_stalled_jobs(
            queue=RUN_QUEUE, seconds_since_heartbeat=self.options.stalled_after_s
        )
        count = 0
        for job in stalled:
            try:
                await manager.retry_job(job)
            except Exception as exc:  # the job just ended (a frozen worker woke up and finished it)
                log.debug("stalled job %s not retried: %s", job.id, exc)
                continue
            count += 1
            log.warning("redelivered run %s: its worker stopped sending heartbeats", job.task_kwargs)
        return count

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self.options.sweep_every_s)
            try:
                await self.sweep()
            except asyncio.CancelledError:
                raise
            except Exception:  # a database hiccup must not end liveness checks for good
                log.exception("sweeping stalled jobs failed")
