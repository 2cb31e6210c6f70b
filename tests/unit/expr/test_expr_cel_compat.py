"""Our evaluator against `cel` (common-expression-language, Rust core) on comprehension-free
expressions whose semantics agree, plus the known deviations, each with its reason."""

from __future__ import annotations

from typing import Any

import cel
import pytest

from cosmogen.expr import ExprError, compile_expression

STATE: dict[str, Any] = {
    "balance": 150,
    "tier": "gold",
    "tags": ["vip", "eu"],
    "nested": {"a": {"b": 1}, "l": [1, 2, 3]},
    "rate": 2.5,
    "flag": True,
}

AGREE = [
    "1 + 2 * 3",
    "(1 + 2) * 3",
    "7 / 2",
    "-7 / 2",
    "7 % 3",
    "-7 % 3",
    "balance + 50",
    "balance - 200",
    "balance * 3",
    "balance / 4",
    "balance < 0",
    "balance >= 150",
    "balance < 0 && tier == 'gold'",
    "balance > 0 || tier == 'silver'",
    "!flag",
    "flag ? 'yes' : 'no'",
    "rate * 2.0",
    "rate > 2.0",
    "1 == 1.0",
    "1 < 1.5",
    "2.0 > 1",
    "'a' + 'b'",
    "tier + '!'",
    "[1] + [2]",
    "tags + ['x']",
    "'abc' < 'abd'",
    "tier == 'gold'",
    "tier != 'gold'",
    "'vip' in tags",
    "'x' in tags",
    "'a' in nested",
    "1 in [1, 2]",
    "tags[0]",
    "nested.a.b",
    "nested['a']['b']",
    "nested.l[2]",
    "size(tags)",
    "size(nested)",
    "tags.size()",
    "size('gold')",
    "has(nested.a)",
    "has(nested.z)",
    "int('42')",
    "int(2.9)",
    "int(-2.9)",
    "double('1.5')",
    "string(42)",
    "string(1.5)",
    "tier.contains('ol')",
    "tier.startsWith('go')",
    "tier.endsWith('ld')",
    "tier.matches('^g.*d$')",
    "'abc'.matches('b')",
    "[1, 2] == [1, 2]",
    "{'a': [1]} == {'a': [1]}",
    "null == null",
    "1 == 'a'",
    "0x10 + 1",
    "1e3",
    ".5 + 1.0",
    "r'a\\d'",
    "'\\u00e9\\x41'",
    "'''a\nb'''",
    "-9223372036854775808",
    "false && (1 / 0 == 1)",
    "(1 / 0 == 1) || true",
    "true ? 1 : 2",
    "{'k': balance}.k",
]

# Expressions where we knowingly differ from `cel`. Each must still differ (so the table, and
# docs/expressions.md "Deviations from CEL", stay true).
DEVIATIONS: list[tuple[str, str]] = [
    ("1 + 1.5", "we promote mixed int/double arithmetic to double; CEL has no such overload"),
    ("balance * 1.5", "same promotion, the common `balance * 1.05` case"),
    ("string(2.0)", "doubles print in shortest round-trip form with a decimal point ('2.0'); cel prints '2'"),
    ("1.0 / 0.0", "division by zero is an error for doubles too; CEL returns +Inf"),
    ("size('héllo')", "size() counts code points as the CEL spec says; this cel version counts UTF-8 bytes"),
    ("'hello'.upperAscii()", "cel (this version) lacks the cel-go ext strings library"),
    ("math.abs(-5)", "cel (this version) lacks the math extension"),
]


def ours(src: str) -> Any:
    try:
        return ("value", compile_expression(src).evaluate(STATE))
    except ExprError as err:
        return ("error", err.code)


def theirs(src: str) -> Any:
    try:
        return ("value", cel.evaluate(src, STATE))
    except Exception as err:  # the Rust library raises several Python exception types
        return ("error", type(err).__name__)


def _typed(outcome: tuple[str, Any]) -> Any:
    kind, value = outcome
    if kind == "error":
        return ("error",)
    return (kind, value, type(value).__name__)


@pytest.mark.parametrize("src", AGREE)
def test_agrees_with_cel(src: str) -> None:
    mine, reference = ours(src), theirs(src)
    assert _typed(mine) == _typed(reference), (src, mine, reference)


@pytest.mark.parametrize(("src", "reason"), DEVIATIONS)
def test_documented_deviations_still_differ(src: str, reason: str) -> None:
    assert reason
    assert _typed(ours(src)) != _typed(theirs(src)), src


def test_table_size() -> None:
    assert len(AGREE) >= 50
