"""Compiled expressions: the public Expression class and compile_expression()."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ._ast import Node
from ._checker import check
from ._compiler import Compiler, Fn, needs_meter
from ._lexer import INT_MAX, INT_MIN
from ._parser import parse, parse_hole
from ._types import CelType, TypeIssue
from ._values import Env, export, overflow
from .budgets import DEFAULT_BUDGETS, Budgets
from .errors import CompileError, EvalError, position_at

__all__ = ["Expression", "compile_expression", "compile_part", "too_long"]

_PLAIN = frozenset({bool, float, type(None)})


class Expression:
    """A compiled expression; immutable and safe to share between threads."""

    __slots__ = (
        "_budgets",
        "_cache",
        "_fn",
        "_metered",
        "_node",
        "_slots",
        "_text",
        "free_variables",
        "source",
    )

    source: str
    free_variables: frozenset[str]

    def __init__(self, source: str, text: str, node: Node, budgets: Budgets):
        metered = needs_meter(node)
        compiler = Compiler(text, budgets, metered)
        self._fn: Fn = compiler.compile(node)
        self._metered = metered
        self._slots = compiler.slots
        self._node = node
        self._text = text
        self._budgets = budgets
        # Regexes compiled from non-constant patterns, per expression (bounded in _stdlib.matches).
        self._cache: dict[str, Any] = {}
        self.source = source
        self.free_variables = frozenset(compiler.free)

    def __repr__(self) -> str:
        return f"Expression({self.source!r})"

    def evaluate(self, variables: Mapping[str, Any]) -> Any:
        """Evaluate against JSON-like variables; raises EvalError and nothing else."""
        try:
            if self._metered:
                result = self._fn(Env(variables, self._slots, self._budgets, self._cache))
            else:
                result = self._fn(variables)
        except EvalError:
            raise
        except RecursionError:
            raise EvalError("too_deep", "evaluation nested too deeply for the Python stack") from None
        except MemoryError:
            raise EvalError("result_too_large", "evaluation ran out of memory") from None
        except Exception as exc:  # a bug in the engine must still surface as a typed error
            raise EvalError(
                "internal", f"internal error in the expression engine ({type(exc).__name__})"
            ) from None
        t = type(result)
        if t in _PLAIN:
            return result
        if t is int:
            if INT_MIN <= result <= INT_MAX:
                return result
            raise overflow("the result")
        if t is str and len(result) <= self._budgets.max_result_bytes:
            return result
        try:
            return export(result, self._budgets)
        except RecursionError:
            raise EvalError("too_deep", "the result is nested too deeply") from None

    def check(self, types: Mapping[str, CelType]) -> tuple[CelType, list[TypeIssue]]:
        """Infer the result type; issues are errors (certain failures) or warnings."""
        return check(self._node, self._text, types)


def too_long(source: str, budgets: Budgets) -> CompileError:
    return CompileError(
        "too_long",
        f"source is {len(source)} characters long; the limit is {budgets.max_source_chars}",
        None,
        "shorten the expression or split it across nodes",
    )


def compile_part(text: str, start: int, budgets: Budgets, *, hole: bool) -> tuple[Expression, int]:
    """Compile the expression at text[start:] (up to the closing `}}` of a template hole when
    hole=True); returns it and the offset where it ends. Positions refer to the whole text."""
    try:
        if hole:
            node, end = parse_hole(text, start, budgets)
        else:
            node, end = parse(text, budgets), len(text)
        return Expression(text[start:end], text, node, budgets), end
    except CompileError:
        raise
    except RecursionError:
        raise CompileError("too_deep", "expression is nested too deeply", position_at(text, start)) from None


def compile_expression(source: str, *, budgets: Budgets = DEFAULT_BUDGETS) -> Expression:
    """Compile CEL-subset source text; raises CompileError."""
    if type(source) is not str:
        raise CompileError("syntax", "expression source must be a string")
    if len(source) > budgets.max_source_chars:
        raise too_long(source, budgets)
    return compile_part(source, 0, budgets, hole=False)[0]
