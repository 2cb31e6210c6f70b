"""Lexer and parser: literals, precedence, positions, hints and nesting limits."""

from __future__ import annotations

import pytest

from cosmogen.expr import Budgets, CompileError, Position, compile_expression


def ev(src: str, **variables: object) -> object:
    return compile_expression(src).evaluate(variables)


def compile_error(src: str, budgets: Budgets | None = None) -> CompileError:
    with pytest.raises(CompileError) as info:
        compile_expression(src) if budgets is None else compile_expression(src, budgets=budgets)
    return info.value


@pytest.mark.parametrize(
    ("src", "expected"),
    [
        ("42", 42),
        ("0x1F", 31),
        ("0XfF", 255),
        ("7u", 7),
        ("1.5", 1.5),
        ("1e3", 1000.0),
        ("2.5e-1", 0.25),
        (".5", 0.5),
        ("'single'", "single"),
        ('"double"', "double"),
        ("'''tri'ple'''", "tri'ple"),
        ('"""a\nb"""', "a\nb"),
        (r"r'a\d'", "a\\d"),
        (r"R'\n'", "\\n"),
        (r"'\n\t\\\'\"'", "\n\t\\'\""),
        (r"'\u00e9\x41\101'", "éAA"),
        (r"'\U0001F600'", "\U0001f600"),
        ("true", True),
        ("false", False),
        ("null", None),
        ("[]", []),
        ("[1, 'a', [true]]", [1, "a", [True]]),
        ("[1, 2,]", [1, 2]),
        ("{}", {}),
        ("{'a': 1, 'b': [2]}", {"a": 1, "b": [2]}),
        ("-9223372036854775808", -9223372036854775808),
        ("9223372036854775807", 9223372036854775807),
        ("// a comment\n1 // another", 1),
    ],
)
def test_literals(src: str, expected: object) -> None:
    result = ev(src)
    assert result == expected
    assert type(result) is type(expected)


@pytest.mark.parametrize(
    ("src", "expected"),
    [
        ("1 + 2 * 3", 7),
        ("(1 + 2) * 3", 9),
        ("10 - 4 - 3", 3),
        ("100 / 10 / 5", 2),
        ("2 * 3 % 4", 2),
        ("-2 * 3", -6),
        ("!true || true", True),
        ("true || false && false", True),
        ("(true || false) && false", False),
        ("1 < 2 == true", True),
        ("1 + 1 == 2 && 3 > 2", True),
        ("false ? 1 : true ? 2 : 3", 2),
        ("true ? false ? 1 : 2 : 3", 2),
        ("1 in [1] == true", True),
        ("--1", 1),
        ("!!true", True),
        ("[1, 2][0] + {'a': 5}.a", 6),
        ("'abc'.size() * 2", 6),
    ],
)
def test_precedence(src: str, expected: object) -> None:
    assert ev(src) == expected


def test_error_position_at_end_of_incomplete_expression() -> None:
    err = compile_error("balance +")
    assert err.code == "syntax"
    assert err.position == Position(offset=9, line=1, column=10)
    assert err.hint
    assert "line 1, column 10" in str(err)
    assert "hint" in str(err)


def test_error_position_on_later_line() -> None:
    err = compile_error("balance > 0 &&\n  tier == = 'x'")
    assert err.position is not None
    assert (err.position.line, err.position.column) == (2, 11)
    assert err.hint is not None and "==" in err.hint


@pytest.mark.parametrize(
    ("src", "hint_part"),
    [
        ("(balance + 1", "not closed"),
        ("[1, 2", "not closed"),
        ("balance tier", "operator"),
        ("balance & tier", "&&"),
        ("1 )", "unmatched"),
        ("'abc", "close the string"),
        ("# comment", "//"),
        ("b'bytes'", "string literal"),
    ],
)
def test_syntax_errors_have_hints(src: str, hint_part: str) -> None:
    err = compile_error(src)
    assert err.code == "syntax"
    assert err.hint is not None and hint_part in err.hint, err


@pytest.mark.parametrize(
    "src",
    [
        "1 +* 2",
        "a.",
        "a.1",
        "true ? 1",
        "{'a' 1}",
        "f'{x}'",
        "lambda: 0",
        "x = 1",
        "if x",
        "1 2",
        ".a",
        "a..b",
        "1.a()",
    ],
)
def test_syntax_errors(src: str) -> None:
    assert compile_error(src).code in ("syntax", "unknown_function")


@pytest.mark.parametrize("src", ["", "   ", "// only a comment"])
def test_empty(src: str) -> None:
    assert compile_error(src).code == "empty"


def test_int_literal_out_of_range() -> None:
    assert compile_error("9223372036854775808").code == "overflow"
    assert compile_error("99999999999999999999999").code == "overflow"
    assert compile_error("1 - 9223372036854775808").code == "overflow"


def test_too_long_checked_before_tokenizing() -> None:
    err = compile_error("1" * 9000)
    assert err.code == "too_long"
    assert "9000" in err.message and "8192" in err.message


BIG = Budgets(max_source_chars=1_000_000)


@pytest.mark.parametrize(
    "src",
    [
        "(" * 10_000 + "1" + ")" * 10_000,
        "[" * 10_000 + "]" * 10_000,
        "{'a': " * 10_000 + "1" + "}" * 10_000,
        "!" * 10_000 + "x",
        "-" * 10_000 + "1",
        "a" + ".b" * 10_000,
        "a" + "[0]" * 10_000,
        "f(" * 10_000 + ")" * 10_000,
        "x" + " + x" * 10_000,
        "true" + " && true" * 10_000,
        "1 ? " * 10_000 + "1" + " : 2" * 10_000,
        "l.map(x, " * 10_000 + "x" + ")" * 10_000,
    ],
)
def test_deep_nesting_fails_fast_without_recursion_error(src: str) -> None:
    err = compile_error(src, BIG)
    assert err.code == "too_deep"
    assert err.position is not None


def test_nesting_at_the_limit_compiles_and_runs() -> None:
    assert ev("(" * 63 + "1" + ")" * 63) == 1
    assert ev("-" * 62 + "1") == 1
    nested = ev("[" * 63 + "]" * 63)
    for _ in range(62):
        assert isinstance(nested, list) and len(nested) == 1
        nested = nested[0]
    assert nested == []
    assert compile_error("(" * 65 + "1" + ")" * 65).code == "too_deep"


def test_comprehension_nesting_limit() -> None:
    ok = "l.map(a, l.map(b, l.map(c, c)))"
    assert ev(ok, l=[1]) == [[[1]]]
    err = compile_error("l.map(a, l.map(b, l.map(c, l.map(d, d))))")
    assert err.code == "too_deep"


def test_reserved_words_are_rejected() -> None:
    assert compile_error("import + 1").code == "syntax"
    assert compile_error("in").code == "syntax"


def test_free_variables() -> None:
    e = compile_expression("balance + tags.filter(t, t == tier).size() + math.abs(x) + [y].map(t, t)[0]")
    assert e.free_variables == frozenset({"balance", "tags", "tier", "x", "y"})
    assert compile_expression("1 + 2").free_variables == frozenset()
    # a variable named like a bound one, used outside the macro, is free
    assert compile_expression("t + l.map(t, t)[0]").free_variables == frozenset({"t", "l"})


def test_source_is_kept() -> None:
    assert compile_expression("balance + 50").source == "balance + 50"
