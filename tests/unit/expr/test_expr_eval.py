"""Evaluation: operators, numbers, errors, error absorption, functions, macros and values."""

from __future__ import annotations

import math
from typing import Any

import pytest

from cosmogen.expr import EvalError, ExprError, compile_expression

STATE: dict[str, Any] = {
    "balance": 150,
    "rate": 1.5,
    "tier": "gold",
    "tags": ["vip", "eu"],
    "nested": {"a": {"b": {"c": 1}}, "list": [1, 2, 3]},
    "empty": {},
    "nothing": None,
    "flag": True,
}
INT_MAX = 2**63 - 1
INT_MIN = -(2**63)


def ev(src: str, state: dict[str, Any] | None = None) -> Any:
    return compile_expression(src).evaluate(STATE if state is None else state)


def error(src: str, state: dict[str, Any] | None = None) -> EvalError:
    with pytest.raises(EvalError) as info:
        ev(src, state)
    return info.value


@pytest.mark.parametrize(
    ("src", "expected"),
    [
        ("balance + 50", 200),
        ("balance - 200", -50),
        ("balance * 2", 300),
        ("balance / 7", 21),
        ("-7 / 2", -3),
        ("7 / -2", -3),
        ("-7 % 3", -1),
        ("7 % -3", 1),
        ("balance % 7", 3),
        ("-balance", -150),
        ("balance * 1.05", 157.5),
        ("1 + 1.5", 2.5),
        ("3 / 2.0", 1.5),
        ("rate * 2", 3.0),
        ("1.0 - 2", -1.0),
        ("2 - 1.0", 1.0),
        ("10 * rate", 15.0),
        ("'a' + 'b'", "ab"),
        ("tier + '!'", "gold!"),
        ("[1] + [2, 3]", [1, 2, 3]),
        ("tags + ['x']", ["vip", "eu", "x"]),
        ("balance < 200", True),
        ("balance <= 150", True),
        ("balance > 150", False),
        ("balance >= 150.0", True),
        ("1 < 1.5", True),
        ("2.5 > 2", True),
        ("0 > balance", False),
        ("'abc' < 'abd'", True),
        ("'b' >= 'a'", True),
        ("false < true", True),
        ("balance == 150", True),
        ("balance == 150.0", True),
        ("150 == balance", True),
        ("balance != 150", False),
        ("1 == 'a'", False),
        ("1 != 'a'", True),
        ("null == nothing", True),
        ("nothing == 0", False),
        ("[1, 2] == [1, 2]", True),
        ("[1, 2] == [1.0, 2.0]", True),
        ("[1, 2] == [2, 1]", False),
        ("{'a': [1]} == {'a': [1]}", True),
        ("{'a': 1} == {'b': 1}", False),
        ("[true] == [1]", False),
        ("true == 1", False),
        ("'vip' in tags", True),
        ("'x' in tags", False),
        ("'a' in nested", True),
        ("'z' in nested", False),
        ("1 in [1.0]", True),
        ("1 in {'1': 1}", False),
        ("!flag", False),
        ("flag ? 'y' : 'n'", "y"),
        ("balance > 100 ? balance * 2 : 0", 300),
        ("tags[1]", "eu"),
        ("tags[1.0]", "eu"),
        ("nested.a.b.c", 1),
        ("nested['a']['b'].c", 1),
        ("nested.list[2]", 3),
        ("{'k': balance}.k", 150),
        ("[tags, nothing]", [["vip", "eu"], None]),
    ],
)
def test_operators(src: str, expected: Any) -> None:
    result = ev(src)
    assert result == expected
    assert type(result) is type(expected)


