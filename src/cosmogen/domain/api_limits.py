"""Size caps on what the HTTP API accepts (reliability API-11). Pure.

The document reader already refuses depth, odd numbers and 16 MiB files; over the API a body is at most
1 MiB (413), and inside that a universe may not have more nodes, edges or longer strings than any real
canvas needs, so one request cannot make the validator or an executor chew on a pathological graph.
"""

from __future__ import annotations

from typing import Any

from cosmogen.domain.diagnostics import Diagnostic

MAX_BODY_BYTES = 1024 * 1024
MAX_NODES = 2000
MAX_EDGES = 10_000
MAX_STRING_CHARS = 16 * 1024  # an expression, a property value, a name
MAX_PAGE = 200
DEFAULT_PAGE = 50
# The largest integer both databases store (BIGINT, SQLite's INTEGER): a query number bound for SQL above
# it would fail in the driver (a 500, API-01) instead of answering 422.
MAX_SQL_INTEGER = 2**63 - 1


def clamp_page(limit: int | None) -> int:
    """A page size the server is willing to give: 1..MAX_PAGE (a larger ask gets MAX_PAGE)."""
    if limit is None:
        return DEFAULT_PAGE
    return max(1, min(int(limit), MAX_PAGE))


def document_size_problems(raw: Any) -> list[Diagnostic]:
    """Diagnostics for a raw document over the caps; empty when it is within them."""
    out: list[Diagnostic] = []
    if not isinstance(raw, dict):
        return out
    for key, cap in (("nodes", MAX_NODES), ("edges", MAX_EDGES)):
        items = raw.get(key)
        if isinstance(items, list) and len(items) > cap:
            out.append(
                Diagnostic(
                    "too-many-" + key,
                    "error",
                    f"the universe has {len(items):,} {key}; the limit is {cap:,}",
                    field=key,
                    hint="split the universe into smaller ones joined by transcend portals",
                )
            )
    longest = _longest_string(raw)
    if longest > MAX_STRING_CHARS:
        out.append(
            Diagnostic(
                "string-too-long",
                "error",
                f"a string in the document has {longest:,} characters; the limit is {MAX_STRING_CHARS:,}",
                hint="shorten the expression or value; move large data out of the universe",
            )
        )
    return out


def _longest_string(root: Any) -> int:
    longest = 0
    stack = [root]
    while stack:
        value = stack.pop()
        if isinstance(value, str):
            longest = max(longest, len(value))
        elif isinstance(value, dict):
            for key, item in value.items():
                longest = max(longest, len(str(key)))
                stack.append(item)
        elif isinstance(value, list):
            stack.extend(value)
    return longest
