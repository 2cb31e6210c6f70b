"""The runtime process of DUR-01: owns the data directory, resumes what a killed predecessor left,
submits the runs it is asked for and prints `ACK <run id>` once each is committed.

Usage: python dur01_child.py DATA_DIR KEYED_VERSION BARE_VERSION UNIVERSE_ID COUNT
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from cosmogen.integrations.egress import EgressPolicy
from cosmogen.runtime.service import Runtime, RuntimeSettings


async def main(data_dir: Path, keyed: str, bare: str, universe_id: str, count: int) -> None:
    settings = RuntimeSettings(
        data_dir=data_dir, egress=EgressPolicy.from_strings(networks="127.0.0.1/32"), concurrency=16
    )
    runtime = await Runtime.open(settings)
    try:
        recovered = await runtime.recover()
        print(f"RECOVERED {len(recovered)}", flush=True)
        started = []
        for i in range(count):
            run_id = await runtime.start_run(universe_id, keyed if i % 2 == 0 else bare)
            print(f"ACK {run_id}", flush=True)
            started.append(run_id)
            await asyncio.sleep(0.005)
        await asyncio.gather(*(runtime.wait(r) for r in [*recovered, *started]))
        print("DONE", flush=True)
    finally:
        await runtime.close()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])))