@pytest.mark.parametrize(
    "src",
    [
        "9223372036854775807 + 1",
        "-9223372036854775808 - 1",
        "9223372036854775807 * 2",
        "-(-x)",
        "big + 1",
        "1 + big",
        "big + small",
        "big * big",
        "-9223372036854775808 / -1",
        "-9223372036854775808 % -1",
        "int(1e19)",
        "int('9223372036854775808')",
        "math.abs(-9223372036854775808)",
        "[1, 2].map(x, x * big)",
    ],
)
def test_int_overflow_is_an_error(src: str) -> None:
    err = error(src, {"big": INT_MAX, "small": 5, "x": INT_MIN})
    assert err.code == "overflow"
    assert err.position is not None


def test_int_literal_overflow_is_found_at_compile_time() -> None:
    with pytest.raises(ExprError) as info:
        compile_expression("-(-9223372036854775808)")
    assert info.value.code == "overflow"


def test_int_boundaries_are_fine() -> None:
    assert ev("9223372036854775806 + 1") == INT_MAX
    assert ev("-9223372036854775807 - 1") == INT_MIN
    assert ev("big * 1", {"big": INT_MAX}) == INT_MAX


def test_out_of_range_int_input_cannot_leak_out() -> None:
    assert error("x", {"x": 2**70}).code == "overflow"


@pytest.mark.parametrize("src", ["1 / 0", "1 % 0", "balance / zero", "1.5 / 0", "1 / 0.0", "balance % zero"])
def test_division_by_zero(src: str) -> None:
    err = error(src, {"balance": 1, "zero": 0})
    assert err.code == "division_by_zero"
    assert err.hint


@pytest.mark.parametrize(
    ("src", "expected"),
    [
        ("false && (1 / 0 == 1)", False),
        ("(1 / 0 == 1) && false", False),
        ("true || (1 / 0 == 1)", True),
        ("(1 / 0 == 1) || true", True),
        ("missing.x || true", True),
        ("false && missing", False),
        ("(1 && true) || true", True),
        ("1 || true", True),
        ("tags.exists(t, t.size() == 2 || 1 / 0 == 1)", True),
        ("[0, 1].all(x, 1 / x > 5)", False),
        ("[0, 1].exists(x, 1 / x == 1)", True),
    ],
)
def test_error_absorption(src: str, expected: bool) -> None:
    assert ev(src) is expected


@pytest.mark.parametrize(
    ("src", "code"),
    [
        ("true && (1 / 0 == 1)", "division_by_zero"),
        ("(1 / 0 == 1) || false", "division_by_zero"),
        ("1 && true", "no_such_overload"),
        ("true && 1", "no_such_overload"),
        ("[0, 2].all(x, 2 / x > 0)", "division_by_zero"),
        ("[1].all(x, x)", "no_such_overload"),
        ("[0].exists_one(x, 1 / x == 1)", "division_by_zero"),
        ("[1].filter(x, 1)", "no_such_overload"),
        ("1 ? 2 : 3", "no_such_overload"),
        ("!1", "no_such_overload"),
        ("-'a'", "no_such_overload"),
        ("'a' + 1", "no_such_overload"),
        ("'a' - 1", "no_such_overload"),
        ("'a' * 2", "no_such_overload"),
        ("[1] + 1", "no_such_overload"),
        ("1.5 % 1", "no_such_overload"),
        ("1 < 'a'", "no_such_overload"),
        ("[1] < [2]", "no_such_overload"),
        ("null < 1", "no_such_overload"),
        ("1 in 1", "no_such_overload"),
        ("tags['a']", "no_such_overload"),
        ("tier[0]", "no_such_overload"),
        ("tags[5]", "index_out_of_range"),
        ("tags[-1]", "index_out_of_range"),
        ("balance.x", "no_such_field"),
        ("nested.zzz", "no_such_key"),
        ("nested['zzz']", "no_such_key"),
        ("nothing.x", "no_such_field"),
        ("balnce + 1", "undefined_variable"),
        ("{'a': 1, 'a': 2}", "duplicate_key"),
        ("{1: 2}", "invalid_argument"),
    ],
)
def test_runtime_errors(src: str, code: str) -> None:
    err = error(src)
    assert err.code == code, err
    assert err.position is not None
    assert isinstance(err, ExprError)


