"""Built-in functions. Each takes the evaluation Env (None in unmetered expressions, which may call
only the constant-time functions listed in O1_FUNCTIONS) followed by its arguments."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import re2

from ._lexer import INT_MAX, INT_MIN
from ._values import NUMBERS, Env, no_overload, overflow, too_large, touch
from .budgets import Budgets
from .errors import CompileError, EvalError, Position

__all__ = ["GLOBAL", "MATH", "O1_FUNCTIONS", "RECEIVER", "compile_regex", "match_compiled"]

Impl = Callable[..., Any]
_LOWER = {c: c + 32 for c in range(ord("A"), ord("Z") + 1)}
_UPPER = {c: c - 32 for c in range(ord("a"), ord("z") + 1)}
_TRUE = frozenset({"1", "t", "T", "TRUE", "True", "true"})
_FALSE = frozenset({"0", "f", "F", "FALSE", "False", "false"})
_FLOAT_CHARS = frozenset("0123456789+-.eE")
_FLOAT_WORDS = frozenset({"inf", "+inf", "-inf", "infinity", "+infinity", "-infinity", "nan"})
_REGEX_CACHE_SIZE = 32


def _charge(env: Env | None, units: int) -> None:
    if env is not None and units:
        env.charge(units)


def _produced(env: Env | None, size: int) -> None:
    """Account for a produced string (size in characters) or list (size in bytes, 8 per element)."""
    if env is not None:
        if size > env.budgets.max_result_bytes:
            raise too_large(size, env.budgets)
        env.charge(size >> 6)


def _bad(message: str, hint: str | None = None) -> EvalError:
    return EvalError("invalid_argument", message, hint=hint)


def _str(name: str, *args: Any) -> None:
    for a in args:
        if type(a) is not str:
            raise no_overload(name, *args)


def _int(name: str, *args: Any) -> None:
    for a in args:
        if type(a) is not int:
            raise no_overload(name, *args)


# -- conversions ---------------------------------------------------------------------------------
def size(env: Env | None, x: Any) -> int:
    if type(x) in (str, list, dict):
        return len(x)
    raise no_overload("size", touch(x))


def to_int(env: Env | None, x: Any) -> int:
    t = type(x)
    if t is int:
        return int(x)
    if t is float:
        if math.isnan(x) or not -9.223372036854775808e18 <= x < 9.223372036854775808e18:
            raise overflow("int()")
        return int(x)  # truncates toward zero
    if t is str:
        digits = x[1:] if x[:1] in ("+", "-") else x
        if len(digits) > 19 or not (digits.isascii() and digits.isdigit()):
            raise _bad(f"int() cannot convert the string {x[:40]!r}", "the string must hold a whole number")
        value = int(x)
        if not INT_MIN <= value <= INT_MAX:
            raise overflow("int()")
        return value
    raise no_overload("int", touch(x))


def to_double(env: Env | None, x: Any) -> float:
    t = type(x)
    if t is float:
        return float(x)
    if t is int:
        return float(x)
    if t is str:
        if len(x) <= 64 and (x.lower() in _FLOAT_WORDS or (x and all(c in _FLOAT_CHARS for c in x))):
            try:
                return float(x)
            except ValueError:
                pass
        raise _bad(f"double() cannot convert the string {x[:40]!r}", "the string must hold a number")
    raise no_overload("double", touch(x))


def format_double(x: float) -> str:
    return repr(x)  # shortest round-trip form: 1.5, 2.0, 1e+20, inf, nan


def to_string(env: Env | None, x: Any) -> str:
    t = type(x)
    if t is str:
        return str(x)
    if t is bool:
        return "true" if x else "false"
    if t is int:
        return str(x)
    if t is float:
        return format_double(x)
    raise no_overload("string", touch(x))


def to_bool(env: Env | None, x: Any) -> bool:
    if type(x) is bool:
        return x
    if type(x) is str and len(x) <= 5:
        if x in _TRUE:
            return True
        if x in _FALSE:
            return False
    if type(x) is str:
        raise _bad(f"bool() cannot convert the string {x[:40]!r}", "use 'true' or 'false'")
    raise no_overload("bool", touch(x))


def dyn(env: Env | None, x: Any) -> Any:
    return x


# -- strings ---------------------------------------------------------------------------------------
def contains(env: Env | None, s: Any, t: Any) -> bool:
    _str("contains", s, t)
    _charge(env, len(s) >> 8)
    return t in s


def starts_with(env: Env | None, s: Any, t: Any) -> bool:
    _str("startsWith", s, t)
    return bool(s.startswith(t))


def ends_with(env: Env | None, s: Any, t: Any) -> bool:
    _str("endsWith", s, t)
    return bool(s.endswith(t))


def lower_ascii(env: Env | None, s: Any) -> str:
    _str("lowerAscii", s)
    _produced(env, len(s))
    return str(s.translate(_LOWER))


def upper_ascii(env: Env | None, s: Any) -> str:
    _str("upperAscii", s)
    _produced(env, len(s))
    return str(s.translate(_UPPER))


def trim(env: Env | None, s: Any) -> str:
    _str("trim", s)
    _produced(env, len(s))
    return str(s.strip())


def replace(env: Env | None, s: Any, old: Any, new: Any, n: Any = -1) -> str:
    _str("replace", s, old, new)
    _int("replace", n)
    count = s.count(old) if old else len(s) + 1
    if n >= 0:
        count = min(count, n)
    _charge(env, len(s) >> 8)
    _produced(env, len(s) + count * (len(new) - len(old)))
    return str(s.replace(old, new, n))


def split(env: Env | None, s: Any, sep: Any, n: Any = -1) -> list[str]:
    _str("split", s, sep)
    _int("split", n)
    if n == 0:
        return []
    pieces = (s.count(sep) + 1) if sep else len(s)
    if n > 0:
        pieces = min(pieces, n)
    _charge(env, len(s) >> 8)
    _produced(env, 8 * pieces + len(s))
    if not sep:  # Go's SplitN with an empty separator splits into characters
        chars = list(s)
        return chars if n < 0 or n >= len(chars) else [*chars[: n - 1], "".join(chars[n - 1 :])]
    return list(s.split(sep, n - 1 if n > 0 else -1))


def join(env: Env | None, items: Any, sep: Any = "") -> str:
    if type(items) is not list or type(sep) is not str:
        raise no_overload("join", items, sep)
    _charge(env, len(items))
    if not all(type(i) is str for i in items):
        raise _bad("join() needs a list of strings", "convert the elements with map(x, string(x))")
    _produced(env, sum(len(i) for i in items) + len(sep) * max(len(items) - 1, 0))
    return str(sep.join(items))


def substring(env: Env | None, s: Any, start: Any, end: Any = None) -> str:
    _str("substring", s)
    stop = len(s) if end is None else end
    _int("substring", start, stop)
    if not 0 <= start <= stop <= len(s):
        raise EvalError(
            "index_out_of_range", f"substring({start}, {stop}) is out of range for a string of size {len(s)}"
        )
    _produced(env, stop - start)
    return str(s[start:stop])


def index_of(env: Env | None, s: Any, t: Any, offset: Any = 0) -> int:
    _str("indexOf", s, t)
    _int("indexOf", offset)
    if not 0 <= offset <= len(s):
        raise EvalError("index_out_of_range", f"indexOf offset {offset} is out of range")
    _charge(env, len(s) >> 8)
    return int(s.find(t, offset))


def last_index_of(env: Env | None, s: Any, t: Any, offset: Any = None) -> int:
    _str("lastIndexOf", s, t)
    at = len(s) if offset is None else offset
    _int("lastIndexOf", at)
    if not 0 <= at <= len(s):
        raise EvalError("index_out_of_range", f"lastIndexOf offset {at} is out of range")
    _charge(env, len(s) >> 8)
    return int(s.rfind(t, 0, at + len(t)))


# -- regular expressions (RE2 only) ------------------------------------------------------------------
def compile_regex(pattern: str, budgets: Budgets, position: Position | None = None) -> Any:
    """Compile with RE2 (linear time, no backreferences); CompileError if position is given."""
    err_type = CompileError if position is not None else EvalError
    if len(pattern) > budgets.max_regex_chars:
        raise err_type(
            "bad_regex",
            f"regular expression of {len(pattern)} characters exceeds {budgets.max_regex_chars}",
            position,
        )
    options = re2.Options()
    options.log_errors = False
    options.max_mem = 8 << 20
    try:
        return re2.compile(pattern, options)
    except re2.error:
        raise err_type(
            "bad_regex",
            f"invalid regular expression {pattern[:60]!r}",
            position,
            "RE2 syntax: no backreferences or lookaround",
        ) from None


def match_compiled(env: Env | None, s: Any, rx: Any, budgets: Budgets) -> bool:
    if type(s) is not str:
        raise no_overload("matches", s, "string")
    cost = rx.programsize * (len(s) + 1)
    if cost > budgets.max_regex_cost:
        raise EvalError(
            "cost_exceeded",
            f"matches() on {len(s)} characters with this pattern costs {cost} units "
            f"(limit {budgets.max_regex_cost})",
            hint="match a shorter string or a simpler pattern",
        )
    _charge(env, cost >> 5)  # ~8 ns per regex cost unit in the worst case measured; ~0.25 us per meter unit
    return rx.search(s) is not None


def matches(env: Env | None, s: Any, pattern: Any) -> bool:
    _str("matches", s, pattern)
    if env is None:  # cannot happen: matches() is metered
        raise EvalError("internal", "matches() evaluated without a cost meter")
    rx = env.cache.get(pattern)
    if rx is None:
        rx = compile_regex(pattern, env.budgets)
        if len(env.cache) >= _REGEX_CACHE_SIZE:
            env.cache.clear()
        env.cache[pattern] = rx
    return match_compiled(env, s, rx, env.budgets)


# -- math ---------------------------------------------------------------------------------------------
def _numbers(name: str, env: Env | None, args: tuple[Any, ...]) -> tuple[Any, ...] | list[Any]:
    values: tuple[Any, ...] | list[Any] = args
    if len(args) == 1 and type(args[0]) is list:
        values = args[0]
        _charge(env, len(values))
        if not values:
            raise _bad(f"math.{name}() of an empty list")
    for v in values:
        if type(v) not in NUMBERS:
            raise no_overload(f"math.{name}", *values[:5])
    return values


def greatest(env: Env | None, *args: Any) -> Any:
    values = _numbers("greatest", env, args)
    best = values[0]
    for v in values:
        if v > best:
            best = v
    return best


def least(env: Env | None, *args: Any) -> Any:
    values = _numbers("least", env, args)
    best = values[0]
    for v in values:
        if v < best:
            best = v
    return best


def m_abs(env: Env | None, x: Any) -> Any:
    if type(x) is int:
        if x == INT_MIN:
            raise overflow("math.abs")
        return abs(x)
    if type(x) is float:
        return abs(x)
    raise no_overload("math.abs", touch(x))


def _rounding(name: str, fn: Callable[[float], float]) -> Impl:
    def impl(env: Env | None, x: Any) -> Any:
        if type(x) is int:
            return x  # already whole (deviation: CEL accepts doubles only)
        if type(x) is float:
            return x if math.isnan(x) or math.isinf(x) else float(fn(x))
        raise no_overload(f"math.{name}", touch(x))

    return impl


def _round_half_away(x: float) -> float:
    r = math.floor(abs(x))
    if abs(x) - r >= 0.5:
        r += 1
    return math.copysign(r, x)


# name -> (min args, max args or None, implementation); receiver functions count the receiver.
GLOBAL: dict[str, tuple[int, int | None, Impl]] = {
    "size": (1, 1, size),
    "int": (1, 1, to_int),
    "double": (1, 1, to_double),
    "string": (1, 1, to_string),
    "bool": (1, 1, to_bool),
    "dyn": (1, 1, dyn),
    "matches": (2, 2, matches),
}
RECEIVER: dict[str, tuple[int, int | None, Impl]] = {
    "size": (1, 1, size),
    "contains": (2, 2, contains),
    "startsWith": (2, 2, starts_with),
    "endsWith": (2, 2, ends_with),
    "matches": (2, 2, matches),
    "lowerAscii": (1, 1, lower_ascii),
    "upperAscii": (1, 1, upper_ascii),
    "trim": (1, 1, trim),
    "replace": (3, 4, replace),
    "split": (2, 3, split),
    "join": (1, 2, join),
    "substring": (2, 3, substring),
    "indexOf": (2, 3, index_of),
    "lastIndexOf": (2, 3, last_index_of),
}
MATH: dict[str, tuple[int, int | None, Impl]] = {
    "greatest": (1, None, greatest),
    "least": (1, None, least),
    "abs": (1, 1, m_abs),
    "ceil": (1, 1, _rounding("ceil", math.ceil)),
    "floor": (1, 1, _rounding("floor", math.floor)),
    "round": (1, 1, _rounding("round", _round_half_away)),
}
# Constant-time functions: an expression calling only these needs no cost metering.
O1_FUNCTIONS = frozenset(
    {"size", "int", "double", "string", "bool", "dyn", "math.abs", "math.ceil", "math.floor", "math.round"}
)
