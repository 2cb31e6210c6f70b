"""W3 `ratelimit`: 100 runs started at once, each making one OpenAI chat call through the same account
(10 requests/s, burst 10), against the provider simulator enforcing exactly that token bucket and
answering 429 to any excess.

Two configurations, as perf-workloads.md asks:
- `sqlite`: the embedded runtime, one process (this one) executing every run;
- `postgresql`: two `cosmogen worker` processes sharing the limiter through the database; this process
  only queues the runs (needs a server where we may CREATE DATABASE: COSMOGEN_BENCH_POSTGRES_URL).
The simulator runs in a process of its own. Figures per round, from the simulator's log: 429s (must be
0), elapsed from the first call to the last (ideal 9.0 s: 10 at once, then 10 per second), the most
calls in any 1-second window (a perfect bucket allows up to 19), and, on the system-wide monotonic clock
both processes share, how long after the runs were queued the first call went and everything finished.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import select

from cosmogen.bench.commit import POSTGRES_URL_ENV, scratch_database
from cosmogen.bench.stats import summary
from cosmogen.domain.ratelimit import Policy
from cosmogen.domain.runs import RunStatus
from cosmogen.integrations import credentials
from cosmogen.integrations.egress import EgressPolicy
from cosmogen.integrations.secret import Secret
from cosmogen.runtime.service import Runtime, RuntimeSettings
from cosmogen.store import repos
from cosmogen.store.tables import runs as runs_table
from cosmogen.testing.simulator import DEFAULT_API_KEY
from cosmogen.testing.simulator.admin import AdminClient
from cosmogen.testing.workers import WorkerProcess

ROUTE = "openai.chat"
RATE, BURST = 10, 10
POLICY = Policy(RATE, 1.0, burst=BURST)
IDEAL_S = 9.0  # 100 calls: the burst of 10 at once, then 90 more at 10/s
TOLERANCE = 0.05  # the goal: elapsed within 5 % of the ideal
LOOPBACK = "127.0.0.1/32"
IDLE_BETWEEN_ROUNDS_S = 1.5  # both buckets (ours and the simulator's) full again before a round


def document() -> dict[str, Any]:
    return {
        "cosmogen": "universe/1",
        "name": "w3-ratelimit",
        "nodes": [
            {"id": "start", "type": "begin", "entity": "post:1", "properties": {"topic": "limits"}},
            {"id": "ask", "type": "become", "entity": "post:1", "transform": {"asked": "true"}},
        ],
        "edges": [{"source": "start", "target": "ask"}],
        "bindings": [
            {
                "id": "chat",
                "node": "ask",
                "kind": "provider",
                "capability": "openai.chat",
                "account": "w3",
                "settings": {"prompt": "Say hi to {{ topic }}", "max_tokens": 5},
            }
        ],
    }


@contextmanager
def simulator_process(*limits: str) -> Iterator[str]:
    """The provider simulator in its own process (`--limit ROUTE=RATE/BURST` each); yields its URL."""
    command = [sys.executable, "-m", "cosmogen.testing.simulator", "--port", "0"]
    for limit in limits:
        command += ["--limit", limit]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line.strip().isdigit():
            raise RuntimeError(f"the simulator did not start (said {line!r})")
        yield f"http://127.0.0.1:{int(line)}"
    finally:
        process.terminate()
        process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()


def run(
    rounds: int = 3,
    *,
    postgres_url: str | None = None,
    runs: int = 100,
    workers: int = 2,
    data_dir: Path | None = None,
) -> dict[str, Any]:
    """Both configurations, `rounds` measured rounds each after a warm-up. PostgreSQL is skipped (and
    says so) without `postgres_url` or COSMOGEN_BENCH_POSTGRES_URL."""
    figures: dict[str, Any] = {
        "workload": (
            f"W3 ratelimit: {runs} runs at once, one OpenAI chat call each through one account "
            f"({RATE}/s, burst {BURST}), against a simulator enforcing exactly that bucket"
        ),
        "runs": runs,
        "rounds": rounds,
        "ideal_s": round(_ideal(runs), 3),
        # What our limiter aims at by construction: the ideal plus its arrival allowance, paid once
        # (domain/ratelimit.py); elapsed below it means the first calls reached the provider late.
        "limiter_floor_s": round(_ideal(runs) + POLICY.allowance_s, 3) if runs > BURST else 0.0,
    }
    with simulator_process(f"{ROUTE}={RATE}/{BURST}") as sim_url:
        with tempfile.TemporaryDirectory(prefix="cosmogen-bench-", dir=data_dir) as tmp:
            settings = RuntimeSettings(
                data_dir=Path(tmp), egress=EgressPolicy.from_strings(networks=LOOPBACK), concurrency=runs
            )
            figures["sqlite"] = {
                "setting": "embedded SQLite, 1 process",
                **asyncio.run(_measure(settings, sim_url, rounds, runs)),
            }
        postgres_url = postgres_url or os.environ.get(POSTGRES_URL_ENV)
        if postgres_url is None:
            figures["postgresql"] = {
                "skipped": f"no PostgreSQL URL (pass postgres_url or set {POSTGRES_URL_ENV})"
            }
        else:
            figures["postgresql"] = _postgres(postgres_url, sim_url, rounds, runs, workers)
    return figures


def _postgres(server_url: str, sim_url: str, rounds: int, runs: int, workers: int) -> dict[str, Any]:
    keys = json.dumps({"active": "k1", "keys": {"k1": base64.b64encode(os.urandom(32)).decode()}})
    with scratch_database(server_url) as db, tempfile.TemporaryDirectory(prefix="cosmogen-bench-") as logs:
        url = db.engine.url.render_as_string(hide_password=False)
        settings = RuntimeSettings(
            database_url=url,
            egress=EgressPolicy.from_strings(networks=LOOPBACK),
            vault_keys=Secret(keys),
        )
        env = {"COSMOGEN_VAULT_KEYS": keys, "COSMOGEN_EGRESS_ALLOW_NETWORKS": LOOPBACK}
        # The schema and the account first, so the workers start on a migrated database.
        asyncio.run(_prepare(settings, sim_url))
        started = [
            WorkerProcess(url, Path(logs) / f"worker-{n}.log", concurrency=runs, env=env).start()
            for n in range(workers)
        ]
        try:
            measured = asyncio.run(_measure(settings, sim_url, rounds, runs, prepared=True))
        finally:
            for worker in started:
                worker.stop()
    return {"setting": f"PostgreSQL, {workers} `cosmogen worker` processes", **measured}


async def _prepare(settings: RuntimeSettings, sim_url: str) -> None:
    runtime = await Runtime.open(settings)
    try:
        await _connect(runtime, sim_url)
    finally:
        await runtime.close()


async def _connect(runtime: Runtime, sim_url: str) -> None:
    """The account every run calls through, its API key in the vault, limited to exactly W3's policy."""
    vault = runtime.open_vault()
    limit = {"rate_limit": {"requests": RATE, "per": "1s", "burst": BURST}}
    account_id = await runtime.writer.write(
        credentials.create_account(
            workspace_id=runtime.settings.workspace,
            provider="openai",
            name="w3",
            base_url=sim_url,
            auth_kind="api_key",
            settings=limit,
        )
    )
    await runtime.writer.write(credentials.put_secret(vault, account_id, "api_key", Secret(DEFAULT_API_KEY)))
    await runtime.writer.write(credentials.set_account_status(account_id, "connected"))


