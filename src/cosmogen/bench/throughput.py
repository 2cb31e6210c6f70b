"""W2 `throughput`: durable 3-node runs (manual trigger -> HTTP POST -> BECOME using the response).

The provider stand-in is the echo server in a separate process (it answers 200 with a small JSON at
once), so it does not share this process's event loop. Same-run baseline: raw aiohttp POST round
trips per second to the same server at the same concurrency, the ceiling for one call per run.

The provider variant, in the same invocation: the same runs against the provider simulator (its own
process, no limit enforced), once with the call as a plain HTTP node (the API key written in the
request) and once as an OpenAI chat binding through a saved account: the account looked up, its key
read from the vault, a token taken from the shared rate limiter (a generous limit, so nobody waits),
the answer scrubbed and normalised. Same server, same endpoint, same body: the ratio of the two rates
is what those protections cost per run.
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
from cosmogen.integrations import credentials
from cosmogen.integrations.egress import EgressPolicy
from cosmogen.integrations.secret import Secret
from cosmogen.runtime.service import Runtime, RuntimeSettings
from cosmogen.testing.simulator import DEFAULT_API_KEY
from cosmogen.testing.simulator.admin import AdminClient

# The provider variant's limit: far above what the runs can reach, so a token never waits, but taken
# (one limiter transaction per call) like any limited account's.
GENEROUS_LIMIT = {"requests": 100_000, "per": "1s", "burst": 1_000}


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


def _two_nodes_around(binding: dict[str, Any], receipt: str) -> dict[str, Any]:
    """W2's shape with another call in the middle node; `receipt` reads its answer."""
    return {
        "cosmogen": "universe/1",
        "name": f"w2-{binding['id']}",
        "nodes": [
            {"id": "start", "type": "begin", "entity": "order:1", "properties": {"total": 10}},
            {"id": "charge", "type": "become", "entity": "order:1", "transform": {"charged": "true"}},
            {"id": "record", "type": "become", "entity": "order:1", "transform": {"receipt": receipt}},
        ],
        "edges": [{"source": "start", "target": "charge"}, {"source": "charge", "target": "record"}],
        "bindings": [{"node": "charge", **binding}],
    }


def plain_chat_document(sim_url: str) -> dict[str, Any]:
    """The chat call as a plain HTTP node: the request the OpenAI binding sends, written by hand."""
    request = {
        "url": sim_url + "/v1/chat/completions",
        "headers": {"Authorization": f"Bearer {DEFAULT_API_KEY}"},
        "body": {
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": "Charge {{ total }}"}],
            "max_completion_tokens": 5,
            "temperature": 1.0,
        },
    }
    return _two_nodes_around({"id": "plain", "request": request}, "nodes.charge.bindings.plain.body.id")


def provider_chat_document() -> dict[str, Any]:
    """The same call as an OpenAI chat binding through the saved account `w2`."""
    binding = {
        "id": "chat",
        "kind": "provider",
        "capability": "openai.chat",
        "account": "w2",
        "settings": {"prompt": "Charge {{ total }}", "max_tokens": 5},
    }
    return _two_nodes_around(binding, "nodes.charge.bindings.chat.output.text")


async def _connect_w2_account(runtime: Runtime, sim_url: str) -> None:
    vault = runtime.open_vault()
    account_id = await runtime.writer.write(
        credentials.create_account(
            workspace_id=runtime.settings.workspace,
            provider="openai",
            name="w2",
            base_url=sim_url,
            auth_kind="api_key",
            settings={"rate_limit": GENEROUS_LIMIT},
        )
    )
    await runtime.writer.write(credentials.put_secret(vault, account_id, "api_key", Secret(DEFAULT_API_KEY)))
    await runtime.writer.write(credentials.set_account_status(account_id, "connected"))


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


