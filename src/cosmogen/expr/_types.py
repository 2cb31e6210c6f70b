"""Static types used by the checker, and the mapping from JSON-like Python values to them."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Literal

from .errors import Position

__all__ = ["CelType", "TypeIssue", "type_of_value"]


class CelType(enum.Enum):
    INT = "int"
    DOUBLE = "double"
    STRING = "string"
    BOOL = "bool"
    NULL = "null"
    BYTES = "bytes"  # reserved: the language has no bytes values yet
    LIST = "list"
    MAP = "map"
    TIMESTAMP = "timestamp"  # reserved: no timestamp functions yet
    DURATION = "duration"  # reserved: no duration functions yet
    DYN = "dyn"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True, slots=True)
class TypeIssue:
    severity: Literal["error", "warning"]
    code: str
    message: str
    position: Position | None = None
    hint: str | None = None

    def __str__(self) -> str:
        text = f"{self.severity}: {self.message}"
        if self.position is not None:
            text += f" (at {self.position})"
        if self.hint:
            text += f"; hint: {self.hint}"
        return text


_BY_TYPE: dict[type, CelType] = {
    type(None): CelType.NULL,
    bool: CelType.BOOL,
    int: CelType.INT,
    float: CelType.DOUBLE,
    str: CelType.STRING,
    list: CelType.LIST,
    dict: CelType.MAP,
}


def type_of_value(value: Any) -> CelType:
    """The CelType of a JSON-like value; anything else is DYN (and fails at evaluation if touched)."""
    return _BY_TYPE.get(type(value), CelType.DYN)
