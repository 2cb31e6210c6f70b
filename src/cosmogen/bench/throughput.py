"""W2 `throughput`: durable 3-node runs (manual trigger -> HTTP POST -> BECOME using the response).

The provider stand-in is the echo server in a separate process (it answers 200 with a small JSON at
once), so it does not share this process's event loop. Same-run baseline: raw aiohttp POST round
trips per second to the same server at the same concurrency, the ceiling for one call per run.
"""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from cosmogen.domain.runs import RunStatus
from cosmogen.integrations.egress import EgressPolicy
from cosmogen.runtime.service import Runtime, RuntimeSettings


def document(url: str) -> dict[str, Any]:
    return {
        "cosmogen": "universe/1",
        "name": "w2-throughput",
        "nodes": [
            {"id": "start", "type": "begin", "entity": "order:1", "properties": {"total": 10}},
            {"id": "charge", "type": "become", "entity": "order:1", "transform": {"charged": "true"}},
            {
                "id": "record",
                "type": "become",
                "entity": "order:1",
                "transform": {"receipt": "nodes.charge.bindings.pay.body.n"},
            },
        ],
        "edges": [{"source": "start", "target": "charge"}, {"source": "charge", "target": "record"}],
        "bindings": [
            {
                "id": "pay",
                "node": "charge",
                "request": {"url": url + "/pay", "body": {"total": "{{ total }}"}},
            }
        ],
    }


class EchoProcess:
    """The echo server in its own process."""

    def __enter__(self) -> str:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "cosmogen.testing.echo"], stdout=subprocess.PIPE, text=True
        )
        assert self.process.stdout is not None
        port = int(self.process.stdout.readline())
        return f"http://127.0.0.1:{port}"

    def __exit__(self, *exc: object) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)
        if self.process.stdout is not None:
            self.process.stdout.close()


async def _baseline(url: str, requests: int, concurrency: int) -> float:
    """Raw aiohttp POSTs per second to the same server."""
    async with aiohttp.ClientSession() as session:
        remaining = requests

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                async with session.post(url + "/pay", json={"total": 10}) as response:
                    await response.read()

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return requests / (time.perf_counter() - started)


async def _runs(url: str, data_dir: Path, runs: int, concurrency: int) -> dict[str, Any]:
    settings = RuntimeSettings(
        data_dir=data_dir, egress=EgressPolicy.from_strings(networks="127.0.0.1/32"), concurrency=concurrency
    )
    runtime = await Runtime.open(settings)
    try:
        warm = await runtime.submit(document(url))
        await runtime.wait(warm.run_id)
        latencies: list[float] = []
        statuses: dict[str, int] = {}
        remaining = runs

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                started = time.perf_counter()
                run_id = await runtime.start_run(warm.universe_id, warm.version_id)
                status = await runtime.wait(run_id)
                latencies.append(time.perf_counter() - started)
                statuses[status.value] = statuses.get(status.value, 0) + 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
        commits = runtime.writer.commits
    finally:
        await runtime.close()
    latencies.sort()
    return {
        "runs": runs,
        "runs_per_s": round(runs / elapsed, 1),
        "p50_ms": round(statistics.median(latencies) * 1000, 2),
        "p99_ms": round(latencies[int(len(latencies) * 0.99) - 1] * 1000, 2),
        "errors": sum(n for s, n in statuses.items() if s != RunStatus.SUCCEEDED.value),
        "commits": commits,
    }


def run(runs: int = 1000, concurrency: int = 16, rounds: int = 3) -> dict[str, Any]:
    results: list[dict[str, Any]] = []
    baselines: list[float] = []
    with EchoProcess() as url:
        for _ in range(rounds):
            with tempfile.TemporaryDirectory() as tmp:
                baselines.append(asyncio.run(_baseline(url, runs, concurrency)))
                results.append(asyncio.run(_runs(url, Path(tmp), runs, concurrency)))
    rates = [r["runs_per_s"] for r in results]
    median_rate = statistics.median(rates)
    baseline = statistics.median(baselines)
    return {
        "workload": "W2 throughput: 3-node durable runs, SQLite synchronous=FULL, one POST per run",
        "runs_per_round": runs,
        "concurrency": concurrency,
        "rounds": rounds,
        "runs_per_s": {"median": median_rate, "min": min(rates), "max": max(rates)},
        "p50_ms": statistics.median(r["p50_ms"] for r in results),
        "p99_ms": statistics.median(r["p99_ms"] for r in results),
        "errors": sum(r["errors"] for r in results),
        "commits_per_run": round(statistics.median(r["commits"] / (r["runs"] + 1) for r in results), 2),
        "baseline_raw_aiohttp_req_per_s": round(baseline, 1),
        "ratio_to_baseline": round(median_rate / baseline, 3),
        "rounds_detail": results,
    }


def describe(figures: dict[str, Any]) -> str:
    rate = figures["runs_per_s"]
    return "\n".join(
        [
            f"{figures['workload']}",
            f"  {figures['rounds']} rounds of {figures['runs_per_round']} runs, c={figures['concurrency']}",
            f"  durable runs/s        median {rate['median']}  (min {rate['min']}, max {rate['max']})",
            f"  latency p50 / p99     {figures['p50_ms']} / {figures['p99_ms']} ms (medians of the rounds)",
            f"  errors                {figures['errors']}",
            f"  commits per run       {figures['commits_per_run']} (group commit)",
            f"  baseline: raw aiohttp {figures['baseline_raw_aiohttp_req_per_s']} POST/s to the same server",
            f"  ours / baseline       {figures['ratio_to_baseline']}",
        ]
    )
