"""W1 `chain40`: BEGIN then 39 BECOME on one entity, durable (journal on) and in memory.

Same-run baseline: a plain Python loop doing the same 39 dictionary updates with a precompiled Python
function per node and a trace entry per step: the floor any interpreter of such a chain must pay.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from cosmogen.bench.stats import per_call_rounds, summary
from cosmogen.domain.document import universe_from_raw
from cosmogen.domain.fabric import run_plan
from cosmogen.domain.plan import Plan
from cosmogen.domain.validate import validate


def chain_document(length: int) -> dict[str, Any]:
    nodes: list[dict[str, Any]] = [
        {"id": "n0", "type": "begin", "entity": "counter:1", "properties": {"count": 0}}
    ]
    nodes += [
        {"id": f"n{i}", "type": "become", "entity": "counter:1", "transform": {"count": "count + 1"}}
        for i in range(1, length)
    ]
    edges = [{"source": f"n{i - 1}", "target": f"n{i}"} for i in range(1, length)]
    return {"cosmogen": "universe/1", "name": f"chain{length}", "nodes": nodes, "edges": edges}


def compile_chain(length: int) -> Plan:
    universe, _ = universe_from_raw(chain_document(length))
    report = validate(universe)
    assert report.plan is not None, report.diagnostics
    return report.plan


def _increment(props: dict[str, Any]) -> dict[str, Any]:
    return {**props, "count": props["count"] + 1}


def _baseline(length: int) -> Callable[[], dict[str, Any]]:
    steps = [_increment for _ in range(1, length)]

    def run() -> dict[str, Any]:
        props: dict[str, Any] = {"count": 0}
        trace: list[tuple[dict[str, Any] | None, dict[str, Any]]] = [(None, props)]
        for step in steps:
            after = step(props)
            trace.append((props, after))
            props = after
        return props

    return run


async def _durable_rounds(repeat: int) -> tuple[list[float], list[float]]:
    """chain40 and chain1 through the durable runtime (journal on, SQLite synchronous=FULL), one run at
    a time: seconds per run from queueing to the committed end, after one warm-up run each."""
    import tempfile
    from pathlib import Path

    from cosmogen.runtime.service import Runtime, RuntimeSettings

    with tempfile.TemporaryDirectory() as tmp:
        runtime = await Runtime.open(RuntimeSettings(data_dir=Path(tmp)))
        try:
            figures: list[list[float]] = []
            for length in (40, 1):
                warm = await runtime.submit(chain_document(length))
                await runtime.wait(warm.run_id)
                times = []
                for _ in range(repeat):
                    started = time.perf_counter()
                    run_id = await runtime.start_run(warm.universe_id, warm.version_id)
                    await runtime.wait(run_id)
                    times.append(time.perf_counter() - started)
                figures.append(times)
        finally:
            await runtime.close()
    return figures[0], figures[1]


def run(repeat: int = 7, calls: int = 200) -> dict[str, Any]:
    plan40, plan1 = compile_chain(40), compile_chain(1)
    result = run_plan(plan40)
    assert result.main.entities["counter:1"]["count"] == 39, "chain40 computed a wrong result"
    chain40 = per_call_rounds(lambda: run_plan(plan40), calls=calls, rounds=repeat)
    chain1 = per_call_rounds(lambda: run_plan(plan1), calls=calls, rounds=repeat)
    base = per_call_rounds(_baseline(40), calls=calls, rounds=repeat)
    compile40 = per_call_rounds(lambda: compile_chain(40), calls=5, rounds=repeat)
    per_node = [(a - b) / 39 for a, b in zip(chain40, chain1, strict=True)]
    ours = summary(chain40, 1e3)
    baseline = summary(base, 1e3)
    durable40, durable1 = asyncio.run(_durable_rounds(repeat))
    durable_per_node = [(a - b) / 39 for a, b in zip(sorted(durable40), sorted(durable1), strict=True)]
    return {
        "workload": "W1 chain40",
        "durable_chain40_ms": summary(durable40, 1e3),
        "durable_chain1_ms": summary(durable1, 1e3),
        "durable_per_node_ms": summary(durable_per_node, 1e3),
        "rounds": repeat,
        "calls_per_round": calls,
        "memory_chain40_ms": ours,
        "memory_chain1_ms": summary(chain1, 1e3),
        "memory_per_node_ms": summary(per_node, 1e3),
        "validate_and_compile_chain40_ms": summary(compile40, 1e3),
        "baseline_python_loop_ms": baseline,
        "ratio_to_baseline": round(ours["median"] / baseline["median"], 2),
    }


def describe(figures: dict[str, Any]) -> str:
    def line(label: str, key: str) -> str:
        s = figures[key]
        return f"  {label:<34} median {s['median']:.4f} ms  (min {s['min']:.4f}, max {s['max']:.4f})"

    return "\n".join(
        [
            f"{figures['workload']}: durable, {figures['rounds']} runs each after a warm-up",
            line("durable chain40 run", "durable_chain40_ms"),
            line("durable chain1 run", "durable_chain1_ms"),
            line("durable per-node overhead", "durable_per_node_ms"),
            f"in memory (no journal): {figures['rounds']} rounds of {figures['calls_per_round']} runs",
            line("chain40 run", "memory_chain40_ms"),
            line("chain1 run", "memory_chain1_ms"),
            line("per-node overhead", "memory_per_node_ms"),
            line("validate + compile chain40", "validate_and_compile_chain40_ms"),
            line("baseline: plain Python loop", "baseline_python_loop_ms"),
            f"  ours / baseline: {figures['ratio_to_baseline']}x",
        ]
    )
