"""Typed errors and source positions for expressions and templates."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CompileError", "EvalError", "ExprError", "Position", "position_at"]


@dataclass(frozen=True, slots=True)
class Position:
    """A place in the source text: 0-based character offset, 1-based line and column."""

    offset: int
    line: int
    column: int

    def __str__(self) -> str:
        return f"line {self.line}, column {self.column}"


def position_at(text: str, offset: int) -> Position:
    """The position of `offset` in `text` (clamped to the text)."""
    offset = max(0, min(offset, len(text)))
    line = text.count("\n", 0, offset) + 1
    line_start = text.rfind("\n", 0, offset) + 1
    return Position(offset, line, offset - line_start + 1)


class ExprError(Exception):
    """Base of every error the expression engine raises on purpose.

    `code` is a stable machine-readable identifier (documented in docs/expressions.md);
    `message` and `hint` are for people.
    """

    code: str
    message: str
    position: Position | None
    hint: str | None

    def __init__(self, code: str, message: str, position: Position | None = None, hint: str | None = None):
        # Passing every field to Exception keeps the error picklable (args mirror __init__).
        super().__init__(code, message, position, hint)
        self.code = code
        self.message = message
        self.position = position
        self.hint = hint

    def __str__(self) -> str:
        text = self.message
        if self.position is not None:
            text += f" (at {self.position})"
        if self.hint:
            text += f"; hint: {self.hint}"
        return text

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(code={self.code!r}, message={self.message!r}, position={self.position!r})"
        )


class CompileError(ExprError):
    """The source text cannot be turned into an expression (syntax, limits, unknown functions)."""


class EvalError(ExprError):
    """Evaluation failed: a runtime type mismatch, a missing key, overflow or an exhausted budget."""
