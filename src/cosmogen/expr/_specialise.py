"""Specialised closures for `<expr> <op> <literal>` and its mirror image."""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import _ast as A
from ._lexer import INT_MAX, INT_MIN
from ._values import NUMBERS, add, compare, div, locate, mod, mul, sub
from .errors import EvalError

if TYPE_CHECKING:
    from ._compiler import Compiler, Fn

__all__ = ["SCALAR_LITERALS", "fast_binary"]

SCALAR_LITERALS: frozenset[type] = frozenset({int, float, str, bool, type(None)})
_ARITH: dict[str, Callable[..., Any]] = {"-": sub, "*": mul, "/": div, "%": mod}
_PYOPS: dict[str, Callable[[Any, Any], Any]] = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
}
# pyop(x, c) for `c <op> x`: the operands swapped back.
_SWAPPED: dict[str, Callable[[Any, Any], Any]] = {
    "+": operator.add,  # only numbers reach the fast path, so + and * commute
    "-": lambda x, c: c - x,
    "*": operator.mul,
    "<": operator.gt,
    "<=": operator.ge,
    ">": operator.lt,
    ">=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
}
_MIRROR = {"<": ">", "<=": ">=", ">": "<", ">=": "<="}


def _is_lit(node: A.Node) -> bool:
    return isinstance(node, A.Literal) and type(node.value) in SCALAR_LITERALS


def fast_binary(compiler: Compiler, node: A.Binary) -> Fn | None:
    """Specialised closures for `<expr> <op> <literal>` (and the mirror image), the most common
    shape in conditions and macro bodies: one closure call instead of four."""
    op = node.op
    if op not in _PYOPS:
        return None
    if _is_lit(node.right):
        c = node.right.value  # type: ignore[attr-defined]
        operand = compiler.compile(node.left)
        swapped = False
    elif _is_lit(node.left) and not _is_lit(node.right):
        c = node.left.value  # type: ignore[attr-defined]
        operand = compiler.compile(node.right)
        swapped = True
    else:
        return None
    pyop = _PYOPS[op]
    if swapped:
        pyop = _SWAPPED[op]
    text = compiler.text
    offset = node.offset
    budgets = compiler.budgets
    if op in ("+", "-", "*"):
        if type(c) not in NUMBERS:
            return None
        base: Callable[[Any, Any], Any] = _ARITH.get(op) or (lambda x, y: add(x, y, budgets))

        def generic(x: Any, y: Any) -> Any:
            return base(y, x) if swapped else base(x, y)

        def arith(a: Any) -> Any:
            x = operand(a)
            tx = type(x)
            if tx is int or tx is float:
                r = pyop(x, c)
                if type(r) is float or INT_MIN <= r <= INT_MAX:
                    return r
            try:
                return generic(x, c)
            except EvalError as err:
                raise locate(err, text, offset) from None

        return arith
    ok = NUMBERS if type(c) in NUMBERS else frozenset({type(c)})
    if op in ("==", "!="):
        unequal = op == "!="

        def eq(a: Any) -> Any:
            x = operand(a)
            if type(x) in ok:
                return pyop(x, c)
            return unequal  # different types are unequal (operands are validated JSON values)

        return eq
    name = _MIRROR[op] if swapped else op

    def cmp(a: Any) -> Any:
        x = operand(a)
        if type(x) in ok:
            return pyop(x, c)
        try:
            return compare(name, x, c)
        except EvalError as err:
            raise locate(err, text, offset) from None

    return cmp
