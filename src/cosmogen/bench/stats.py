"""Small statistics for benchmark rounds: median and spread, nothing clever."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from time import perf_counter


def per_call_rounds(fn: Callable[[], object], *, calls: int, rounds: int, warmup: int = 1) -> list[float]:
    """Seconds per call, one figure per round of `calls` calls, after `warmup` unmeasured rounds."""
    for _ in range(warmup):
        for _ in range(calls):
            fn()
    figures = []
    for _ in range(rounds):
        started = perf_counter()
        for _ in range(calls):
            fn()
        figures.append((perf_counter() - started) / calls)
    return figures


def summary(values: Sequence[float], scale: float = 1.0) -> dict[str, float]:
    """Median, min and max (the spread) of the rounds, multiplied by `scale` (e.g. 1e3 for ms)."""
    return {
        "median": round(statistics.median(values) * scale, 6),
        "min": round(min(values) * scale, 6),
        "max": round(max(values) * scale, 6),
    }
