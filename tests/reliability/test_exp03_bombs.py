"""EXP-03: resource bombs (D.2 "Bombs" and "CEL-specific") end with a value or a typed ExprError,
within 50 ms of thread CPU time, a 1 s watchdog, a 64 MiB peak memory delta and a 1 MiB result."""

from __future__ import annotations

import json
import threading
import time
import tracemalloc
from typing import Any

import pytest

from cosmogen.expr import Budgets, ExprError, compile_expression

CPU_BOUND_S = 0.050
WATCHDOG_S = 1.0
MEMORY_BOUND = 64 << 20
RESULT_BOUND = 1 << 20
BIG_SOURCE = Budgets(max_source_chars=2_000_000)  # lets the depth limits, not the size limit, answer

A_BANG = "a" * 100_000 + "!"
L3 = list(range(1_000))
L5 = list(range(100_000))
L6 = [0] * 1_000_000
S6 = "x" * 1_000_000


def _deep_map(depth: int) -> dict[str, Any]:
    root: dict[str, Any] = {}
    node = root
    for _ in range(depth):
        node["a"] = {}
        node = node["a"]
    return root


N = 10_000
CASES: list[tuple[str, str, dict[str, Any], Budgets | None]] = [
    # D.2 Bombs (Python-style ones are not CEL: they must fail to compile)
    ("pow-tower", "9**9**9", {}, None),
    ("pow-big", "2**10**8", {}, None),
    ("cve-2020-10735", "string(10**4301)", {}, None),
    ("str-repeat", "'a'*10**9", {}, None),
    ("list-repeat", "[0]*10**9", {}, None),
    ("list-depth-10k", "[" * N + "]" * N, {}, None),
    ("list-depth-10k-big-source", "[" * N + "]" * N, {}, BIG_SOURCE),
    ("paren-depth-10k", "(" * N + "1" + ")" * N, {}, None),
    ("paren-depth-10k-big-source", "(" * N + "1" + ")" * N, {}, BIG_SOURCE),
    ("map-depth-10k-big-source", "{'a': " * N + "1" + "}" * N, {}, BIG_SOURCE),
    ("not-chain-10k-big-source", "!" * N + "true", {}, BIG_SOURCE),
    ("neg-chain-10k-big-source", "-" * N + "1", {}, BIG_SOURCE),
    ("member-chain-10k-big-source", "a" + ".b" * N, {}, BIG_SOURCE),
    ("x-plus-x-10k", "x" + " + x" * N, {"x": 1}, None),
    ("x-plus-x-10k-big-source", "x" + " + x" * N, {"x": 1}, BIG_SOURCE),
    ("x-plus-x-at-limit", "x" + " + x" * 250, {"x": "ab"}, None),
    ("mul-chain", " * ".join(["x"] * 60), {"x": 3}, None),
    ("mul-chain-double", " * ".join(["x"] * 200), {"x": 1e10}, None),
    ("macro-nest-1e3", "l.map(a, l.map(b, l.map(c, c)))", {"l": L3}, None),
    ("macro-nest-1e3-exists", "l.exists(a, l.exists(b, l.exists(c, c < 0)))", {"l": L3}, None),
    ("regex-nested-plus", "s.matches('(a+)+$')", {"s": A_BANG}, None),
    ("regex-alternation", "s.matches('(a|aa)*b')", {"s": A_BANG}, None),
    ("regex-dot-star-20", "s.matches('(.*a){20}')", {"s": A_BANG}, None),
    ("regex-dynamic-pattern", "s.matches(p)", {"s": A_BANG, "p": "(.*a){20}"}, None),
    ("regex-in-macro", "l.map(x, s.matches('(x+x+)+y'))", {"l": L3, "s": "x" * 5000}, None),
    ("one-mib-source", "1 + " * (1 << 18) + "1", {}, None),
    ("map-1e5", "l.map(x, x * 2)", {"l": L5}, None),
    ("filter-1e5", "l.filter(x, x % 2 == 0)", {"l": L5}, None),
    ("exists-1e5", "l.exists(x, x < 0)", {"l": L5}, None),
    ("all-1e5", "l.all(x, x >= 0)", {"l": L5}, None),
    # growth through macros
    ("string-growth", "l.map(x, s + s)", {"l": L3, "s": "a" * 100_000}, None),
    ("list-growth", "l.map(x, l + l)", {"l": L3}, None),
    ("join-growth", "l.map(x, string(x)).join(s)", {"l": L3, "s": "a" * 10_000}, None),
    ("replace-growth", "s.replace('a', s)", {"s": "a" * 2_000}, None),
    ("split-growth", "s.split('')", {"s": S6}, None),
    ("map-wide-literal", "l.map(x, [x, x, x, x, x, x, x, x])", {"l": L5[:10_000]}, None),
    # D.2 CEL-specific
    ("int-overflow", "9223372036854775807 + 1", {}, None),
    ("int-overflow-var", "x + 1", {"x": 2**63 - 1}, None),
    ("div-zero", "x / 0", {"x": 1}, None),
    ("size-1e6-list", "size(l)", {"l": L6}, None),
    ("in-1e6-list", "1 in l", {"l": L6}, None),
    ("eq-1e6-lists", "l == m", {"l": L6, "m": list(L6)}, None),
    (
        "has-deep",
        "has(m.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.b)",
        {"m": _deep_map(40)},
        None,
    ),
    ("has-deep-missing", "has(m.a.a.a.a.a.a.a.a.a.a.z.a.a)", {"m": _deep_map(40)}, None),
    ("deep-input-returned", "m", {"m": _deep_map(5_000)}, None),
    ("unknown-function", "system('id')", {}, None),
    ("string-1e6", "size(s)", {"s": S6}, None),
    ("string-1e6-concat", "s + s", {"s": S6}, None),
    ("string-1e6-contains", "s.contains('y')", {"s": S6}, None),
    ("string-1e6-upper", "s.upperAscii().size()", {"s": S6}, None),
    ("string-1e6-compare-in-macro", "l.map(x, s < t)", {"l": L3, "s": S6, "t": S6 + "y"}, None),
    ("string-1e6-returned", "s", {"s": S6}, None),
    ("list-1e6-returned", "l", {"l": L6}, None),
]


