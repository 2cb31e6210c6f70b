"""Templates: rendering, raw values, constant templates and error positions."""

from __future__ import annotations

import pytest

from cosmogen.expr import CelType, CompileError, EvalError, compile_template

STATE = {
    "name": "Ada",
    "balance": 150,
    "rate": 1.5,
    "whole": 2.0,
    "tags": ["a", "b"],
    "m": {"k": None},
    "ok": True,
}


@pytest.mark.parametrize(
    ("src", "expected"),
    [
        ("Hello {{ name }}!", "Hello Ada!"),
        ("{{balance}}", "150"),
        ("{{ rate }} {{ whole }}", "1.5 2.0"),
        ("{{ null }} {{ ok }} {{ !ok }}", "null true false"),
        ("{{ tags }}", '["a","b"]'),
        ("{{ m }}", '{"k":null}'),
        ("{{ {'é': [1, 'x']} }}", '{"é":[1,"x"]}'),
        ("no holes", "no holes"),
        ("", ""),
        ("{{ balance + 1 }}{{ balance - 1 }}", "151149"),
        ("a {{ {'x': {'y': 1}} }} b", 'a {"x":{"y":1}} b'),
        ("{{ '{{' }} and {{ '}}' }}", "{{ and }}"),
        ("line1\n{{ name }}\nline3", "line1\nAda\nline3"),
        ("{{ tags.map(t, t + '!').join(', ') }}", "a!, b!"),
        ("single } brace and { other", "single } brace and { other"),
    ],
)
def test_render(src: str, expected: str) -> None:
    assert compile_template(src).render(STATE) == expected


def test_render_value_returns_raw_value_for_a_single_hole() -> None:
    assert compile_template("{{ balance }}").render_value(STATE) == 150
    assert compile_template("  {{ tags }}\n").render_value(STATE) == ["a", "b"]
    assert compile_template("{{ m }}").render_value(STATE) == {"k": None}
    assert compile_template("{{ rate }}").render_value(STATE) == 1.5
    assert compile_template("x{{ balance }}").render_value(STATE) == "x150"
    assert compile_template("{{ 1 }}{{ 2 }}").render_value(STATE) == "12"
    assert compile_template("plain").render_value(STATE) == "plain"


def test_expressions_and_free_variables() -> None:
    t = compile_template("{{ name }} has {{ balance + bonus }} ({{ tags.map(t, t).size() }})")
    assert [e.source.strip() for e in t.expressions] == ["name", "balance + bonus", "tags.map(t, t).size()"]
    assert t.free_variables == frozenset({"name", "balance", "bonus", "tags"})
    assert t.source.startswith("{{ name }}")
    assert compile_template("constant").expressions == ()
    assert compile_template("constant").free_variables == frozenset()


def test_unclosed_hole_is_a_compile_error_with_hint() -> None:
    with pytest.raises(CompileError) as info:
        compile_template("Hello {{ name")
    err = info.value
    assert err.position is not None and err.position.column == 7
    assert err.hint is not None and "}}" in err.hint


def test_error_positions_are_relative_to_the_template() -> None:
    with pytest.raises(CompileError) as info:
        compile_template("Dear {{ name }},\nyou owe {{ balance + }}")
    pos = info.value.position
    assert pos is not None and (pos.line, pos.column) == (2, 22)  # at the closing }}

    template = compile_template("abc\n  {{ missing + 1 }}")
    with pytest.raises(EvalError) as ev_info:
        template.render(STATE)
    pos = ev_info.value.position
    assert pos is not None and (pos.line, pos.column) == (2, 6)
    assert ev_info.value.code == "undefined_variable"


def test_empty_hole() -> None:
    with pytest.raises(CompileError) as info:
        compile_template("x {{ }} y")
    assert info.value.code == "empty"


def test_check_reports_issues_from_all_holes() -> None:
    t = compile_template("{{ nme }} {{ balance - 'a' }}")
    issues = t.check({"name": CelType.STRING, "balance": CelType.INT})
    codes = sorted(i.code for i in issues)
    assert codes == ["no_such_overload", "unknown_variable"]
    warning = next(i for i in issues if i.code == "unknown_variable")
    assert warning.hint == "did you mean 'name'?"
    assert warning.position is not None and warning.position.column == 4


def test_rendered_size_is_limited() -> None:
    t = compile_template("{{ s }}{{ s }}")
    with pytest.raises(EvalError) as info:
        t.render({"s": "x" * 600_000})
    assert info.value.code == "result_too_large"
