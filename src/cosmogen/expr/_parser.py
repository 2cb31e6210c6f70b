"""Recursive-descent parser (precedence climbing with an explicit operator stack).

Python recursion happens only for real nesting (parentheses, brackets, braces, call arguments,
index expressions, ternary branches), about five frames per level, and that nesting is capped by
`max_depth` before it can grow; operator chains, unary runs and member chains are loops.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import islice

from ._ast import (
    Binary,
    Call,
    Comprehension,
    Has,
    Ident,
    Index,
    ListLit,
    Literal,
    MapLit,
    Member,
    Node,
    Ternary,
    Unary,
)
from ._lexer import INT_MAX, Token, iter_tokens
from .budgets import Budgets
from .errors import CompileError, position_at

__all__ = ["MACROS", "NAMESPACES", "parse", "parse_hole"]

_PREC = {
    "||": 1,
    "&&": 2,
    "==": 3,
    "!=": 3,
    "<": 3,
    "<=": 3,
    ">": 3,
    ">=": 3,
    "in": 3,
    "+": 4,
    "-": 4,
    "*": 5,
    "/": 5,
    "%": 5,
}
_RESERVED = frozenset(
    {"as", "break", "const", "continue", "else", "for", "function", "if", "import", "let", "loop"}
    | {"package", "namespace", "return", "var", "void", "while"}
)
MACROS = {"all": 2, "exists": 2, "exists_one": 2, "map": (2, 3), "filter": 2}
NAMESPACES = frozenset({"math"})
_CLOSERS = {"(": ")", "[": "]", "{": "}"}


def parse(text: str, budgets: Budgets) -> Node:
    return _Parser(text, iter_tokens(text), budgets).parse()[0]


def parse_hole(text: str, start: int, budgets: Budgets) -> tuple[Node, int]:
    """Parse the template hole starting at `start`; returns the tree and the offset of its `}}`."""
    node, eof = _Parser(text, iter_tokens(text, start, hole=True), budgets).parse()
    return node, eof.start


def _describe(tok: Token) -> str:
    if tok.kind == "eof":
        return "the end of the expression"
    if tok.kind == "ident":
        return f"identifier '{tok.value}'"
    if tok.kind == "op":
        return f"'{tok.value}'"
    return f"{tok.kind} literal"


class _Parser:
    def __init__(self, text: str, tokens: Iterator[Token], budgets: Budgets):
        self.text = text
        self.stream = tokens
        self.toks: list[Token] = []
        self.i = 0
        self.depth = 0
        self.max_depth = budgets.max_depth
        self.max_height = 4 * budgets.max_depth
        self.max_nest = budgets.max_comprehension_nesting
        self.negated = False  # set by unary() when a '-' immediately precedes the operand

    # -- helpers -------------------------------------------------------------------------------
    def error(self, offset: int, message: str, hint: str | None = None, code: str = "syntax") -> CompileError:
        return CompileError(code, message, position_at(self.text, offset), hint)

    def peek(self) -> Token:
        try:
            return self.toks[self.i]
        except IndexError:
            # Lex in small batches: deeply nested input fails after a few tokens, not after all of them.
            self.toks.extend(islice(self.stream, 32))
            if len(self.toks) <= self.i:
                self.toks.append(self.toks[-1])  # stay on the eof token
            return self.toks[self.i]

    def is_op(self, value: str) -> bool:
        tok = self.peek()
        return tok.kind == "op" and tok.value == value

    def expect(self, value: str, opener: Token | None = None) -> Token:
        tok = self.peek()
        if tok.kind == "op" and tok.value == value:
            self.i += 1
            return tok
        hint = None
        if opener is not None:
            where = position_at(self.text, opener.start)
            hint = f"'{opener.value}' at {where} is not closed; add '{value}'"
        raise self.error(tok.start, f"expected '{value}' but found {_describe(tok)}", hint)

    def checked(self, node: Node) -> Node:
        if node.height > self.max_height:
            raise self.error(
                node.offset,
                f"expression tree is deeper than {self.max_height} levels",
                "split long operator chains, e.g. use a list and a macro",
                code="too_deep",
            )
        return node

    def too_deep(self, offset: int) -> CompileError:
        return self.error(
            offset,
            f"expression is nested more than {self.max_depth} levels deep",
            "simplify the expression or compute parts in earlier nodes",
            code="too_deep",
        )

    # -- grammar -------------------------------------------------------------------------------
    def parse(self) -> tuple[Node, Token]:
        first = self.peek()
        if first.kind == "eof":
            raise CompileError(
                "empty",
                "the expression is empty",
                position_at(self.text, first.start),
                "write an expression such as balance > 0",
            )
        node = self.expr()
        tok = self.peek()
        if tok.kind != "eof":
            hint = "did you forget an operator such as '&&' or '+'?"
            if tok.kind == "op" and tok.value in (")", "]", "}"):
                hint = f"remove the unmatched '{tok.value}'"
            raise self.error(tok.start, f"unexpected {_describe(tok)} after a complete expression", hint)
        return node, tok

    def expr(self) -> Node:
        self.depth += 1
        if self.depth > self.max_depth:
            raise self.too_deep(self.peek().start)
        node = self.binary()
        if self.is_op("?"):
            q = self.peek()
            self.i += 1
            then = self.expr()
            self.expect(":", q)
            other = self.expr()
            node = self.checked(Ternary(q.start, node, then, other))
        self.depth -= 1
        return node

    def binary(self) -> Node:
        operands = [self.unary()]
        ops: list[tuple[int, str, int]] = []
        while True:
            tok = self.peek()
            op = tok.value if tok.kind == "op" or (tok.kind == "ident" and tok.value == "in") else None
            prec = _PREC.get(op) if isinstance(op, str) else None
            if prec is None or op is None:
                break
            while ops and ops[-1][0] >= prec:
                self.reduce(operands, ops)
            ops.append((prec, op, tok.start))
            self.i += 1
            if self.peek().kind == "eof":
                raise self.error(
                    self.peek().start,
                    f"expected an operand after '{op}'",
                    f"the expression ends with '{op}'; add a value after it",
                )
            operands.append(self.unary())
        while ops:
            self.reduce(operands, ops)
        return operands[0]

    def reduce(self, operands: list[Node], ops: list[tuple[int, str, int]]) -> None:
        _, op, offset = ops.pop()
        right = operands.pop()
        left = operands.pop()
        operands.append(self.checked(Binary(offset, op, left, right)))

    def unary(self) -> Node:
        prefix: list[Token] = []
        while True:
            tok = self.peek()
            if tok.kind == "op" and tok.value in ("!", "-"):
                if self.depth + len(prefix) >= self.max_depth:
                    raise self.too_deep(tok.start)
                prefix.append(tok)
                self.i += 1
            else:
                break
        if not prefix:
            return self.postfix()
        self.depth += len(prefix)
        self.negated = prefix[-1].value == "-"
        node = self.postfix()
        self.negated = False
        self.depth -= len(prefix)
        for tok in reversed(prefix):
            if tok.value == "-" and isinstance(node, Literal) and type(node.value) in (int, float):
                value = -node.value
                if type(value) is int and value > INT_MAX:
                    raise self.error(
                        tok.start, "integer literal is outside the 64-bit range", code="overflow"
                    )
                node = Literal(tok.start, value)
            else:
                node = self.checked(Unary(tok.start, tok.value, node))
        return node

    def postfix(self) -> Node:
        node = self.primary()
        links = 0
        while True:
            tok = self.peek()
            if tok.kind != "op" or tok.value not in (".", "["):
                return node
            links += 1
            if self.depth + links > self.max_depth:
                raise self.too_deep(tok.start)
            self.i += 1
            if tok.value == "[":
                self.depth += links
                index = self.expr()
                self.depth -= links
                self.expect("]", tok)
                node = self.checked(Index(tok.start, node, index))
                continue
            name_tok = self.peek()
            if name_tok.kind != "ident":
                raise self.error(
                    name_tok.start, f"expected a field name after '.' but found {_describe(name_tok)}"
                )
            self.i += 1
            if self.is_op("("):
                self.depth += links
                args = self.arguments()
                self.depth -= links
                node = self.receiver_call(name_tok, node, args)
            else:
                node = self.checked(Member(name_tok.start, node, name_tok.value))

    def arguments(self) -> tuple[Node, ...]:
        opener = self.expect("(")
        args: list[Node] = []
        if not self.is_op(")"):
            while True:
                args.append(self.expr())
                if not self.is_op(","):
                    break
                self.i += 1
        self.expect(")", opener)
        return tuple(args)

    def receiver_call(self, name_tok: Token, target: Node, args: tuple[Node, ...]) -> Node:
        name = name_tok.value
        if name in MACROS:
            arity = MACROS[name]
            allowed = arity if isinstance(arity, tuple) else (arity,)
            if len(args) not in allowed:
                want = " or ".join(str(a) for a in allowed)
                raise self.error(
                    name_tok.start,
                    f"{name}() takes {want} arguments, got {len(args)}",
                    f"write list.{name}(x, <expression using x>)",
                    code="bad_macro",
                )
            var = args[0]
            if not isinstance(var, Ident):
                raise self.error(
                    var.offset,
                    f"the first argument of {name}() must be a variable name",
                    f"write list.{name}(x, <expression using x>)",
                    code="bad_macro",
                )
            pred = args[1] if name != "map" or len(args) == 3 else None
            transform = args[-1] if name == "map" else None
            node = Comprehension(name_tok.start, name, target, var.name, var.offset, pred, transform)
            if node.nest > self.max_nest:
                raise self.error(
                    name_tok.start,
                    f"macros are nested more than {self.max_nest} levels deep",
                    "flatten the computation or split it across nodes",
                    code="too_deep",
                )
            return self.checked(node)
        if isinstance(target, Ident) and target.name in NAMESPACES:
            return self.checked(Call(name_tok.start, name, args, None, target.name))
        return self.checked(Call(name_tok.start, name, args, target, None))

    def primary(self) -> Node:
        tok = self.peek()
        kind = tok.kind
        if kind in ("int", "double", "string"):
            self.i += 1
            if kind == "int" and tok.value > INT_MAX and not (self.negated and not self._postfix_follows()):
                raise self.error(
                    tok.start,
                    "integer literal is outside the 64-bit range",
                    "integers are 64-bit; use a double such as 1e20",
                    code="overflow",
                )
            return Literal(tok.start, tok.value)
        self.negated = False
        if kind == "ident":
            self.i += 1
            name = tok.value
            if name in ("true", "false"):
                return Literal(tok.start, name == "true")
            if name == "null":
                return Literal(tok.start, None)
            if name in _RESERVED or name == "in":
                raise self.error(tok.start, f"'{name}' is a reserved word and cannot be used here")
            if self.is_op("("):
                args = self.arguments()
                if name == "has":
                    if len(args) != 1 or not isinstance(args[0], Member):
                        raise self.error(
                            tok.start,
                            "has() takes one field selection such as has(entity.tier)",
                            "write has(map.field)",
                            code="bad_macro",
                        )
                    return self.checked(Has(tok.start, args[0].target, args[0].name))
                return self.checked(Call(tok.start, name, args, None, None))
            return Ident(tok.start, name)
        if kind == "op":
            value = tok.value
            if value == "(":
                self.i += 1
                node = self.expr()
                self.expect(")", tok)
                return node
            if value == "[":
                self.i += 1
                items = self.sequence("]", tok)
                return self.checked(ListLit(tok.start, tuple(items)))
            if value == "{":
                self.i += 1
                entries: list[tuple[Node, Node]] = []
                while not self.is_op("}"):
                    key = self.expr()
                    self.expect(":", tok)
                    entries.append((key, self.expr()))
                    if not self.is_op(","):
                        break
                    self.i += 1
                self.expect("}", tok)
                return self.checked(MapLit(tok.start, tuple(entries)))
        if kind == "eof":
            raise self.error(
                tok.start,
                "expected an expression but the text ended",
                "complete the expression; an operand or closing bracket is missing",
            )
        raise self.error(tok.start, f"expected an expression but found {_describe(tok)}")

    def sequence(self, closer: str, opener: Token) -> list[Node]:
        items: list[Node] = []
        while not self.is_op(closer):
            items.append(self.expr())
            if not self.is_op(","):
                break
            self.i += 1
        self.expect(closer, opener)
        return items

    def _postfix_follows(self) -> bool:
        tok = self.peek()
        return tok.kind == "op" and tok.value in (".", "[")
