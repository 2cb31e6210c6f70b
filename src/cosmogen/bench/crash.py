"""W6 `crash`: W2's runs with the runtime process killed (SIGKILL) at random moments and restarted.

Figures: acknowledged runs lost (must be 0), duplicate deliveries of idempotent calls after dedup by
key (must be 0), raw resends (the same key delivered again, which the key makes harmless), and the
time from a restart to the moment the interrupted runs are dispatched again.
"""

from __future__ import annotations

import random
import statistics
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from sqlalchemy import select

from cosmogen.bench.throughput import document
from cosmogen.store import Database, GroupCommitWriter, migrate, repos
from cosmogen.store.tables import runs
from cosmogen.testing.chaos import run_and_kill
from cosmogen.testing.echo import ThreadedEchoServer


def run(runs_total: int = 1000, kills: int = 100, seed: int = 6) -> dict[str, Any]:
    rng = random.Random(seed)
    with ThreadedEchoServer() as echo, tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        doc = document(echo.url)
        doc["bindings"][0]["idempotency_header"] = "Idempotency-Key"
        db = Database.open(data_dir=data)
        migrate.upgrade(db)
        with GroupCommitWriter(db) as writer:
            saved = writer.submit(
                lambda c: repos.save_version(c, workspace_id="default", name="w6", document=doc)
            ).result()
        db.close()
        acked: set[str] = set()
        resume_s: list[float] = []
        landed = lives = 0
        while True:
            lives += 1
            if lives > kills + 20:
                raise RuntimeError(f"no progress after {lives} restarts (seed {seed})")
            kill_after = rng.randint(1, max(2, runs_total // kills * 2)) if landed < kills else None
            done, killed = _life(
                data,
                saved.version_id,
                saved.universe_id,
                runs_total - len(acked),
                acked,
                kill_after,
                rng,
                resume_s,
            )
            landed += killed
            if done:
                break
        db = Database.open(data_dir=data)
        try:
            with db.engine.connect() as conn:
                statuses = {r.id: r.status for r in conn.execute(select(runs.c.id, runs.c.status))}
        finally:
            db.close()
        per_run_keys = Counter(key.split(":")[0] for key in echo.keys)
    lost = len([r for r in acked if statuses.get(r) != "succeeded"])
    return {
        "workload": "W6 crash: W2 runs (keyed POST) with the runtime process SIGKILLed and restarted",
        "seed": seed,
        "runs_acknowledged": len(acked),
        "runs_total": len(statuses),
        "kills": landed,
        "lost_runs": lost,
        "duplicate_calls_after_dedup": sum(n - 1 for n in per_run_keys.values() if n > 1),
        "resent_with_same_key": sum(echo.keys.values()) - len(echo.keys),
        "time_to_resume_ms": {
            "median": round(statistics.median(resume_s) * 1000, 1),
            "max": round(max(resume_s) * 1000, 1),
        },
    }


def _life(
    data: Path,
    version_id: str,
    universe_id: str,
    count: int,
    acked: set[str],
    kill_after: int | None,
    rng: random.Random,
    resume_s: list[float],
) -> tuple[bool, int]:
    def on_line(line: str) -> None:
        if line.startswith("RECOVERED"):
            _, recovered, seconds = line.split()
            if int(recovered):
                resume_s.append(float(seconds))
        elif line.startswith("ACK "):
            acked.add(line.split()[1])

    command = [
        sys.executable,
        "-m",
        "cosmogen.bench.crash_worker",
        str(data),
        universe_id,
        str(max(count, 0)),
        version_id,
    ]
    done, killed = run_and_kill(command, on_line, kill_after=kill_after, rng=rng)
    return done, int(killed)


def describe(figures: dict[str, Any]) -> str:
    return "\n".join(
        [
            figures["workload"],
            f"  runs acknowledged {figures['runs_acknowledged']} (total {figures['runs_total']}), "
            f"kills {figures['kills']}, seed {figures['seed']}",
            f"  lost runs                     {figures['lost_runs']}",
            f"  duplicate calls after dedup   {figures['duplicate_calls_after_dedup']}",
            f"  resent with the same key      {figures['resent_with_same_key']}",
            f"  time to resume after restart  median {figures['time_to_resume_ms']['median']} ms "
            f"(max {figures['time_to_resume_ms']['max']} ms; store opened to runs dispatched)",
        ]
    )
