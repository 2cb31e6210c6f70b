"""The runtime process that `cosmogen bench crash` kills: resumes what its predecessor left, submits
the runs it is asked for and reports `RECOVERED n seconds`, `ACK id` and `DONE` on stdout.

Usage: python -m cosmogen.bench.crash_worker DATA_DIR UNIVERSE_ID COUNT VERSION_ID [VERSION_ID ...]
(runs alternate between the versions given).
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

from cosmogen.integrations.egress import EgressPolicy
from cosmogen.runtime.service import Runtime, RuntimeSettings


async def main(data_dir: Path, universe_id: str, count: int, version_ids: list[str]) -> None:
    started = time.perf_counter()
    settings = RuntimeSettings(
        data_dir=data_dir, egress=EgressPolicy.from_strings(networks="127.0.0.1/32"), concurrency=16
    )
    runtime = await Runtime.open(settings)
    try:
        recovered = await runtime.recover()
        print(f"RECOVERED {len(recovered)} {time.perf_counter() - started:.4f}", flush=True)
        submitted = []
        for i in range(count):
            submitted.append(await runtime.start_run(universe_id, version_ids[i % len(version_ids)]))
            print(f"ACK {submitted[-1]}", flush=True)
        await asyncio.gather(*(runtime.wait(r) for r in [*recovered, *submitted]))
        print("DONE", flush=True)
    finally:
        await runtime.close()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4:]))