async def _measure(
    settings: RuntimeSettings, sim_url: str, rounds: int, runs: int, *, prepared: bool = False
) -> dict[str, Any]:
    admin = AdminClient(sim_url)
    runtime = await Runtime.open(settings)
    try:
        if not prepared:
            await _connect(runtime, sim_url)
        saved = await runtime.writer.write(
            lambda conn: repos.save_version(
                conn, workspace_id=settings.workspace, name="w3-ratelimit", document=document()
            )
        )
        details = []
        for round_no in range(rounds + 1):  # round 0 warms up (imports, connections, the vault): not kept
            size = min(BURST, runs) if round_no == 0 else runs
            await asyncio.sleep(IDLE_BETWEEN_ROUNDS_S)
            await asyncio.to_thread(admin.reset)
            figures = await _round(runtime, admin, saved, size)
            if round_no > 0:
                details.append(figures)
    finally:
        await runtime.close()
    return _summarise(details, runs)


async def _round(
    runtime: Runtime, admin: AdminClient, saved: repos.SavedVersion, size: int
) -> dict[str, Any]:
    queued_at = time.monotonic()  # CLOCK_MONOTONIC: the same clock the simulator stamps arrivals with
    run_ids = await asyncio.gather(
        *(runtime.start_run(saved.universe_id, saved.version_id) for _ in range(size))
    )
    statuses = await _settle(runtime, list(run_ids))
    done_at = time.monotonic()
    stats = await asyncio.to_thread(admin.stats, ROUTE, 1.0)
    arrivals = sorted(entry["time"] for entry in await asyncio.to_thread(admin.log, ROUTE))
    return {
        "succeeded": sum(1 for s in statuses if s is RunStatus.SUCCEEDED),
        "calls": stats["requests"],
        "status_429": stats["status_429"],
        "elapsed_s": round(stats["span_s"], 4),
        "max_in_1s": stats["max_in_window"],
        "first_call_s": round(arrivals[0] - queued_at, 4) if arrivals else None,
        # First to BURST-th call: the limiter alone gives its arrival allowance (0.2 s); more means the runs
        # reached their calls later than that, and elapsed grows by as much (the bucket was full meanwhile).
        "burst_spread_s": round(arrivals[BURST - 1] - arrivals[0], 4) if len(arrivals) >= BURST else None,
        "all_done_s": round(done_at - queued_at, 4),
    }


