"""`Secret`: a string that never shows itself by accident.

Kept apart from the vault (which imports `cryptography`) so that settings and anything else can carry a
secret without paying for the import. `repr`, `str`, `format` and f-strings show `****`; pickling and
`json.dumps` refuse it; the value comes out only through `.reveal()`, so every place that needs the
plaintext says so and can be found with grep.
"""

from __future__ import annotations

import hmac
from typing import Any, NoReturn

MASK = "****"


class Secret:
    __slots__ = ("__value",)

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            # bytes or another Secret would be masked too, but a later .reveal() would surprise its caller
            raise TypeError(f"Secret wraps a str, not {type(value).__name__}")
        self.__value = value

    def reveal(self) -> str:
        """The plaintext. Call it only where the value leaves for its destination (a request header)."""
        return self.__value

    def __repr__(self) -> str:
        return f"Secret('{MASK}')"

    def __str__(self) -> str:
        return MASK

    def __format__(self, spec: str) -> str:
        return MASK

    def __eq__(self, other: object) -> bool:
        # Constant-time, so comparing a guess with a stored secret does not leak how much of it matched.
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self.__value.encode(), other.__value.encode())

    __hash__ = None  # type: ignore[assignment]  # a hash of the value would be a side channel in dicts/sets

    def __bool__(self) -> bool:
        return bool(self.__value)

    # Immutable: copies may share the object, and copying must not go through __reduce_ex__ (refused).
    def __copy__(self) -> Secret:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> Secret:
        return self

    def __reduce_ex__(self, protocol: object) -> NoReturn:
        raise TypeError("a Secret cannot be pickled: store it through the vault (encrypted), not as a pickle")

    def __reduce__(self) -> NoReturn:
        raise TypeError("a Secret cannot be pickled: store it through the vault (encrypted), not as a pickle")
