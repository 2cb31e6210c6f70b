"""Tokenizer for the CEL subset.

Python's `re` is used here only with the constant, linear patterns below; user-supplied regular
expressions go to RE2 (see _stdlib.py).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any, NamedTuple

from .errors import CompileError, position_at

__all__ = ["INT_MAX", "INT_MIN", "Token", "iter_tokens", "tokenize"]

INT_MAX = (1 << 63) - 1
INT_MIN = -(1 << 63)

# Only CEL's ASCII whitespace and `//` comments; `[0-9]` rather than `\d`, which matches non-ASCII digits.
# One alternation per token class; whitespace and comments are the unnamed group. A string prefix
# (r, b) is tried before identifiers so that r'..' is a raw string.
_MASTER = re.compile(
    # Leading whitespace and comments, atomic so that a failed match never backtracks into them.
    r"(?>(?:[ \t\n\r\f]|//[^\n]*)*)"
    r"(?:(?P<string>[rRbB]{0,2}['\"])"
    r"|(?P<number>0[xX][0-9a-fA-F]+[uU]?|[0-9]*\.[0-9]+(?:[eE][+-]?[0-9]+)?|[0-9]+[eE][+-]?[0-9]+|[0-9]+[uU]?)"
    r"|(?P<ident>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<op>\|\||&&|==|!=|<=|>=|[-+*/%!<>?:.,()\[\]{}]))"
)
_SKIP = re.compile(r"(?>(?:[ \t\n\r\f]|//[^\n]*)*)")
_QUOTES = frozenset("'\"")
_SIMPLE_ESCAPES = {
    "a": "\a",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "v": "\v",
    "\\": "\\",
    "'": "'",
    '"': '"',
    "`": "`",
    "?": "?",
}
_HEX = frozenset("0123456789abcdefABCDEF")
_IDENT_START = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_")


class Token(NamedTuple):
    kind: str  # "int" | "double" | "string" | "ident" | "op" | "eof"
    value: Any
    start: int
    end: int


def _fail(text: str, offset: int, message: str, hint: str | None = None) -> CompileError:
    return CompileError("syntax", message, position_at(text, offset), hint)


def tokenize(text: str, start: int = 0, end: int | None = None, *, hole: bool = False) -> list[Token]:
    return list(iter_tokens(text, start, end, hole=hole))


def iter_tokens(text: str, start: int = 0, end: int | None = None, *, hole: bool = False) -> Iterator[Token]:
    """Tokens of text[start:end], lazily (so a parser that gives up early does not lex the rest);
    offsets stay relative to the whole `text` (templates need that).

    With hole=True the text is a template hole: tokenizing stops before a `}}` that is outside any
    string and any braces, and the eof token's start is the offset of that `}}`; reaching the end
    without one is an error."""
    stop = len(text) if end is None else end
    pos = start
    braces = 0
    master = _MASTER.match
    new = tuple.__new__  # Token(...) goes through a Python-level __new__; this does not
    while True:
        m = master(text, pos, stop)
        if m is None:
            pos = _SKIP.match(text, pos, stop).end()  # type: ignore[union-attr]  # always matches
            if pos >= stop:
                break
            raise _unexpected(text, pos)
        kind = m.lastgroup or "op"  # every alternative of _MASTER is a named group
        pos = m.start(kind)
        if kind == "op":
            value = m.group(kind)
            if hole and value in "{}":
                if value == "{":
                    braces += 1
                elif braces:
                    braces -= 1
                elif text.startswith("}}", pos):
                    yield new(Token, ("eof", None, pos, pos))
                    return
            tok = new(Token, ("op", value, pos, m.end()))
        elif kind == "ident":
            tok = new(Token, ("ident", m.group(kind), pos, m.end()))
        elif kind == "number":
            tok = _number(text, pos, m.end(), stop)
        else:
            tok = _string(text, pos, stop)
        yield tok
        pos = tok.end
    if hole:
        raise CompileError(
            "syntax",
            "'{{' is not closed",
            position_at(text, start - 2),
            "close the expression with }} (write {{ '{{' }} for literal braces)",
        )
    yield Token("eof", None, stop, stop)


def _unexpected(text: str, pos: int) -> CompileError:
    ch = text[pos]
    hint = None
    if ch == "=":
        hint = "use '==' to compare; expressions cannot assign"
    elif ch in "&|":
        hint = f"use '{ch}{ch}' for the logical operator"
    elif ch == "#":
        hint = "comments start with //"
    return _fail(text, pos, f"unexpected character {ch!r}", hint)


def _number(text: str, pos: int, end: int, stop: int) -> Token:
    raw = text[pos:end]
    if end < stop and (text[end] in _IDENT_START or "0" <= text[end] <= "9"):
        raise _fail(text, end, f"unexpected character {text[end]!r} after number {raw!r}")
    if raw[-1] in "uU":
        raw = raw[:-1]  # uint literals are plain ints here (see docs: deviations)
    elif "." in raw or (("e" in raw or "E" in raw) and not raw.startswith(("0x", "0X"))):
        return Token("double", float(raw), pos, end)
    value = int(raw, 16) if raw.startswith(("0x", "0X")) else int(raw, 10)
    if value > INT_MAX + 1:  # INT_MAX + 1 is allowed only right after a unary minus (checked by the parser)
        raise CompileError(
            "overflow",
            f"integer literal {raw} is outside the 64-bit range",
            position_at(text, pos),
            "integers are 64-bit; use a double such as 1e20 for larger magnitudes",
        )
    return Token("int", value, pos, end)


def _body_pattern(quote: str, raw: bool, triple: bool) -> re.Pattern[str]:
    # In raw strings a backslash is an ordinary character; elsewhere it escapes the next one.
    q = quote
    if triple:
        char = rf"[^{q}]" if raw else rf"[^\\{q}]|\\[\s\S]"
        return re.compile(rf"(?:{char}|{q}(?!{q}{q}))*+{q}{q}{q}")
    char = rf"[^{q}\n]" if raw else rf"[^\\{q}\n]|\\."
    return re.compile(rf"(?:{char})*+{q}")


# Possessive quantifiers: a string body is matched in one linear pass and never backtracked into.
_BODIES = {(q, r, t): _body_pattern(q, r, t) for q in "'\"" for r in (False, True) for t in (False, True)}


def _string(text: str, pos: int, stop: int) -> Token:
    start = pos
    raw = False
    while text[pos] in "rRbB":
        if text[pos] in "bB":
            raise _fail(text, pos, "bytes literals are not supported", "use a string literal")
        raw = True
        pos += 1
    quote = text[pos]
    triple = text.startswith(quote * 3, pos) and pos + 3 <= stop
    pos += 3 if triple else 1
    m = _BODIES[quote, raw, triple].match(text, pos, stop)
    if m is None:
        hint = f"close the string with {quote * 3 if triple else quote}"
        if not triple:
            hint += "; use ''' or \"\"\" for multi-line strings"
        raise _fail(text, start, "unterminated string literal", hint)
    end = m.end()
    body = text[pos : end - (3 if triple else 1)]
    if raw or "\\" not in body:
        return Token("string", body, start, end)
    return Token("string", _unescape(text, pos, body), start, end)


def _unescape(text: str, base: int, body: str) -> str:
    parts: list[str] = []
    at = 0
    while True:
        slash = body.find("\\", at)
        if slash < 0:
            parts.append(body[at:])
            return "".join(parts)
        parts.append(body[at:slash])
        value, at = _escape(body, slash, text, base)
        parts.append(value)


def _escape(body: str, pos: int, text: str, base: int) -> tuple[str, int]:
    """Decode the escape at body[pos]; errors point into `text`, where the body starts at `base`."""
    stop = len(body)
    kind = body[pos + 1] if pos + 1 < stop else ""
    if kind in _SIMPLE_ESCAPES:
        return _SIMPLE_ESCAPES[kind], pos + 2
    width = {"x": 2, "X": 2, "u": 4, "U": 8}.get(kind)
    if width is not None:
        digits = body[pos + 2 : min(pos + 2 + width, stop)]
        if len(digits) != width or not all(c in _HEX for c in digits):
            raise _fail(text, base + pos, f"\\{kind} needs {width} hex digits")
        code = int(digits, 16)
        if code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
            raise _fail(text, base + pos, f"\\{kind}{digits} is not a valid Unicode code point")
        return chr(code), pos + 2 + width
    if "0" <= kind <= "3":
        digits = body[pos + 1 : min(pos + 4, stop)]
        if len(digits) == 3 and all("0" <= c <= "7" for c in digits):
            return chr(int(digits, 8)), pos + 4
    raise _fail(text, base + pos, f"invalid escape sequence \\{kind}", "write \\\\ for a backslash")
