"""Closure compiler: turns the syntax tree into nested Python closures, once per expression.

No `eval`/`exec`/`compile`, no attribute lookups by user-supplied names: identifiers become
dictionary lookups and operators become calls to the helpers in _values.py.

Two modes: an expression whose every operation is constant-time ("unmetered") runs its closures
directly on the variables mapping; any other expression runs on an Env carrying the cost meter
and comprehension slots (see needs_meter).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from . import _ast as A
from ._compile_calls import compile_call, compile_comprehension
from ._specialise import fast_binary
from ._stdlib import O1_FUNCTIONS
from ._values import (
    FATAL_CODES,
    JSON_TYPES,
    NUMBERS,
    add,
    compare,
    contains,
    div,
    equals,
    index,
    locate,
    member,
    mod,
    mul,
    neg,
    no_overload,
    sub,
    touch,
    undefined_variable,
)
from .budgets import Budgets
from .errors import EvalError

__all__ = ["Compiler", "Fn", "locate", "needs_meter"]

Fn = Callable[[Any], Any]
_ARITH: dict[str, Callable[..., Any]] = {"-": sub, "*": mul, "/": div, "%": mod}
_COMPARE = frozenset({"<", "<=", ">", ">="})
_SCALAR_LITERALS: frozenset[type] = frozenset({int, float, str, bool, type(None)})


def _is_lit(node: A.Node, types: frozenset[type]) -> bool:
    return isinstance(node, A.Literal) and type(node.value) in types


def needs_meter(root: A.Node) -> bool:
    """True unless every operation in the tree is constant-time on any input."""
    stack = [root]
    while stack:
        node = stack.pop()
        if isinstance(node, A.Comprehension):
            return True
        if isinstance(node, A.Call):
            qualified = f"{node.namespace}.{node.name}" if node.namespace else node.name
            if qualified not in O1_FUNCTIONS:
                return True
        if isinstance(node, A.Binary):
            if node.op == "in":
                return True
            if node.op == "+" and not (_is_lit(node.left, NUMBERS) or _is_lit(node.right, NUMBERS)):
                return True
            if (node.op in _COMPARE or node.op in ("==", "!=")) and not (
                _is_lit(node.left, _SCALAR_LITERALS) or _is_lit(node.right, _SCALAR_LITERALS)
            ):
                return True
        stack.extend(node.children())
    return False


class Compiler:
    def __init__(self, text: str, budgets: Budgets, metered: bool):
        self.text = text
        self.budgets = budgets
        self.metered = metered
        self.scope: dict[str, int] = {}  # comprehension variable -> slot
        self.slots = 0
        self.free: set[str] = set()
        self.regexes: dict[str, Any] = {}

    def compile(self, node: A.Node) -> Fn:
        method = _DISPATCH.get(type(node))
        if method is not None:
            return method(self, node)
        if isinstance(node, A.Call):
            return compile_call(self, node)
        return compile_comprehension(self, cast(A.Comprehension, node))

    def literal(self, node: A.Literal) -> Fn:
        value = node.value
        return lambda a: value

    # -- leaves ----------------------------------------------------------------------------------
    def lookup(self, name: str, offset: int) -> Callable[[Any], Any]:
        """A function reading variable `name` from the closure argument, validating the value."""
        text = self.text
        metered = self.metered

        def read(a: Any) -> Any:
            variables = a.vars if metered else a
            try:
                value = variables[name]
            except KeyError:
                raise locate(undefined_variable(name, variables), text, offset) from None
            if type(value) in JSON_TYPES:
                return value
            try:
                touch(value)
            except EvalError as err:
                raise locate(err, text, offset) from None
            return value

        return read

    def ident(self, node: A.Ident) -> Fn:
        slot = self.scope.get(node.name)
        if slot is not None:
            return lambda e: e.slots[slot]
        self.free.add(node.name)
        if self.metered:
            return self.lookup(node.name, node.offset)
        name = node.name
        text = self.text
        offset = node.offset

        def ident(a: Any) -> Any:  # the unmetered hot path: no Env, a is the variables mapping
            try:
                value = a[name]
            except KeyError:
                raise locate(undefined_variable(name, a), text, offset) from None
            if type(value) in JSON_TYPES:
                return value
            raise locate(EvalError("unsupported_value", "found a value that is not JSON-like"), text, offset)

        return ident

    def guarded(self, fn: Callable[[Any], Any], offset: int) -> Fn:
        text = self.text

        def run(a: Any) -> Any:
            try:
                return fn(a)
            except EvalError as err:
                raise locate(err, text, offset) from None

        return run

    # -- containers --------------------------------------------------------------------------------
    def list_lit(self, node: A.ListLit) -> Fn:
        items = [self.compile(n) for n in node.items]
        if self.metered and len(items) > 1:
            # Building the list is work per element; inside a macro body it repeats per iteration, and
            # counting only syntax nodes let a wide literal under `map` take ~50 ms within budget.
            width = len(items)

            def build(a: Any) -> list[Any]:
                a.charge(width)
                return [f(a) for f in items]

            return build
        return lambda a: [f(a) for f in items]

    def map_lit(self, node: A.MapLit) -> Fn:
        entries = [(self.compile(k), self.compile(v), k.offset) for k, v in node.entries]
        text = self.text

        def build(a: Any) -> Any:
            out: dict[str, Any] = {}
            for kf, vf, off in entries:
                key = kf(a)
                if type(key) is not str:
                    raise locate(
                        EvalError(
                            "invalid_argument", "map keys must be strings", hint="convert with string(k)"
                        ),
                        text,
                        off,
                    )
                if key in out:
                    raise locate(EvalError("duplicate_key", f"duplicate map key {key!r}"), text, off)
                out[key] = vf(a)
            return out

        return build

    def member(self, node: A.Member) -> Fn:
        target = self.compile(node.target)
        name = node.name
        return self.guarded(lambda a: member(target(a), name), node.offset)

    def index(self, node: A.Index) -> Fn:
        target = self.compile(node.target)
        key = self.compile(node.index)
        return self.guarded(lambda a: index(target(a), key(a)), node.offset)

    def has(self, node: A.Has) -> Fn:
        target = self.compile(node.target)
        field = node.field

        def has(a: Any) -> bool:
            value = target(a)
            if type(value) is dict:
                return field in value
            raise no_overload("has", touch(value), hint="has() tests a field of a map")

        return self.guarded(has, node.offset)

    # -- operators ---------------------------------------------------------------------------------
    def unary(self, node: A.Unary) -> Fn:
        operand = self.compile(node.operand)
        if node.op == "-":
            return self.guarded(lambda a: neg(operand(a)), node.offset)

        def not_(a: Any) -> bool:
            value = operand(a)
            if value is True:
                return False
            if value is False:
                return True
            raise no_overload("!", touch(value))

        return self.guarded(not_, node.offset)

    def ternary(self, node: A.Ternary) -> Fn:
        cond = self.compile(node.cond)
        then = self.compile(node.then)
        other = self.compile(node.other)
        text = self.text
        offset = node.offset

        def choose(a: Any) -> Any:
            c = cond(a)
            if c is True:
                return then(a)
            if c is False:
                return other(a)
            raise locate(no_overload("?:", touch(c), hint="the condition must be a bool"), text, offset)

        return choose

    def binary(self, node: A.Binary) -> Fn:
        op = node.op
        if op in ("&&", "||"):
            return self.logical(node)
        fast = fast_binary(self, node)
        if fast is not None:
            return fast
        left = self.compile(node.left)
        right = self.compile(node.right)
        env_or_none = self.metered
        fn: Callable[[Any], Any]
        if op == "+":
            budgets = self.budgets
            if self.metered:

                def plus(e: Any) -> Any:
                    r = add(left(e), right(e), budgets)
                    t = type(r)
                    if t is str:
                        e.charge(len(r) >> 6)
                    elif t is list:
                        e.charge(len(r) >> 3)
                    return r

                fn = plus
            else:
                fn = lambda a: add(left(a), right(a), budgets)  # noqa: E731
        elif op in _ARITH:
            arith = _ARITH[op]
            fn = lambda a: arith(left(a), right(a))  # noqa: E731
        elif op in _COMPARE and self.metered:

            def ordered(e: Any) -> bool:
                x = left(e)
                if type(x) is str:
                    e.charge(len(x) >> 8)  # string comparison is a scan
                return compare(op, x, right(e))

            fn = ordered
        elif op in _COMPARE:
            fn = lambda a: compare(op, left(a), right(a))  # noqa: E731
        elif op == "==":
            fn = lambda a: equals(left(a), right(a), a if env_or_none else None)  # noqa: E731
        elif op == "!=":
            fn = lambda a: not equals(left(a), right(a), a if env_or_none else None)  # noqa: E731
        else:
            fn = lambda a: contains(left(a), right(a), a if env_or_none else None)  # noqa: E731
        return self.guarded(fn, node.offset)

    def logical(self, node: A.Binary) -> Fn:
        """`&&` and `||` with CEL's commutative error absorption."""
        left = self.compile(node.left)
        right = self.compile(node.right)
        text = self.text
        offset = node.offset
        absorbing = node.op == "||"  # the value that decides the result on its own

        def logic(a: Any) -> Any:
            try:
                x = left(a)
            except EvalError as err:
                if err.code in FATAL_CODES:
                    raise
                first: EvalError = err
            else:
                if x is absorbing:
                    return absorbing
                if x is (not absorbing):
                    y = right(a)
                    if y is True or y is False:
                        return y
                    raise locate(no_overload(node.op, x, touch(y)), text, offset)
                first = locate(no_overload(node.op, touch(x), hint="operands must be bools"), text, offset)
            try:
                y = right(a)
            except EvalError as err:
                if err.code in FATAL_CODES:
                    raise
                raise first from None
            if y is absorbing:
                return absorbing
            raise first

        return logic


_DISPATCH: dict[type, Callable[[Compiler, Any], Fn]] = {
    A.Literal: Compiler.literal,
    A.Ident: Compiler.ident,
    A.Binary: Compiler.binary,
    A.Member: Compiler.member,
    A.Index: Compiler.index,
    A.Unary: Compiler.unary,
    A.Ternary: Compiler.ternary,
    A.ListLit: Compiler.list_lit,
    A.MapLit: Compiler.map_lit,
    A.Has: Compiler.has,
}