async def _settle(runtime: Runtime, run_ids: list[str]) -> list[RunStatus]:
    if not runtime.queued:
        return list(await asyncio.gather(*(runtime.wait(run_id) for run_id in run_ids)))
    query = select(runs_table.c.status).where(runs_table.c.id.in_(run_ids))
    while True:
        with runtime.db.engine.connect() as conn:
            statuses = [RunStatus(s) for s in conn.execute(query).scalars()]
        if all(s not in (RunStatus.QUEUED, RunStatus.RUNNING) for s in statuses):
            return statuses
        await asyncio.sleep(0.1)


def _ideal(runs: int) -> float:
    return max(runs - BURST, 0) / RATE


def _summarise(details: list[dict[str, Any]], runs: int) -> dict[str, Any]:
    ideal = _ideal(runs)
    elapsed = [d["elapsed_s"] for d in details]
    return {
        "status_429": summary([d["status_429"] for d in details]),
        "elapsed_s": summary(elapsed),
        "elapsed_vs_ideal": round(summary(elapsed)["median"] / ideal, 4) if ideal else None,
        "within_5pct_of_ideal": all(abs(e - ideal) <= TOLERANCE * ideal for e in elapsed) if ideal else None,
        "max_in_1s": summary([d["max_in_1s"] for d in details]),
        "first_call_s": summary([d["first_call_s"] for d in details if d["first_call_s"] is not None]),
        "burst_spread_s": summary([d["burst_spread_s"] for d in details if d["burst_spread_s"] is not None]),
        "all_done_s": summary([d["all_done_s"] for d in details]),
        "failed_runs": sum(runs - d["succeeded"] for d in details),
        "rounds_detail": details,
    }


def describe(figures: dict[str, Any]) -> str:
    lines = [
        figures["workload"],
        f"  {figures['rounds']} rounds; ideal elapsed {figures['ideal_s']} s "
        f"(our limiter's own floor {figures['limiter_floor_s']} s: the arrival allowance, paid once)",
    ]
    for name in ("sqlite", "postgresql"):
        d = figures[name]
        if "skipped" in d:
            lines.append(f"  {name}: not measured ({d['skipped']})")
            continue

        def spread(key: str, d: dict[str, Any] = d) -> str:
            s = d[key]
            return f"{s['median']:g} (min {s['min']:g}, max {s['max']:g})"

        lines += [
            f"  {name}: {d['setting']}",
            f"    429s from the simulator   {spread('status_429')}",
            f"    elapsed first->last call  {spread('elapsed_s')} s; median/ideal {d['elapsed_vs_ideal']}; "
            f"all rounds within 5 %: {d['within_5pct_of_ideal']}",
            f"    most calls in any 1 s     {spread('max_in_1s')}",
            f"    first call after queueing {spread('first_call_s')} s",
            f"    first to {BURST}th call         {spread('burst_spread_s')} s "
            f"(the limiter alone: {POLICY.allowance_s:g} s)",
            f"    all runs done after       {spread('all_done_s')} s",
            f"    failed runs               {d['failed_runs']}",
        ]
    return "\n".join(lines)
