"""Benchmark: cosmogen.expr (pure Python) vs `cel` (common-expression-language, Rust core) vs
`celpy` (cel-python).

    .venv/bin/python bench/expr_engines.py [--json] [--quick]

Each figure is the median over several rounds of the mean time per operation within a round; the
spread is the lowest and highest round. The Rust library's map is quadratic and cannot be
interrupted, so at 10^4 elements it runs once in a subprocess with a time limit.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import cel
import celpy

from cosmogen.expr import compile_expression

STATE = {"balance": 100, "tier": "gold"}
RUST_MAP_LIMIT_S = 5.0


def rounds(fn: Callable[[], object], reps: int, n_rounds: int) -> dict[str, float]:
    fn()  # warm-up
    per_op = []
    for _ in range(n_rounds):
        started = time.perf_counter()
        for _ in range(reps):
            fn()
        per_op.append((time.perf_counter() - started) / reps)
    return {
        "median_us": statistics.median(per_op) * 1e6,
        "min_us": min(per_op) * 1e6,
        "max_us": max(per_op) * 1e6,
        "rounds": n_rounds,
        "reps": reps,
    }


def celpy_program(src: str) -> Any:
    env = celpy.Environment()
    return env.program(env.compile(src))


def celpy_compile(src: str) -> Any:
    env = celpy.Environment()
    return env.program(env.compile(src))


def rust_map_10k_in_subprocess() -> dict[str, Any]:
    code = (
        "import cel, time; p = cel.compile('l.map(x, x * 2)'); d = {'l': list(range(10000))};"
        "t = time.perf_counter(); p.execute(d); print(time.perf_counter() - t)"
    )
    try:
        proc = subprocess.run(  # noqa: S603 (our own fixed command)
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=RUST_MAP_LIMIT_S, check=True
        )
    except subprocess.TimeoutExpired:
        return {"skipped": f"> {RUST_MAP_LIMIT_S:.0f} s (killed)"}
    seconds = float(proc.stdout.strip())
    return {
        "median_us": seconds * 1e6,
        "min_us": seconds * 1e6,
        "max_us": seconds * 1e6,
        "rounds": 1,
        "reps": 1,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions, no 10^4 Rust map")
    args = parser.parse_args()
    scale = 0.2 if args.quick else 1.0
    n_rounds = 5 if args.quick else 9

    def reps(n: int) -> int:
        return max(1, int(n * scale))

    add, cond = "balance + 50", "balance < 0 && tier == 'gold'"
    ours_add, ours_cond = compile_expression(add), compile_expression(cond)
    rust_add, rust_cond = cel.compile(add), cel.compile(cond)
    py_add, py_cond = celpy_program(add), celpy_program(cond)
    py_state = {k: celpy.json_to_cel(v) for k, v in STATE.items()}
    results: dict[str, dict[str, Any]] = {
        "compile `balance + 50`": {
            "ours": rounds(lambda: compile_expression(add), reps(2000), n_rounds),
            "cel (Rust)": rounds(lambda: cel.compile(add), reps(2000), n_rounds),
            "celpy": rounds(lambda: celpy_compile(add), reps(100), n_rounds),
        },
        "evaluate `balance + 50`": {
            "ours": rounds(lambda: ours_add.evaluate(STATE), reps(50_000), n_rounds),
            "cel (Rust)": rounds(lambda: rust_add.execute(STATE), reps(50_000), n_rounds),
            "celpy": rounds(lambda: py_add.evaluate(py_state), reps(500), n_rounds),
        },
        "evaluate `balance < 0 && tier == 'gold'`": {
            "ours": rounds(lambda: ours_cond.evaluate(STATE), reps(50_000), n_rounds),
            "cel (Rust)": rounds(lambda: rust_cond.execute(STATE), reps(50_000), n_rounds),
            "celpy": rounds(lambda: py_cond.evaluate(py_state), reps(500), n_rounds),
        },
    }
    map_src = "l.map(x, x * 2)"
    for n in (1_000, 10_000):
        data = {"l": list(range(n))}
        py_data = {"l": celpy.json_to_cel(data["l"])}
        ours_map, py_map = compile_expression(map_src), celpy_program(map_src)
        row: dict[str, Any] = {
            "ours": rounds(lambda e=ours_map, d=data: e.evaluate(d), reps(200_000 // n), n_rounds)
        }
        if n == 1_000:
            rust_map = cel.compile(map_src)
            row["cel (Rust)"] = rounds(lambda p=rust_map, d=data: p.execute(d), reps(20), n_rounds)
        elif args.quick:
            row["cel (Rust)"] = {"skipped": "--quick"}
        else:
            row["cel (Rust)"] = rust_map_10k_in_subprocess()
        row["celpy"] = rounds(lambda p=py_map, d=py_data: p.evaluate(d), 1, 3)
        results[f"map over 10^{len(str(n)) - 1} (`{map_src}`)"] = row

    if args.json:
        print(json.dumps(results, indent=2))
        return
    engines = ["ours", "cel (Rust)", "celpy"]
    print(f"{'operation':48} " + " ".join(f"{e + ' median [min-max]':>30}" for e in engines))
    for name, row in results.items():
        cells = []
        for engine in engines:
            r = row[engine]
            if "skipped" in r:
                cells.append(f"{'skipped: ' + r['skipped']:>30}")
            else:
                cells.append(
                    f"{_fmt(r['median_us']):>12} [{_fmt(r['min_us'])}-{_fmt(r['max_us'])}]".rjust(30)
                )
        print(f"{name:48} " + " ".join(cells))
    print("\nratios (other engine median / ours median; > 1 means ours is faster):")
    for name, row in results.items():
        ours = row["ours"]["median_us"]
        parts = [
            f"{e}: {row[e]['median_us'] / ours:.2f}x" if "median_us" in row[e] else f"{e}: n/a"
            for e in engines[1:]
        ]
        print(f"  {name:46} " + ", ".join(parts))


def _fmt(us: float) -> str:
    if us >= 1e6:
        return f"{us / 1e6:.2f} s"
    if us >= 1e3:
        return f"{us / 1e3:.2f} ms"
    return f"{us:.2f} us"


if __name__ == "__main__":
    main()
