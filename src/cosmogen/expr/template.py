"""Templates: text with `{{ expression }}` holes."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ._expression import Expression, compile_part, too_long
from ._stdlib import format_double
from ._types import CelType, TypeIssue
from .budgets import DEFAULT_BUDGETS, Budgets
from .errors import CompileError, EvalError

__all__ = ["Template", "compile_template", "render_text"]


def render_text(value: Any) -> str:
    """How a hole's value appears in rendered text."""
    t = type(value)
    if t is str:
        return str(value)
    if t is bool:
        return "true" if value else "false"
    if value is None:
        return "null"
    if t is int:
        return str(value)
    if t is float:
        return format_double(value)
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


class Template:
    __slots__ = ("_budgets", "_parts", "_single", "expressions", "free_variables", "source")

    source: str
    expressions: tuple[Expression, ...]
    free_variables: frozenset[str]

    def __init__(self, source: str, parts: list[str | Expression], budgets: Budgets):
        self.source = source
        self._parts = tuple(parts)
        self._budgets = budgets
        self.expressions = tuple(p for p in parts if isinstance(p, Expression))
        self.free_variables = frozenset().union(*(e.free_variables for e in self.expressions))
        texts = [p for p in parts if isinstance(p, str)]
        self._single = len(self.expressions) == 1 and all(not t.strip() for t in texts)

    def __repr__(self) -> str:
        return f"Template({self.source!r})"

    def render(self, variables: Mapping[str, Any]) -> str:
        out: list[str] = []
        size = 0
        limit = self._budgets.max_result_bytes
        for part in self._parts:
            text = part if isinstance(part, str) else render_text(part.evaluate(variables))
            size += len(text)
            if size > limit:
                raise EvalError(
                    "result_too_large",
                    f"the rendered template exceeds {limit} characters",
                    hint="render less data",
                )
            out.append(text)
        return "".join(out)

    def render_value(self, variables: Mapping[str, Any]) -> Any:
        """The raw value when the template is a single hole (surrounding whitespace allowed)."""
        if self._single:
            return self.expressions[0].evaluate(variables)
        return self.render(variables)

    def check(self, types: Mapping[str, CelType]) -> list[TypeIssue]:
        issues: list[TypeIssue] = []
        for expr in self.expressions:
            issues.extend(expr.check(types)[1])
        return issues


def compile_template(source: str, *, budgets: Budgets = DEFAULT_BUDGETS) -> Template:
    """Compile text with `{{ cel }}` holes; positions in errors refer to the whole template."""
    if type(source) is not str:
        raise CompileError("syntax", "template source must be a string")
    if len(source) > budgets.max_source_chars:
        raise too_long(source, budgets)
    parts: list[str | Expression] = []
    pos = 0
    while True:
        start = source.find("{{", pos)
        if start < 0:
            if pos < len(source):
                parts.append(source[pos:])
            break
        if start > pos:
            parts.append(source[pos:start])
        expr, end = compile_part(source, start + 2, budgets, hole=True)
        parts.append(expr)
        pos = end + 2
    return Template(source, parts, budgets)
