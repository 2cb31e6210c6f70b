"""A process that takes rate-limit tokens, for tests of the limiter shared across processes.

Usage: python -m cosmogen.testing.ratelimit_client DATABASE_URL KEY COUNT CONCURRENCY REQUESTS PER BURST

Prints `READY <pid>` once its limiter is open, waits for a line on stdin (so several processes start
taking at the same moment), then takes COUNT tokens of KEY with CONCURRENCY tasks, each asking for one
token after another. For each token it prints one JSON line as it is granted:
{"pid", "at": the time the token is valid from, "returned": time.time() when acquire returned,
"waited": seconds}, and `DONE` at the end. Times are epoch seconds, comparable across processes.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time

from cosmogen.domain.ratelimit import Policy
from cosmogen.integrations.ratelimit import RateLimiter
from cosmogen.store import Database


async def take(limiter: RateLimiter, key: str, policy: Policy, count: int, concurrency: int) -> None:
    pid = os.getpid()
    remaining = count

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1  # claimed before awaiting: the tasks share one event loop, no lock needed
            grant = await limiter.acquire(key, policy)
            returned = time.time()
            line = {"pid": pid, "at": grant.at, "returned": returned, "waited": grant.waited_s}
            print(json.dumps(line), flush=True)

    await asyncio.gather(*(worker() for _ in range(concurrency)))


def main(argv: list[str]) -> None:
    url, key, count, concurrency, requests, per, burst = argv
    db = Database.open(url=url)
    limiter = RateLimiter(db)
    try:
        print(f"READY {os.getpid()}", flush=True)
        sys.stdin.readline()
        policy = Policy(int(requests), float(per), int(burst))
        asyncio.run(take(limiter, key, policy, int(count), int(concurrency)))
        print("DONE", flush=True)
    finally:
        limiter.close()
        db.close()


if __name__ == "__main__":
    main(sys.argv[1:])
