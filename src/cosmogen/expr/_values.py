"""Runtime value operations. Values are JSON-like only; anything else is refused when touched.

Helpers raise EvalError without a position; the compiled closure that called them fills it in.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any, NoReturn

from ._lexer import INT_MAX, INT_MIN
from .budgets import Budgets
from .errors import EvalError, position_at

__all__ = [
    "FATAL_CODES",
    "JSON_TYPES",
    "NUMBERS",
    "Env",
    "add",
    "compare",
    "contains",
    "div",
    "equals",
    "export",
    "index",
    "locate",
    "member",
    "mod",
    "mul",
    "neg",
    "no_overload",
    "sub",
    "touch",
    "type_name",
    "undefined_variable",
]

JSON_TYPES: frozenset[type] = frozenset({type(None), bool, int, float, str, list, dict})
NUMBERS: frozenset[type] = frozenset({int, float})
# Budget errors are never absorbed by `&&`, `||` or all/exists: exhausting a limit ends the evaluation.
FATAL_CODES = frozenset({"cost_exceeded", "result_too_large", "too_deep", "internal"})
_MAX_NESTING = 128
_FLAT: frozenset[type] = frozenset({type(None), bool, int, float, str})
_NAMES = {
    type(None): "null",
    bool: "bool",
    int: "int",
    float: "double",
    str: "string",
    list: "list",
    dict: "map",
}


class Env:
    """Per-evaluation state for expressions that need metering (see _compiler.needs_meter)."""

    __slots__ = ("budgets", "cache", "cost", "slots", "vars")

    def __init__(self, variables: Mapping[str, Any], slots: int, budgets: Budgets, cache: dict[str, Any]):
        self.vars = variables
        self.slots: list[Any] = [None] * slots
        self.cost = budgets.max_cost
        self.budgets = budgets
        self.cache = cache

    def charge(self, units: int) -> None:
        self.cost -= units
        if self.cost < 0:
            raise EvalError(
                "cost_exceeded",
                f"evaluation exceeded its cost budget of {self.budgets.max_cost} units",
                hint="work on fewer elements, or filter earlier in the flow",
            )


def locate(err: EvalError, text: str, offset: int) -> EvalError:
    """Give a position to an error raised by a helper (inner nodes have already set theirs)."""
    if err.position is None:
        err.position = position_at(text, offset)
    return err


def type_name(value: Any) -> str:
    return _NAMES.get(type(value), "unsupported value")


def unsupported() -> EvalError:
    # Never describe the object itself: it is not ours to introspect.
    return EvalError(
        "unsupported_value",
        "found a value that is not JSON-like (null, bool, int, double, string, list or map)",
        hint="pass only JSON-compatible data to expressions",
    )


def touch(value: Any) -> Any:
    if type(value) in JSON_TYPES:
        return value
    raise unsupported()


def no_overload(op: str, *args: Any, hint: str | None = None) -> EvalError:
    kinds = ", ".join(type_name(a) for a in args)
    return EvalError("no_such_overload", f"no such overload: {op} applied to ({kinds})", hint=hint)


def overflow(op: str) -> EvalError:
    return EvalError(
        "overflow", f"integer overflow in {op}", hint="integers are 64-bit; use doubles for larger values"
    )


def too_large(size: int, budgets: Budgets) -> EvalError:
    return EvalError(
        "result_too_large",
        f"a produced value of about {size} bytes exceeds the limit of {budgets.max_result_bytes} bytes",
        hint="produce smaller strings or lists",
    )


def undefined_variable(name: str, variables: Mapping[str, Any]) -> EvalError:
    names = [k for _, k in zip(range(1000), variables, strict=False) if type(k) is str]
    close = difflib.get_close_matches(name, names, n=1)
    hint = f"did you mean '{close[0]}'?" if close else None
    return EvalError("undefined_variable", f"undefined variable '{name}'", hint=hint)


def _div_zero() -> NoReturn:
    raise EvalError(
        "division_by_zero", "division by zero", hint="check the divisor first, e.g. d != 0 ? n / d : 0"
    )


def add(x: Any, y: Any, budgets: Budgets) -> Any:
    tx = type(x)
    ty = type(y)
    if tx is int and ty is int:
        r = x + y
        if INT_MIN <= r <= INT_MAX:
            return r
        raise overflow("+")
    if tx in NUMBERS and ty in NUMBERS:
        return float(x) + float(y)
    if (tx is str and ty is str) or (tx is list and ty is list):
        size = len(x) + len(y)
        if size * (1 if tx is str else 8) > budgets.max_result_bytes:
            raise too_large(size, budgets)
        return x + y
    hint = "convert with string(x)" if str in (tx, ty) else None
    raise no_overload("+", x, y, hint=hint)


def sub(x: Any, y: Any) -> Any:
    tx = type(x)
    ty = type(y)
    if tx is int and ty is int:
        r = x - y
        if INT_MIN <= r <= INT_MAX:
            return r
        raise overflow("-")
    if tx in NUMBERS and ty in NUMBERS:
        return float(x) - float(y)
    raise no_overload("-", x, y)


def mul(x: Any, y: Any) -> Any:
    tx = type(x)
    ty = type(y)
    if tx is int and ty is int:
        r = x * y
        if INT_MIN <= r <= INT_MAX:
            return r
        raise overflow("*")
    if tx in NUMBERS and ty in NUMBERS:
        return float(x) * float(y)
    raise no_overload("*", x, y)


def div(x: Any, y: Any) -> Any:
    tx = type(x)
    ty = type(y)
    if tx is int and ty is int:
        if y == 0:
            _div_zero()
        if x == INT_MIN and y == -1:
            raise overflow("/")
        q = abs(x) // abs(y)  # truncate toward zero, like CEL (Python's // floors)
        return q if (x < 0) == (y < 0) else -q
    if tx in NUMBERS and ty in NUMBERS:
        if y == 0:
            _div_zero()
        return float(x) / float(y)
    raise no_overload("/", x, y)


def mod(x: Any, y: Any) -> Any:
    if type(x) is int and type(y) is int:
        if y == 0:
            _div_zero()
        if x == INT_MIN and y == -1:
            raise overflow("%")
        r = abs(x) % abs(y)  # truncated remainder: the sign follows the dividend
        return -r if x < 0 else r
    hint = "'%' works on integers; convert with int(x)" if type(x) is float or type(y) is float else None
    raise no_overload("%", x, y, hint=hint)


def neg(x: Any) -> Any:
    tx = type(x)
    if tx is int:
        if x == INT_MIN:
            raise overflow("unary -")
        return -x
    if tx is float:
        return -x
    raise no_overload("-", x)


def compare(op: str, x: Any, y: Any) -> bool:
    tx = type(x)
    ty = type(y)
    if not ((tx is ty and tx in (int, float, str, bool)) or (tx in NUMBERS and ty in NUMBERS)):
        raise no_overload(op, x, y)
    if op == "<":
        return bool(x < y)
    if op == "<=":
        return bool(x <= y)
    if op == ">":
        return bool(x > y)
    return bool(x >= y)


def equals(x: Any, y: Any, env: Env | None, depth: int = 0) -> bool:
    """CEL heterogeneous equality: different types are unequal, except int vs double (numeric)."""
    tx = type(x)
    ty = type(y)
    if tx is ty:
        if tx is list:
            if len(x) != len(y):
                return False
            if env is not None:
                env.charge(len(x))
            if depth > _MAX_NESTING:
                raise EvalError("too_deep", "values are nested too deeply to compare")
            return all(equals(a, b, env, depth + 1) for a, b in zip(x, y, strict=True))
        if tx is dict:
            if len(x) != len(y):
                return False
            if env is not None:
                env.charge(len(x))
            if depth > _MAX_NESTING:
                raise EvalError("too_deep", "values are nested too deeply to compare")
            for k, v in x.items():
                if type(k) not in JSON_TYPES:
                    raise unsupported()
                if k not in y or not equals(v, y[k], env, depth + 1):
                    return False
            return True
        if tx is str and env is not None:
            env.charge(len(x) >> 8)
        if tx in JSON_TYPES:
            return bool(x == y)
        raise unsupported()
    if tx in NUMBERS and ty in NUMBERS:
        return bool(x == y)
    if tx not in JSON_TYPES or ty not in JSON_TYPES:
        raise unsupported()
    return False


def contains(needle: Any, haystack: Any, env: Env | None) -> bool:
    """`needle in haystack` for lists (element equality) and maps (key presence)."""
    th = type(haystack)
    if th is dict:
        if type(needle) is str:
            return needle in haystack
        touch(needle)
        return False  # JSON maps have string keys only
    if th is list:
        if env is not None:
            env.charge(len(haystack))
        return any(equals(needle, item, env) for item in haystack)
    raise no_overload("in", needle, haystack, hint="'in' needs a list or a map on the right")


def _no_key(key: Any, container: dict[Any, Any]) -> EvalError:
    keys = [k for _, k in zip(range(5), container, strict=False)]
    listed = ", ".join(repr(k) if type(k) in JSON_TYPES else "?" for k in keys)
    more = ", ..." if len(container) > 5 else ""
    close = None
    if type(key) is str:
        strs = [k for _, k in zip(range(1000), container, strict=False) if type(k) is str]
        found = difflib.get_close_matches(key, strs, n=1)
        close = f"did you mean '{found[0]}'? or guard with has()" if found else "guard with has(map.key)"
    shown = repr(key) if type(key) in (str, int, float, bool) else type_name(key)
    return EvalError("no_such_key", f"no such key {shown}; available keys: [{listed}{more}]", hint=close)


def member(target: Any, name: str) -> Any:
    if type(target) is dict:
        try:
            value = target[name]
        except KeyError:
            raise _no_key(name, target) from None
        if type(value) in JSON_TYPES:
            return value
        raise unsupported()
    if type(target) not in JSON_TYPES:
        raise unsupported()
    raise EvalError(
        "no_such_field",
        f"cannot select field '{name}' of a {type_name(target)}",
        hint="fields can be selected only on maps",
    )


def index(target: Any, key: Any) -> Any:
    tt = type(target)
    tk = type(key)
    if tt is list:
        if tk is float and key.is_integer():
            key = int(key)
            tk = int
        if tk is not int:
            raise no_overload("[]", target, key, hint="list indexes are integers")
        if not 0 <= key < len(target):
            raise EvalError(
                "index_out_of_range", f"index {key} out of range for a list of size {len(target)}"
            )
        value = target[key]
    elif tt is dict:
        if tk not in JSON_TYPES:
            raise unsupported()
        if tk in (list, dict):
            raise no_overload("[]", target, key, hint="map keys are strings")
        try:
            value = target[key]
        except KeyError:
            raise _no_key(key, target) from None
    else:
        if tt not in JSON_TYPES:
            raise unsupported()
        raise no_overload("[]", target, key, hint="only lists and maps can be indexed")
    if type(value) in JSON_TYPES:
        return value
    raise unsupported()


def export(value: Any, budgets: Budgets) -> Any:
    """A fresh JSON-like copy of a result, refusing foreign objects, non-string keys and oversize."""
    budget = [budgets.max_result_bytes]
    return _export(value, budget, budgets, 0)


def _export(value: Any, budget: list[int], budgets: Budgets, depth: int) -> Any:
    t = type(value)
    if t is str:
        budget[0] -= len(value)
    elif t is int:
        if not INT_MIN <= value <= INT_MAX:
            raise overflow("the result")
        return value
    elif t is list or t is dict:
        if depth > _MAX_NESTING:
            raise EvalError("too_deep", f"the result is nested more than {_MAX_NESTING} levels deep")
        budget[0] -= 8 * len(value)
        if budget[0] < 0:
            raise too_large(budgets.max_result_bytes - budget[0], budgets)
        if t is list:
            kinds = set(map(type, value))  # C-speed scan: flat lists of scalars are copied in bulk
            if kinds <= _FLAT:
                if int in kinds:
                    ints = [v for v in value if type(v) is int] if len(kinds) > 1 else value
                    if min(ints) < INT_MIN or max(ints) > INT_MAX:
                        raise overflow("the result")
                if str in kinds:
                    budget[0] -= sum(len(v) for v in value if type(v) is str)
                    if budget[0] < 0:
                        raise too_large(budgets.max_result_bytes - budget[0], budgets)
                return list(value)
            return [_export(v, budget, budgets, depth + 1) for v in value]
        out: dict[str, Any] = {}
        for k, v in value.items():
            if type(k) is not str:
                raise EvalError("unsupported_value", "result maps must have string keys")
            budget[0] -= len(k)
            out[k] = _export(v, budget, budgets, depth + 1)
        return out
    elif t not in JSON_TYPES:
        raise unsupported()
    if budget[0] < 0:
        raise too_large(budgets.max_result_bytes - budget[0], budgets)
    return value