def test_string_concat_hint() -> None:
    assert error("'a' + 1").hint == "convert with string(x)"


def test_missing_key_message_lists_keys_and_hint() -> None:
    err = error("m.balanse", {"m": {f"k{i}": i for i in range(8)} | {"balance": 1}})
    assert "'balanse'" in err.message
    assert "'k0'" in err.message and "..." in err.message
    assert err.hint is not None and "balance" in err.hint


def test_undefined_variable_did_you_mean() -> None:
    err = error("balnce > 0")
    assert err.code == "undefined_variable"
    assert err.hint == "did you mean 'balance'?"
    assert err.position is not None and err.position.column == 1


def test_error_position_points_at_operator() -> None:
    err = error("balance +\n  tier")
    assert err.position is not None
    assert (err.position.line, err.position.column) == (1, 9)


@pytest.mark.parametrize(
    ("src", "expected"),
    [
        ("size('héllo')", 5),
        ("size(tags)", 2),
        ("size(nested)", 2),
        ("tier.size()", 4),
        ("int('42')", 42),
        ("int('-7')", -7),
        ("int(3.9)", 3),
        ("int(-3.9)", -3),
        ("int(5)", 5),
        ("double('1.5')", 1.5),
        ("double('1e3')", 1000.0),
        ("double(2)", 2.0),
        ("string(42)", "42"),
        ("string(1.5)", "1.5"),
        ("string(2.0)", "2.0"),
        ("string(true)", "true"),
        ("string('s')", "s"),
        ("bool('true')", True),
        ("bool('F')", False),
        ("bool(true)", True),
        ("dyn(balance)", 150),
        ("tier.contains('ol')", True),
        ("tier.startsWith('go')", True),
        ("tier.endsWith('x')", False),
        ("tier.matches('^g.l')", True),
        ("matches(tier, 'd$')", True),
        ("tier.matches(pattern)", True),
        ("'HeLLo é'.lowerAscii()", "hello é"),
        ("'hello é'.upperAscii()", "HELLO é"),
        ("'  x y \\n'.trim()", "x y"),
        ("'aaa'.replace('a', 'b')", "bbb"),
        ("'aaa'.replace('a', 'b', 2)", "bba"),
        ("'abc'.replace('', '-')", "-a-b-c-"),
        ("'a,b,,c'.split(',')", ["a", "b", "", "c"]),
        ("'a,b,c'.split(',', 2)", ["a", "b,c"]),
        ("'a,b'.split(',', 0)", []),
        ("'abc'.split('')", ["a", "b", "c"]),
        ("['a', 'b'].join()", "ab"),
        ("['a', 'b'].join('-')", "a-b"),
        ("'hello'.substring(1)", "ello"),
        ("'hello'.substring(1, 3)", "el"),
        ("'héllo'.indexOf('l')", 2),
        ("'hello'.indexOf('l', 3)", 3),
        ("'hello'.indexOf('z')", -1),
        ("'hello'.lastIndexOf('l')", 3),
        ("math.greatest(1, 5, 3)", 5),
        ("math.greatest(1, 5.5, 3)", 5.5),
        ("math.greatest([3, 9, 2])", 9),
        ("math.least(4, 2.5)", 2.5),
        ("math.least([3, 1, 2])", 1),
        ("math.abs(-5)", 5),
        ("math.abs(-5.5)", 5.5),
        ("math.ceil(1.2)", 2.0),
        ("math.floor(-1.2)", -2.0),
        ("math.round(2.5)", 3.0),
        ("math.round(-2.5)", -3.0),
        ("math.round(2.4)", 2.0),
        ("math.floor(7)", 7),
    ],
)
def test_functions(src: str, expected: Any) -> None:
    result = ev(src, {**STATE, "pattern": "o.d"})
    assert result == expected
    assert type(result) is type(expected)


