"""DUR-06's worker process: takes jobs from the run queue with the same RunWorker (claims, heartbeats,
stalled-job sweeper) as `cosmogen worker`, but a job only records its claim and its completion in the
table `claim_history`, so a checker can see who held which job when.

Usage: python -m cosmogen.testing.claimer DATABASE_URL CONCURRENCY
Prints `READY <pid>` once it takes jobs; stops on SIGTERM.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sys

from psycopg_pool import AsyncConnectionPool

from cosmogen.runtime.queue import WorkerOptions, conninfo
from cosmogen.runtime.worker import RunWorker

HISTORY_DDL = (
    "CREATE TABLE IF NOT EXISTS claim_history ("
    " id bigserial PRIMARY KEY, job text NOT NULL, pid integer NOT NULL, event text NOT NULL,"
    " at timestamptz NOT NULL DEFAULT clock_timestamp())"
)
_RECORD = "INSERT INTO claim_history (job, pid, event) VALUES (%s, %s, %s)"


async def main(database_url: str, concurrency: int) -> None:
    pid = os.getpid()
    rng = random.Random(pid)  # noqa: S311 - timing jitter, not security
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with AsyncConnectionPool(
        conninfo(database_url), min_size=1, max_size=concurrency, open=False
    ) as pool:

        async def execute(job: str, _job_id: int) -> None:
            async with pool.connection() as conn:
                await conn.execute(_RECORD, (job, pid, "claim"))
            await asyncio.sleep(rng.uniform(0, 0.005))  # the "work": a window for a kill to land in
            async with pool.connection() as conn:
                await conn.execute(_RECORD, (job, pid, "done"))

        worker = RunWorker(database_url, execute, WorkerOptions(concurrency=concurrency), f"claimer-{pid}")
        await worker.start()
        print(f"READY {pid}", flush=True)
        await stop.wait()
        await worker.stop()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
