"""Compilation of function calls and comprehension macros (all, exists, exists_one, map, filter)."""

from __future__ import annotations

import difflib
from typing import TYPE_CHECKING, Any, cast

from . import _ast as A
from ._stdlib import GLOBAL, MATH, RECEIVER, compile_regex, match_compiled
from ._values import FATAL_CODES, JSON_TYPES, no_overload, too_large, touch
from .errors import CompileError, EvalError, position_at

if TYPE_CHECKING:
    from ._compiler import Compiler, Fn

__all__ = ["compile_call", "compile_comprehension", "known_functions"]


def known_functions() -> list[str]:
    return sorted({*GLOBAL, *RECEIVER, *(f"math.{n}" for n in MATH), "has", "all", "exists", "exists_one"})


def _unknown(c: Compiler, node: A.Call, shown: str) -> CompileError:
    hint = None
    if node.target is None and node.namespace is None and node.name in RECEIVER:
        hint = f"call it on a value: x.{node.name}(...)"
    elif node.target is not None and node.name in GLOBAL:
        hint = f"call it as a function: {node.name}(x)"
    else:
        close = difflib.get_close_matches(shown, known_functions(), n=1)
        if close:
            hint = f"did you mean {close[0]}()?"
    return CompileError(
        "unknown_function", f"unknown function {shown}()", position_at(c.text, node.offset), hint
    )


def compile_call(c: Compiler, node: A.Call) -> Fn:
    if node.namespace is not None:
        table = MATH if node.namespace == "math" else {}
        shown = f"{node.namespace}.{node.name}"
    elif node.target is None:
        table, shown = GLOBAL, node.name
    else:
        table, shown = RECEIVER, node.name
    entry = table.get(node.name)
    if entry is None:
        raise _unknown(c, node, shown)
    low, high, impl = entry
    arg_nodes = node.args if node.target is None else (node.target, *node.args)
    if len(arg_nodes) < low or (high is not None and len(arg_nodes) > high):
        given = len(node.args)
        raise CompileError(
            "bad_arity",
            f"{shown}() does not take {given} argument{'s' if given != 1 else ''}",
            position_at(c.text, node.offset),
            "see docs/expressions.md for the function's arguments",
        )
    if node.name == "matches" and node.namespace is None and isinstance(arg_nodes[1], A.Literal):
        return _constant_regex(c, node, arg_nodes)
    fns = [c.compile(n) for n in arg_nodes]
    metered = c.metered
    if len(fns) == 1:
        (f0,) = fns
        call = lambda a: impl(a if metered else None, f0(a))  # noqa: E731
    elif len(fns) == 2:
        f0, f1 = fns
        call = lambda a: impl(a if metered else None, f0(a), f1(a))  # noqa: E731
    else:
        call = lambda a: impl(a if metered else None, *[f(a) for f in fns])  # noqa: E731
    return c.guarded(call, node.offset)


def _constant_regex(c: Compiler, node: A.Call, arg_nodes: tuple[A.Node, ...]) -> Fn:
    pattern = cast(A.Literal, arg_nodes[1])
    if type(pattern.value) is not str:
        raise CompileError(
            "bad_regex", "matches() needs a string pattern", position_at(c.text, pattern.offset)
        )
    rx = compile_regex(pattern.value, c.budgets, position_at(c.text, pattern.offset))
    subject = c.compile(arg_nodes[0])
    budgets = c.budgets
    metered = c.metered
    return c.guarded(lambda a: match_compiled(a if metered else None, subject(a), rx, budgets), node.offset)


def _items(value: Any, kind: str) -> Any:
    if type(value) is list:
        return value
    if type(value) is dict:
        return list(value)  # maps iterate over their keys
    raise no_overload(kind, touch(value), hint=f"{kind}() needs a list or a map")


def compile_comprehension(c: Compiler, node: A.Comprehension) -> Fn:
    rng = c.compile(node.range)
    slot = c.slots
    c.slots += 1
    saved = c.scope.get(node.var)
    c.scope[node.var] = slot
    pred = c.compile(node.pred) if node.pred is not None else None
    transform = c.compile(node.transform) if node.transform is not None else None
    if saved is None:
        del c.scope[node.var]
    else:
        c.scope[node.var] = saved
    text = c.text
    offset = node.offset
    kind = node.kind
    # Each iteration costs the size of the body (about one unit per closure call), plus one unit per
    # (possible) output element for map and filter.
    unit = max(1, A.count_nodes(node.pred) + A.count_nodes(node.transform)) + (kind in ("map", "filter"))
    limit = c.budgets.max_result_bytes

    def start(e: Any) -> Any:
        items = _items(rng(e), kind)
        e.charge(unit * len(items))  # the whole range up front: a range beyond the budget fails at once
        if (kind == "map" or kind == "filter") and 8 * len(items) > limit:
            raise too_large(8 * len(items), e.budgets)
        return items

    def bad_predicate(value: Any) -> EvalError:
        return no_overload(kind, touch(value), hint="the predicate must be a bool")

    def run_map(e: Any) -> Any:
        slots = e.slots
        out: list[Any] = []
        append = out.append
        for x in start(e):
            if type(x) not in JSON_TYPES:
                touch(x)
            slots[slot] = x
            append(transform(e))  # type: ignore[misc]
        return out

    def run_filter(e: Any) -> Any:  # also the three-argument map: filter, then transform
        slots = e.slots
        out: list[Any] = []
        append = out.append
        for x in start(e):
            if type(x) not in JSON_TYPES:
                touch(x)
            slots[slot] = x
            keep = pred(e)  # type: ignore[misc]
            if keep is True:
                append(x if transform is None else transform(e))
            elif keep is not False:
                raise bad_predicate(keep)
        return out

    def run_exists_one(e: Any) -> Any:
        slots = e.slots
        count = 0
        for x in start(e):
            if type(x) not in JSON_TYPES:
                touch(x)
            slots[slot] = x
            hit = pred(e)  # type: ignore[misc]
            if hit is True:
                count += 1
            elif hit is not False:
                raise bad_predicate(hit)
        return count == 1

    decider = kind == "exists"

    def run_quantifier(e: Any) -> Any:
        """all / exists: a deciding value (false / true) absorbs errors from other elements."""
        slots = e.slots
        first: EvalError | None = None
        for x in start(e):
            if type(x) not in JSON_TYPES:
                touch(x)
            slots[slot] = x
            try:
                value = pred(e)  # type: ignore[misc]
            except EvalError as err:
                if err.code in FATAL_CODES:
                    raise
                first = first or err
                continue
            if value is decider:
                return decider
            if value is not (not decider) and first is None:
                first = bad_predicate(value)
        if first is not None:
            raise first
        return not decider

    if kind == "map" and pred is None:
        run = run_map
    elif kind in ("map", "filter"):
        run = run_filter
    elif kind == "exists_one":
        run = run_exists_one
    else:
        run = run_quantifier

    def guarded(e: Any) -> Any:
        try:
            return run(e)
        except EvalError as err:
            if err.position is None:
                err.position = position_at(text, offset)
            raise

    return guarded