@pytest.mark.parametrize(
    ("src", "code"),
    [
        ("int('abc')", "invalid_argument"),
        ("int('1.5')", "invalid_argument"),
        ("int(' 1')", "invalid_argument"),
        ("int(true)", "no_such_overload"),
        ("double('x')", "invalid_argument"),
        ("double('1_000')", "invalid_argument"),
        ("bool('yes')", "invalid_argument"),
        ("string(null)", "no_such_overload"),
        ("string([1])", "no_such_overload"),
        ("size(1)", "no_such_overload"),
        ("tier.contains(1)", "no_such_overload"),
        ("'abc'.substring(2, 1)", "index_out_of_range"),
        ("'abc'.substring(4)", "index_out_of_range"),
        ("'abc'.indexOf('a', 9)", "index_out_of_range"),
        ("[1, 2].join()", "invalid_argument"),
        ("math.greatest('a', 'b')", "no_such_overload"),
        ("math.greatest([])", "invalid_argument"),
        ("tier.matches('(')", "bad_regex"),
        ("tier.matches(pattern)", "bad_regex"),
        ("tier.matches('(a)\\\\1')", "bad_regex"),
        ("int(nan)", "overflow"),
    ],
)
def test_function_errors(src: str, code: str) -> None:
    state = {**STATE, "pattern": "(", "nan": math.nan}
    with pytest.raises(ExprError) as info:
        compile_expression(src).evaluate(state)
    assert info.value.code == code, info.value


def test_matches_uses_re2_semantics() -> None:
    # RE2 has no backreferences; a Python `re` fallback would accept this pattern.
    with pytest.raises(ExprError) as info:
        compile_expression("'aa'.matches('(a)\\\\1')")
    assert info.value.code == "bad_regex"


@pytest.mark.parametrize(
    ("src", "expected"),
    [
        ("[1, 2, 3].map(x, x * 2)", [2, 4, 6]),
        ("[1, 2, 3].map(x, x > 1, x * 10)", [20, 30]),
        ("[1, 2, 3].filter(x, x % 2 == 1)", [1, 3]),
        ("[1, 2, 3].all(x, x > 0)", True),
        ("[1, 2, 3].all(x, x > 1)", False),
        ("[1, 2, 3].exists(x, x > 2)", True),
        ("[1, 2, 3].exists(x, x > 3)", False),
        ("[1, 2, 3].exists_one(x, x > 2)", True),
        ("[1, 2, 3].exists_one(x, x > 1)", False),
        ("[].all(x, false)", True),
        ("[].exists(x, true)", False),
        ("{'a': 1, 'b': 2}.map(k, k)", ["a", "b"]),
        ("{'a': 1, 'b': 2}.filter(k, k == 'b')", ["b"]),
        ("nested.all(k, k in nested)", True),
        ("tags.map(t, t + '!')", ["vip!", "eu!"]),
        ("[[1, 2], [3]].map(l, l.map(x, x + 1))", [[2, 3], [4]]),
        ("[1, 2].map(x, [3, 4].map(y, x * y))", [[3, 4], [6, 8]]),
        ("[1, 2].map(x, [3].map(x, x))", [[3], [3]]),
        ("[1, 2].map(x, x).map(x, x + 1)", [2, 3]),
        ("[{'n': 1}, {'n': 2}].filter(e, e.n > 1).map(e, e.n)", [2]),
    ],
)
def test_macros(src: str, expected: Any) -> None:
    assert ev(src) == expected