async def _runs(
    url: str, data_dir: Path, runs: int, concurrency: int, *, doc: dict[str, Any] | None = None
) -> dict[str, Any]:
    """`runs` runs of `doc` (default: W2's echo document) at `concurrency`, after one warm-up run. A
    document calling the account `w2` gets it connected first, to the simulator at `url`."""
    settings = RuntimeSettings(
        data_dir=data_dir, egress=EgressPolicy.from_strings(networks="127.0.0.1/32"), concurrency=concurrency
    )
    runtime = await Runtime.open(settings)
    try:
        doc = doc or document(url)
        if any(b.get("account") == "w2" for b in doc["bindings"]):
            await _connect_w2_account(runtime, url)
        warm = await runtime.submit(doc)
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


def run(runs: int = 1000, concurrency: int = 16, rounds: int = 3, *, provider: bool = True) -> dict[str, Any]:
    results: list[dict[str, Any]] = []
    baselines: list[float] = []
    with EchoProcess() as url:
        for _ in range(rounds):
            with tempfile.TemporaryDirectory() as tmp:
                baselines.append(asyncio.run(_baseline(url, runs, concurrency)))
                results.append(asyncio.run(_runs(url, Path(tmp), runs, concurrency)))
    figures = _echo_figures(results, baselines, runs, concurrency, rounds)
    if provider:
        figures["provider_variant"] = _provider_variant(runs, concurrency, rounds)
    return figures


def _provider_variant(runs: int, concurrency: int, rounds: int) -> dict[str, Any]:
    """Plain HTTP node vs OpenAI chat binding, alternating round by round against one simulator."""
    from cosmogen.bench.ratelimit import simulator_process

    plain: list[dict[str, Any]] = []
    bound: list[dict[str, Any]] = []
    with simulator_process() as sim_url:
        admin = AdminClient(sim_url)
        for _ in range(rounds):
            for doc, into in ((plain_chat_document(sim_url), plain), (provider_chat_document(), bound)):
                admin.reset()  # the simulator's request log would otherwise grow with every round
                with tempfile.TemporaryDirectory() as tmp:
                    into.append(asyncio.run(_runs(sim_url, Path(tmp), runs, concurrency, doc=doc)))
                calls = admin.stats("openai.chat")["requests"]
                if calls != runs + 1:  # the measured runs and the warm-up run, one call each
                    raise RuntimeError(f"expected {runs + 1} calls at the simulator, it saw {calls}")
    plain_rate = statistics.median(r["runs_per_s"] for r in plain)
    bound_rate = statistics.median(r["runs_per_s"] for r in bound)

    def side(results: list[dict[str, Any]]) -> dict[str, Any]:
        rates = [r["runs_per_s"] for r in results]
        return {
            "runs_per_s": {"median": statistics.median(rates), "min": min(rates), "max": max(rates)},
            "p50_ms": statistics.median(r["p50_ms"] for r in results),
            "p99_ms": statistics.median(r["p99_ms"] for r in results),
            "errors": sum(r["errors"] for r in results),
        }

    return {
        "what": "same simulator endpoint (POST /v1/chat/completions): plain HTTP node vs OpenAI chat "
        "binding through an account (vault, shared limiter with a generous limit)",
        "plain_http_node": side(plain),
        "openai_binding": side(bound),
        "binding_over_plain": round(bound_rate / plain_rate, 3),
    }


def _echo_figures(
    results: list[dict[str, Any]], baselines: list[float], runs: int, concurrency: int, rounds: int
) -> dict[str, Any]:
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
            *_describe_provider(figures.get("provider_variant")),
        ]
    )


def _describe_provider(variant: dict[str, Any] | None) -> list[str]:
    if variant is None:
        return []
    lines = ["provider variant: " + variant["what"]]
    for name in ("plain_http_node", "openai_binding"):
        d = variant[name]
        rate = d["runs_per_s"]
        lines.append(
            f"  {name:<17} runs/s median {rate['median']} (min {rate['min']}, max {rate['max']}); "
            f"p50 / p99 {d['p50_ms']} / {d['p99_ms']} ms; errors {d['errors']}"
        )
    lines.append(f"  binding / plain   {variant['binding_over_plain']}")
    return lines