def run_case(src: str, state: dict[str, Any], budgets: Budgets | None) -> tuple[str, Any, float]:
    started = time.thread_time()
    try:
        expr = compile_expression(src) if budgets is None else compile_expression(src, budgets=budgets)
        outcome: tuple[str, Any] = ("value", expr.evaluate(state))
    except ExprError as err:
        outcome = ("error", err.code)
    return outcome[0], outcome[1], time.thread_time() - started


def in_watchdog(src: str, state: dict[str, Any], budgets: Budgets | None) -> tuple[str, Any, float]:
    box: list[Any] = []

    def target() -> None:
        try:
            box.append(run_case(src, state, budgets))
        except BaseException as exc:  # reported below as a failure
            box.append(exc)

    worker = threading.Thread(target=target, daemon=True)
    worker.start()
    worker.join(WATCHDOG_S)
    assert not worker.is_alive(), f"watchdog: {src[:60]!r} still running after {WATCHDOG_S} s"
    (result,) = box
    if isinstance(result, BaseException):
        raise AssertionError(f"{src[:60]!r} raised {type(result).__name__}, not an ExprError") from result
    return result  # type: ignore[no-any-return]


@pytest.mark.parametrize(("name", "src", "state", "budgets"), CASES, ids=[c[0] for c in CASES])
def test_bomb_is_bounded(name: str, src: str, state: dict[str, Any], budgets: Budgets | None) -> None:
    in_watchdog(src, state, budgets)  # warm-up (imports, first-call costs)
    cpu = min(in_watchdog(src, state, budgets)[2] for _ in range(3))
    kind, value, _ = in_watchdog(src, state, budgets)
    assert cpu <= CPU_BOUND_S, f"{name}: {cpu * 1000:.1f} ms of CPU"
    if kind == "value":
        assert len(json.dumps(value)) <= RESULT_BOUND + 2
    else:
        assert value != "internal"

    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        run_case(src, state, budgets)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert peak <= MEMORY_BOUND, f"{name}: peak memory delta {peak / 2**20:.1f} MiB"


EXPECTED = {
    "pow-tower": "syntax",
    "str-repeat": "syntax",
    "list-depth-10k": "too_long",
    "list-depth-10k-big-source": "too_deep",
    "paren-depth-10k-big-source": "too_deep",
    "map-depth-10k-big-source": "too_deep",
    "not-chain-10k-big-source": "too_deep",
    "neg-chain-10k-big-source": "too_deep",
    "member-chain-10k-big-source": "too_deep",
    "x-plus-x-10k-big-source": "too_deep",
    "mul-chain": "overflow",
    "macro-nest-1e3": "cost_exceeded",
    "regex-alternation": "cost_exceeded",
    "regex-dot-star-20": "cost_exceeded",
    "regex-dynamic-pattern": "cost_exceeded",
    "one-mib-source": "too_long",
    "map-1e5": "cost_exceeded",
    "filter-1e5": "cost_exceeded",
    "string-growth": "cost_exceeded",
    "replace-growth": "result_too_large",
    "split-growth": "result_too_large",
    "int-overflow": "overflow",
    "int-overflow-var": "overflow",
    "div-zero": "division_by_zero",
    "in-1e6-list": "cost_exceeded",
    "eq-1e6-lists": "cost_exceeded",
    "unknown-function": "unknown_function",
    "string-1e6-concat": "result_too_large",
    "list-1e6-returned": "result_too_large",
    "deep-input-returned": "too_deep",
}


@pytest.mark.parametrize(("name", "code"), sorted(EXPECTED.items()))
def test_bomb_outcome(name: str, code: str) -> None:
    _, src, state, budgets = next(c for c in CASES if c[0] == name)
    assert run_case(src, state, budgets)[:2] == ("error", code)


def test_legitimate_large_work_still_succeeds() -> None:
    assert run_case("size(l)", {"l": L6}, None)[:2] == ("value", 1_000_000)
    assert run_case("s.matches('(a+)+$')", {"s": A_BANG}, None)[:2] == ("value", False)
    assert run_case("l.all(x, x >= 0)", {"l": L5[:30_000]}, None)[:2] == ("value", True)