@pytest.mark.parametrize(
    ("src", "code"),
    [
        ("tags.map(1, 2)", "bad_macro"),
        ("tags.map(x)", "bad_macro"),
        ("tags.all(x.y, true)", "bad_macro"),
        ("tags.filter(x, x, x)", "bad_macro"),
        ("has(balance)", "bad_macro"),
        ("has(a, b)", "bad_macro"),
        ("foo(1)", "unknown_function"),
        ("tags.foo()", "unknown_function"),
        ("math.pow(2, 3)", "unknown_function"),
        ("contains('a', 'b')", "unknown_function"),
        ("tier.int()", "unknown_function"),
        ("size(1, 2)", "bad_arity"),
        ("tier.contains()", "bad_arity"),
        ("math.greatest()", "bad_arity"),
        ("'a'.matches('(')", "bad_regex"),
    ],
)
def test_compile_time_call_errors(src: str, code: str) -> None:
    with pytest.raises(ExprError) as info:
        compile_expression(src)
    assert info.value.code == code


def test_unknown_function_hint() -> None:
    with pytest.raises(ExprError) as info:
        compile_expression("tier.startswith('g')")
    assert info.value.hint == "did you mean startsWith()?"
    with pytest.raises(ExprError) as info:
        compile_expression("contains(tier, 'g')")
    assert info.value.hint is not None and "x.contains" in info.value.hint


def test_macro_on_non_collection() -> None:
    assert error("balance.map(x, x)").code == "no_such_overload"


def test_has() -> None:
    assert ev("has(nested.a)") is True
    assert ev("has(nested.zz)") is False
    assert ev("has(nested.a.b.c)") is True
    assert ev("has(nested.a.b.z)") is False
    assert error("has(nested.x.y)").code == "no_such_key"
    assert error("has(tier.x)").code == "no_such_overload"
    assert ev("has(nested.a) ? nested.a.b.c : 0") == 1


class Foreign:
    def __eq__(self, other: object) -> bool:
        raise AssertionError("the evaluator must not call user objects")

    __hash__ = object.__hash__


@pytest.mark.parametrize(
    "src",
    [
        "obj",
        "obj == 1",
        "[obj] == [1]",
        "1 in [obj]",
        "holder.o",
        "items[0]",
        "items.map(x, x)",
        "holder",
        "items",
    ],
)
def test_foreign_python_objects_are_refused_when_touched(src: str) -> None:
    state = {"obj": Foreign(), "holder": {"o": Foreign()}, "items": [Foreign()], "t": (1, 2)}
    err = error(src, state)
    assert err.code == "unsupported_value"
    assert "Foreign" not in str(err)


def test_untouched_foreign_objects_are_ignored() -> None:
    assert ev("x + 1", {"x": 1, "obj": Foreign(), "holder": {"o": Foreign()}}) == 2
    assert ev("holder.ok", {"holder": {"o": Foreign(), "ok": 5}}) == 5
    assert error("t", {"t": (1, 2)}).code == "unsupported_value"


def test_results_are_fresh_json_copies() -> None:
    data = {"l": [1, [2]], "m": {"a": [1]}}
    result = ev("[l, m]", data)
    assert result == [[1, [2]], {"a": [1]}]
    assert result[0] is not data["l"] and result[1]["a"] is not data["m"]["a"]


def test_cyclic_input_is_a_typed_error() -> None:
    cyclic: list[Any] = []
    cyclic.append(cyclic)
    assert error("c", {"c": cyclic}).code in ("too_deep", "result_too_large")
    assert error("c == c", {"c": cyclic}).code == "too_deep"


def test_evaluate_is_reusable_and_independent() -> None:
    e = compile_expression("l.map(x, x + n)")
    assert e.evaluate({"l": [1, 2], "n": 1}) == [2, 3]
    assert e.evaluate({"l": [5], "n": 10}) == [15]


def test_non_mapping_variables_is_a_typed_error() -> None:
    with pytest.raises(EvalError):
        compile_expression("x + 1").evaluate(None)  # type: ignore[arg-type]


def test_eval_error_is_picklable() -> None:
    import pickle

    err = error("1 / 0")
    copy = pickle.loads(pickle.dumps(err))  # noqa: S301 (our own object)
    assert (copy.code, copy.message, copy.position, copy.hint) == (
        err.code,
        err.message,
        err.position,
        err.hint,
    )
