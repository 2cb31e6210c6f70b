"""Diagnostics: what is wrong with a document, where, and how to fix it."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

Severity = Literal["error", "warning"]


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """One finding. `code` is stable (tools and tests match on it); the message is for people."""

    code: str
    severity: Severity
    message: str
    node: str | None = None
    field: str | None = None
    hint: str | None = None
    line: int | None = None
    column: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    def render(self) -> str:
        where = []
        if self.node is not None:
            where.append(f"node {self.node!r}")
        if self.field is not None:
            where.append(self.field)
        if self.column is not None:
            where.append(f"column {self.column}")
        location = f" [{', '.join(where)}]" if where else ""
        text = f"{self.severity}: {self.code}{location}: {self.message}"
        if self.hint:
            text += f"\n    hint: {self.hint}"
        return text


def has_errors(diagnostics: list[Diagnostic]) -> bool:
    return any(d.severity == "error" for d in diagnostics)


class DocumentError(Exception):
    """A document that cannot be read at all (bad JSON, wrong shape, unknown version)."""

    def __init__(self, diagnostics: list[Diagnostic]) -> None:
        self.diagnostics = diagnostics
        super().__init__("; ".join(d.message for d in diagnostics))
