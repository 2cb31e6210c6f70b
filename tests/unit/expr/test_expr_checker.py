"""Static checker: inferred types, unknown variables, overload errors with positions and hints."""

from __future__ import annotations

import pytest

from cosmogen.expr import CelType, compile_expression, type_of_value

T = CelType
TYPES = {
    "balance": T.INT,
    "rate": T.DOUBLE,
    "tier": T.STRING,
    "tags": T.LIST,
    "props": T.MAP,
    "flag": T.BOOL,
    "anything": T.DYN,
}


def check(src: str) -> tuple[CelType, list[tuple[str, str]]]:
    result, issues = compile_expression(src).check(TYPES)
    return result, [(i.severity, i.code) for i in issues]


@pytest.mark.parametrize(
    ("src", "expected"),
    [
        ("balance + 1", T.INT),
        ("balance * 1.05", T.DOUBLE),
        ("rate / 2", T.DOUBLE),
        ("balance % 3", T.INT),
        ("tier + 'x'", T.STRING),
        ("tags + [1]", T.LIST),
        ("balance < 0 && tier == 'gold'", T.BOOL),
        ("'x' in tags", T.BOOL),
        ("!flag", T.BOOL),
        ("-rate", T.DOUBLE),
        ("flag ? 1 : 2", T.INT),
        ("flag ? 1 : 'a'", T.DYN),
        ("size(tags)", T.INT),
        ("tier.size()", T.INT),
        ("int(tier)", T.INT),
        ("double(balance)", T.DOUBLE),
        ("string(rate)", T.STRING),
        ("tier.contains('a')", T.BOOL),
        ("tier.split(',')", T.LIST),
        ("tags.join('-')", T.STRING),
        ("tags.map(t, t)", T.LIST),
        ("tags.filter(t, t == 'a')", T.LIST),
        ("tags.all(t, t == 'a')", T.BOOL),
        ("has(props.x)", T.BOOL),
        ("props.x", T.DYN),
        ("tags[0]", T.DYN),
        ("anything + 1", T.DYN),
        ("anything.foo.bar", T.DYN),
        ("math.abs(balance)", T.INT),
        ("math.greatest(1, 2)", T.INT),
        ("math.greatest(1, 2.5)", T.DYN),
        ("{'a': 1}", T.MAP),
        ("[1]", T.LIST),
        ("null", T.NULL),
    ],
)
def test_inferred_types(src: str, expected: CelType) -> None:
    result, issues = check(src)
    assert result is expected
    assert issues == []


def test_unknown_variable_is_a_warning_with_did_you_mean() -> None:
    result, issues = compile_expression("balnce > 0").check(TYPES)
    assert result is T.BOOL
    assert len(issues) == 1
    issue = issues[0]
    assert (issue.severity, issue.code) == ("warning", "unknown_variable")
    assert issue.hint == "did you mean 'balance'?"
    assert issue.position is not None and issue.position.column == 1
    assert "balnce" in str(issue)


def test_unknown_variable_without_close_match_has_no_hint() -> None:
    _, issues = compile_expression("zzzzzz").check(TYPES)
    assert issues[0].hint is None


def test_string_minus_int_is_an_error_at_the_operator() -> None:
    _, issues = compile_expression("'a' - 1").check({})
    assert [(i.severity, i.code) for i in issues] == [("error", "no_such_overload")]
    assert issues[0].position is not None and issues[0].position.column == 5
    assert issues[0].hint


def test_string_plus_int_hints_at_conversion() -> None:
    _, issues = compile_expression("tier + 1").check(TYPES)
    assert [(i.severity, i.code) for i in issues] == [("error", "no_such_overload")]
    assert issues[0].hint == "convert with string(x)"
    assert issues[0].position is not None and issues[0].position.column == 6


@pytest.mark.parametrize(
    "src",
    [
        "balance && flag",
        "!balance",
        "tier ? 1 : 2",
        "balance < tier",
        "balance == tier",
        "1 in balance",
        "tags.all(t, 1)",
        "balance.map(x, x)",
        "rate % 2",
        "tier.contains(1)",
        "size(balance)",
        "balance.field",
        "tags['a']",
        "props[1]",
        "tier[0]",
        "has(balance.x)",
        "{1: 2}",
        "-tier",
        "math.greatest('a')",
    ],
)
def test_type_errors(src: str) -> None:
    _, issues = check(src)
    assert ("error", "no_such_overload") in issues or ("error", "no_such_field") in issues, issues


def test_condition_result_types() -> None:
    # Conditions must be bool: the caller can compare the inferred type.
    assert check("balance > 0")[0] is T.BOOL
    assert check("balance + 1")[0] is T.INT
    assert check("anything")[0] is T.DYN


def test_comprehension_variables_are_not_unknown() -> None:
    assert check("tags.map(t, t + 'x')")[1] == []
    # a bound name does not leak outside its macro
    assert check("tags.map(t, t)[0] + t")[1] == [("warning", "unknown_variable")]


def test_type_of_value() -> None:
    assert type_of_value(None) is T.NULL
    assert type_of_value(True) is T.BOOL
    assert type_of_value(1) is T.INT
    assert type_of_value(1.0) is T.DOUBLE
    assert type_of_value("s") is T.STRING
    assert type_of_value([1]) is T.LIST
    assert type_of_value({"a": 1}) is T.MAP
    assert type_of_value(object()) is T.DYN
