"""Budgets: cost metering, result size, regex cost, and typed errors instead of crashes."""

from __future__ import annotations

import dataclasses
import time

import pytest

from cosmogen.expr import DEFAULT_BUDGETS, Budgets, CompileError, EvalError, compile_expression


def test_defaults() -> None:
    assert DEFAULT_BUDGETS.max_source_chars == 8192
    assert DEFAULT_BUDGETS.max_depth == 64
    assert DEFAULT_BUDGETS.max_cost == 100_000
    assert DEFAULT_BUDGETS.max_result_bytes == 1 << 20
    assert DEFAULT_BUDGETS.max_comprehension_nesting == 3
    with pytest.raises(dataclasses.FrozenInstanceError):
        DEFAULT_BUDGETS.max_cost = 1  # type: ignore[misc]


def test_one_mebibyte_source_fails_fast() -> None:
    source = "1 + " * (1 << 18)
    started = time.perf_counter()
    with pytest.raises(CompileError) as info:
        compile_expression(source)
    assert time.perf_counter() - started < 0.01
    assert info.value.code == "too_long"
    assert str(1 << 20) in info.value.message and "8192" in info.value.message


def test_comprehension_beyond_budget_fails_before_iterating() -> None:
    e = compile_expression("l.map(x, x * 2)")
    data = {"l": list(range(100_000))}
    started = time.perf_counter()
    with pytest.raises(EvalError) as info:
        e.evaluate(data)
    assert time.perf_counter() - started < 0.005
    assert info.value.code == "cost_exceeded"
    assert info.value.position is not None


def test_cost_budget_is_configurable() -> None:
    e = compile_expression("l.exists(x, x < 0)", budgets=Budgets(max_cost=50))
    assert e.evaluate({"l": list(range(10))}) is False
    with pytest.raises(EvalError) as info:
        e.evaluate({"l": list(range(100))})
    assert info.value.code == "cost_exceeded"


def test_nested_comprehensions_multiply() -> None:
    e = compile_expression("l.map(a, l.map(b, a * b))")
    assert len(e.evaluate({"l": list(range(50))})) == 50
    with pytest.raises(EvalError) as info:
        e.evaluate({"l": list(range(1000))})
    assert info.value.code == "cost_exceeded"


def test_map_over_ten_thousand_is_linear() -> None:
    e = compile_expression("l.map(x, x * 2)")
    timings = []
    for n in (2_000, 10_000):
        data = {"l": list(range(n))}
        best = min(_timed(e.evaluate, data) for _ in range(5))
        timings.append(best / n)
    assert e.evaluate({"l": list(range(10_000))})[-1] == 19_998
    # per-element time must not grow with n (quadratic would be 5x)
    assert timings[1] < timings[0] * 2.5


def _timed(fn: object, arg: object) -> float:
    started = time.perf_counter()
    fn(arg)  # type: ignore[operator]
    return time.perf_counter() - started


@pytest.mark.parametrize(
    ("src", "state"),
    [
        ("s + s", {"s": "x" * 600_000}),
        ("l + l", {"l": [0] * 100_000}),
        ("s.replace('x', 'yy')", {"s": "x" * 600_000}),
        ("l.join(s)", {"l": ["a"] * 1000, "s": "x" * 2000}),
        ("s.split('')", {"s": "x" * 200_000}),
        ("l", {"l": [0] * 200_000}),
        ("s.upperAscii()", {"s": "x" * (2 << 20)}),
    ],
)
def test_results_over_the_size_limit(src: str, state: dict[str, object]) -> None:
    with pytest.raises(EvalError) as info:
        compile_expression(src).evaluate(state)
    assert info.value.code == "result_too_large"


def test_growth_through_macros_is_stopped() -> None:
    with pytest.raises(EvalError) as info:
        compile_expression("l.map(x, s + s)").evaluate({"l": list(range(1000)), "s": "a" * 100_000})
    assert info.value.code in ("cost_exceeded", "result_too_large")


def test_budget_errors_are_not_absorbed() -> None:
    e = compile_expression("l.map(x, x).size() > 0 || true", budgets=Budgets(max_cost=10))
    with pytest.raises(EvalError) as info:
        e.evaluate({"l": list(range(100))})
    assert info.value.code == "cost_exceeded"


def test_regex_cost_cap() -> None:
    e = compile_expression("s.matches('(.*a){20}')")
    assert e.evaluate({"s": "a" * 100}) is True
    with pytest.raises(EvalError) as info:
        e.evaluate({"s": "a" * 100_000 + "!"})
    assert info.value.code == "cost_exceeded"
    # a simple pattern over a long string is fine
    assert compile_expression("s.matches('(a+)+$')").evaluate({"s": "a" * 100_000 + "!"}) is False


def test_regex_length_cap() -> None:
    with pytest.raises(EvalError) as info:
        compile_expression("'a'.matches(p)").evaluate({"p": "a" * 5000})
    assert info.value.code == "bad_regex"


def test_list_scans_are_metered() -> None:
    with pytest.raises(EvalError) as info:
        compile_expression("1 in l").evaluate({"l": [0] * 1_000_000})
    assert info.value.code == "cost_exceeded"
    assert compile_expression("1 in l").evaluate({"l": [0] * 1000 + [1]}) is True


def test_constant_time_expressions_are_unmetered_and_fast() -> None:
    e = compile_expression("balance + 50")
    data = {"balance": 100}
    e.evaluate(data)
    best = min(_timed(lambda d: [e.evaluate(d) for _ in range(1000)], data) for _ in range(5)) / 1000
    assert best < 20e-6  # ~1 us here; a generous bound for slow CI machines
