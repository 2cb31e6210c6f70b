"""Static type inference over the syntax tree (flat types: lists and maps carry no element type)."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import cast

from . import _ast as A
from ._types import CelType, TypeIssue
from .errors import position_at

__all__ = ["check"]

T = CelType
_NUM = frozenset({T.INT, T.DOUBLE})
_ORDERED = frozenset({T.INT, T.DOUBLE, T.STRING, T.BOOL})
S, I, D, B, L, M = T.STRING, T.INT, T.DOUBLE, T.BOOL, T.LIST, T.MAP  # noqa: E741 (short names keep the signature table readable)
_Sig = tuple[tuple[CelType, ...], CelType]
_SIGS: dict[str, list[_Sig]] = {
    "size": [((S,), I), ((L,), I), ((M,), I)],
    "int": [((I,), I), ((D,), I), ((S,), I)],
    "double": [((I,), D), ((D,), D), ((S,), D)],
    "string": [((S,), S), ((I,), S), ((D,), S), ((B,), S)],
    "bool": [((B,), B), ((S,), B)],
    "matches": [((S, S), B)],
    "contains": [((S, S), B)],
    "startsWith": [((S, S), B)],
    "endsWith": [((S, S), B)],
    "lowerAscii": [((S,), S)],
    "upperAscii": [((S,), S)],
    "trim": [((S,), S)],
    "replace": [((S, S, S), S), ((S, S, S, I), S)],
    "split": [((S, S), L), ((S, S, I), L)],
    "join": [((L,), S), ((L, S), S)],
    "substring": [((S, I), S), ((S, I, I), S)],
    "indexOf": [((S, S), I), ((S, S, I), I)],
    "lastIndexOf": [((S, S), I), ((S, S, I), I)],
    "math.abs": [((I,), I), ((D,), D)],
    "math.ceil": [((I,), I), ((D,), D)],
    "math.floor": [((I,), I), ((D,), D)],
    "math.round": [((I,), I), ((D,), D)],
}


def check(root: A.Node, text: str, types: Mapping[str, CelType]) -> tuple[CelType, list[TypeIssue]]:
    checker = _Checker(text, types)
    return checker.visit(root), checker.issues


class _Checker:
    def __init__(self, text: str, types: Mapping[str, CelType]):
        self.text = text
        self.types = types
        self.scope: dict[str, int] = {}
        self.issues: list[TypeIssue] = []

    def error(self, node: A.Node, code: str, message: str, hint: str | None = None) -> CelType:
        self.issues.append(TypeIssue("error", code, message, position_at(self.text, node.offset), hint))
        return T.DYN

    def overload(self, node: A.Node, op: str, args: tuple[CelType, ...], hint: str | None = None) -> CelType:
        shown = ", ".join(str(a) for a in args)
        return self.error(node, "no_such_overload", f"no such overload: {op} applied to ({shown})", hint)

    def visit(self, node: A.Node) -> CelType:
        if isinstance(node, A.Literal):
            v = node.value
            return {bool: B, int: I, float: D, str: S, type(None): T.NULL}[type(v)]
        if isinstance(node, A.Ident):
            return self.ident(node)
        if isinstance(node, A.Binary):
            return self.binary(node)
        if isinstance(node, A.Unary):
            t = self.visit(node.operand)
            if node.op == "!":
                return B if t in (B, T.DYN) else self.overload(node, "!", (t,), "'!' needs a bool")
            return t if t in _NUM or t is T.DYN else self.overload(node, "-", (t,), "'-' needs a number")
        if isinstance(node, A.Ternary):
            c = self.visit(node.cond)
            if c not in (B, T.DYN):
                self.error(node, "no_such_overload", f"the condition of '?:' is a {c}, not a bool")
            a, b = self.visit(node.then), self.visit(node.other)
            return a if a is b else T.DYN
        if isinstance(node, A.Member):
            t = self.visit(node.target)
            if t in (M, T.DYN):
                return T.DYN
            return self.error(node, "no_such_field", f"cannot select field '{node.name}' of a {t}")
        if isinstance(node, A.Index):
            return self.index(node)
        if isinstance(node, A.Has):
            t = self.visit(node.target)
            if t not in (M, T.DYN):
                self.error(node, "no_such_overload", f"has() tests a field of a map, not of a {t}")
            return B
        if isinstance(node, A.ListLit):
            for item in node.items:
                self.visit(item)
            return L
        if isinstance(node, A.MapLit):
            for key, value in node.entries:
                kt = self.visit(key)
                if kt not in (S, T.DYN):
                    self.error(key, "no_such_overload", f"map keys must be strings, not {kt}")
                self.visit(value)
            return M
        if isinstance(node, A.Call):
            return self.call(node)
        return self.comprehension(cast(A.Comprehension, node))

    def ident(self, node: A.Ident) -> CelType:
        if node.name in self.scope:
            return T.DYN
        known = self.types.get(node.name)
        if known is not None:
            return known
        close = difflib.get_close_matches(node.name, [str(k) for k in self.types], n=1)
        hint = f"did you mean '{close[0]}'?" if close else None
        self.issues.append(
            TypeIssue(
                "warning",
                "unknown_variable",
                f"unknown variable '{node.name}'",
                position_at(self.text, node.offset),
                hint,
            )
        )
        return T.DYN

    def index(self, node: A.Index) -> CelType:
        t = self.visit(node.target)
        k = self.visit(node.index)
        if t is L and k not in (I, D, T.DYN):
            return self.overload(node, "[]", (t, k), "list indexes are integers")
        if t is M and k not in (S, T.DYN):
            return self.overload(node, "[]", (t, k), "map keys are strings")
        if t not in (L, M, T.DYN):
            return self.overload(node, "[]", (t, k), "only lists and maps can be indexed")
        return T.DYN

    def binary(self, node: A.Binary) -> CelType:
        op = node.op
        lt, rt = self.visit(node.left), self.visit(node.right)
        dyn = T.DYN in (lt, rt)
        other = rt if lt is T.DYN else lt
        if op in ("&&", "||"):
            for t in (lt, rt):
                if t not in (B, T.DYN):
                    self.overload(node, op, (lt, rt), f"'{op}' needs bools; compare first, e.g. x > 0")
                    break
            return B
        if op == "+":
            if lt in _NUM and rt in _NUM:
                return I if lt is rt is I else D
            if lt is rt and lt in (S, L):
                return lt
            if dyn and other in (I, D, S, L, T.DYN):
                return T.DYN
            hint = "convert with string(x)" if S in (lt, rt) else None
            return self.overload(node, "+", (lt, rt), hint)
        if op in ("-", "*", "/", "%"):
            allowed = frozenset({I}) if op == "%" else _NUM
            if lt in allowed and rt in allowed:
                return I if lt is rt is I else D
            if dyn and (other in allowed or other is T.DYN):
                return I if op == "%" else (D if other is D else T.DYN)
            hint = "'%' works on integers" if op == "%" and D in (lt, rt) else f"'{op}' works on numbers"
            return self.overload(node, op, (lt, rt), hint)
        if op in ("<", "<=", ">", ">="):
            ok = (lt in _NUM and rt in _NUM) or (lt is rt and lt in _ORDERED) or (dyn and other in _ORDERED)
            if not (ok or lt is rt is T.DYN):
                self.overload(node, op, (lt, rt), "compare numbers with numbers and strings with strings")
            return B
        if op in ("==", "!="):
            ok = dyn or lt is rt or (lt in _NUM and rt in _NUM) or T.NULL in (lt, rt)
            if not ok:
                self.overload(node, op, (lt, rt), "the two sides have different types")
            return B
        if rt not in (L, M, T.DYN):
            self.overload(node, "in", (lt, rt), "'in' needs a list or a map on the right")
        return B

    def call(self, node: A.Call) -> CelType:
        args = tuple(self.visit(a) for a in node.children())
        name = f"{node.namespace}.{node.name}" if node.namespace else node.name
        if name == "dyn":
            return T.DYN
        if name in ("math.greatest", "math.least"):
            if len(args) == 1 and args[0] in (L, T.DYN):
                return T.DYN
            if not all(a in _NUM or a is T.DYN for a in args):
                return self.overload(node, name, args, f"{name}() takes numbers or one list of numbers")
            return args[0] if all(a is args[0] for a in args) else T.DYN
        sigs = _SIGS.get(name, [])
        results = {
            result
            for params, result in sigs
            if len(params) == len(args)
            and all(a is p or a is T.DYN for a, p in zip(args, params, strict=True))
        }
        if not results:
            accepted = "; ".join("(" + ", ".join(str(p) for p in params) + ")" for params, _ in sigs)
            return self.overload(node, name, args, f"{name}() accepts {accepted}" if accepted else None)
        return results.pop() if len(results) == 1 else T.DYN

    def comprehension(self, node: A.Comprehension) -> CelType:
        rt = self.visit(node.range)
        if rt not in (L, M, T.DYN):
            self.error(node, "no_such_overload", f"{node.kind}() needs a list or a map, not a {rt}")
        self.scope[node.var] = self.scope.get(node.var, 0) + 1
        if node.pred is not None:
            pt = self.visit(node.pred)
            if pt not in (B, T.DYN):
                self.error(
                    node.pred, "no_such_overload", f"the predicate of {node.kind}() is a {pt}, not a bool"
                )
        if node.transform is not None:
            self.visit(node.transform)
        self.scope[node.var] -= 1
        if not self.scope[node.var]:
            del self.scope[node.var]
        return L if node.kind in ("map", "filter") else B
