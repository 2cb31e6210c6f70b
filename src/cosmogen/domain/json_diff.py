"""A JSON-level diff of two universe documents. Pure.

Lists of objects that all carry an `id` (nodes, bindings, entities) are compared by id, not by position,
so inserting a node reports one addition rather than every later node as changed. Edges are compared as
a set of (source, target) pairs. Paths are JSON Pointers (RFC 6901) with ids in place of list indexes.
"""

from __future__ import annotations

from typing import Any


def diff(before: Any, after: Any) -> list[dict[str, Any]]:
    """The changes from `before` to `after`: [{"op": "add"|"remove"|"change", "path", "from"?, "to"?}]."""
    out: list[dict[str, Any]] = []
    _walk(before, after, "", out)
    return out


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def _keyed(items: list[Any]) -> dict[str, Any] | None:
    if not all(isinstance(i, dict) and isinstance(i.get("id"), str) for i in items):
        return None
    keyed = {i["id"]: i for i in items}
    return keyed if len(keyed) == len(items) else None


def _edges(items: list[Any]) -> set[tuple[str, str]] | None:
    if not all(isinstance(i, dict) and set(i) == {"source", "target"} for i in items):
        return None
    return {(str(i["source"]), str(i["target"])) for i in items}


def _walk(a: Any, b: Any, path: str, out: list[dict[str, Any]]) -> None:
    if isinstance(a, dict) and isinstance(b, dict):
        _walk_maps(a, b, path, out)
        return
    if isinstance(a, list) and isinstance(b, list) and (a or b):
        keyed_a, keyed_b = _keyed(a), _keyed(b)
        if keyed_a is not None and keyed_b is not None:
            _walk_maps(keyed_a, keyed_b, path, out)
            return
        edges_a, edges_b = _edges(a), _edges(b)
        if edges_a is not None and edges_b is not None:
            for source, target in sorted(edges_b - edges_a):
                out.append({"op": "add", "path": f"{path}/{_escape(source)}->{_escape(target)}"})
            for source, target in sorted(edges_a - edges_b):
                out.append({"op": "remove", "path": f"{path}/{_escape(source)}->{_escape(target)}"})
            return
    if a != b or type(a) is not type(b):
        out.append({"op": "change", "path": path or "/", "from": a, "to": b})


def _walk_maps(a: dict[str, Any], b: dict[str, Any], path: str, out: list[dict[str, Any]]) -> None:
    for key in sorted(set(a) | set(b)):
        where = f"{path}/{_escape(str(key))}"
        if key not in a:
            out.append({"op": "add", "path": where, "to": b[key]})
        elif key not in b:
            out.append({"op": "remove", "path": where, "from": a[key]})
        else:
            _walk(a[key], b[key], where, out)
