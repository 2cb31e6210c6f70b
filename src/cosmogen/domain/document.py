"""Reading universe documents: JSON text -> upgraded raw dict -> typed `Universe`.

Every way a document can be wrong ends in a `DocumentError` carrying diagnostics with a fix hint, never a
traceback. Older formats are brought forward by step-wise upgraders (`upgrade.py`).
"""

from __future__ import annotations

import difflib
import json
import math
from typing import Any

from pydantic import BaseModel, ValidationError

from cosmogen.domain import model
from cosmogen.domain.diagnostics import Diagnostic, DocumentError
from cosmogen.domain.model import NODE_TYPES, Universe
from cosmogen.domain.upgrade import upgrade

MAX_DOCUMENT_BYTES = 16 * 1024 * 1024
# Far beyond any real canvas or property value.
MAX_JSON_DEPTH = 200
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def parse_json(text: str | bytes) -> Any:
    """Decode JSON, refusing sizes, depths and numbers that would misbehave later."""
    if len(text) > MAX_DOCUMENT_BYTES:
        raise _error(
            "too-large",
            f"the document is {len(text):,} bytes; the limit is {MAX_DOCUMENT_BYTES:,}",
            "split the universe or move large data out of entity properties",
        )
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _error(
                "bad-json", f"the file is not UTF-8 text ({exc.reason} at byte {exc.start})"
            ) from None
    try:
        value = json.loads(text, parse_constant=_refuse_constant)
    except RecursionError:
        raise _too_deep() from None
    except json.JSONDecodeError as exc:
        raise DocumentError(
            [
                Diagnostic(
                    "bad-json",
                    "error",
                    f"not valid JSON: {exc.msg}",
                    line=exc.lineno,
                    column=exc.colno,
                    hint="check for a missing comma, quote or bracket near that position",
                )
            ]
        ) from None
    except ValueError as exc:
        raise _error("bad-number", str(exc), "use finite numbers only") from None
    _check_values(value)
    return value


def load_universe(text: str | bytes) -> tuple[Universe, list[Diagnostic]]:
    """Parse, upgrade and type-check a document. Returns the universe and upgrade notes (warnings)."""
    raw = parse_json(text)
    return universe_from_raw(raw)


def universe_from_raw(raw: Any) -> tuple[Universe, list[Diagnostic]]:
    if not isinstance(raw, dict):
        raise _error(
            "bad-shape",
            f"a universe document is a JSON object, not {_json_kind(raw)}",
            'start from {"cosmogen": "universe/1", "name": ..., "nodes": [...], "edges": [...]}',
        )
    current, notes = upgrade(raw)
    try:
        universe = Universe.model_validate(current)
    except ValidationError as exc:
        raise DocumentError(_schema_diagnostics(exc, current)) from None
    return universe, notes


def dump_universe(universe: Universe) -> str:
    return (
        json.dumps(universe.model_dump(mode="json", exclude_none=True), indent=2, ensure_ascii=False) + "\n"
    )


def _error(code: str, message: str, hint: str | None = None) -> DocumentError:
    return DocumentError([Diagnostic(code, "error", message, hint=hint)])


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def _json_kind(value: Any) -> str:
    return {list: "an array", str: "a string", int: "a number", float: "a number", bool: "a boolean"}.get(
        type(value), "null"
    )


def _too_deep() -> DocumentError:
    return _error(
        "too-deep",
        f"the JSON nests more than {MAX_JSON_DEPTH} levels deep",
        "flatten nested properties",
    )


def _check_values(root: Any) -> None:
    """Depth, and numbers that stay numbers in range: int64 integers and finite doubles, as CEL computes.

    Iterative on purpose: a hostile document must not be able to exhaust the Python stack.
    """
    stack: list[tuple[Any, str, int]] = [(root, "$", 0)]
    while stack:
        value, path, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise _too_deep()
        if isinstance(value, bool):
            continue
        if isinstance(value, int):
            if not INT64_MIN <= value <= INT64_MAX:
                raise _error(
                    "bad-number",
                    f"{path}: the integer {value} does not fit in 64 bits",
                    "use a smaller number, or a string if it is an identifier",
                )
        elif isinstance(value, float):
            if not math.isfinite(value):
                raise _error("bad-number", f"{path}: {value} is not a finite number", "use a finite number")
        elif isinstance(value, dict):
            stack.extend((item, f"{path}.{key}", depth + 1) for key, item in value.items())
        elif isinstance(value, list):
            stack.extend((item, f"{path}[{i}]", depth + 1) for i, item in enumerate(value))


def _schema_diagnostics(exc: ValidationError, raw: dict[str, Any]) -> list[Diagnostic]:
    diagnostics: list[Diagnostic] = []
    seen: set[tuple[str, str | None, str | None]] = set()
    for err in exc.errors():
        diagnostic = _schema_diagnostic(err, raw)
        key = (diagnostic.code, diagnostic.node, diagnostic.field)
        if key not in seen:
            seen.add(key)
            diagnostics.append(diagnostic)
    return diagnostics


def _schema_diagnostic(err: Any, raw: dict[str, Any]) -> Diagnostic:
    loc: tuple[Any, ...] = tuple(err["loc"])
    node_id: str | None = None
    node_type: str | None = None
    if len(loc) >= 2 and loc[0] == "nodes" and isinstance(loc[1], int):
        node_raw = _index(raw.get("nodes"), loc[1])
        if isinstance(node_raw, dict):
            node_id = node_raw.get("id") if isinstance(node_raw.get("id"), str) else None
            node_type = node_raw.get("type") if isinstance(node_raw.get("type"), str) else None
        # pydantic puts the union tag in the path: nodes.3.become.transform -> transform
        loc = (f"nodes[{loc[1]}]", *loc[3:]) if len(loc) > 2 and loc[2] in NODE_TYPES else loc
    field = _path(loc)
    kind = err["type"]
    if kind == "union_tag_invalid":
        tag = err.get("ctx", {}).get("tag")
        return Diagnostic(
            "unknown-node-type",
            "error",
            f"unknown node type {tag!r}",
            node=node_id,
            field=field,
            hint=f"use one of: {', '.join(NODE_TYPES)}" + _did_you_mean(str(tag), NODE_TYPES),
        )
    if kind == "union_tag_not_found":
        return Diagnostic(
            "missing-field",
            "error",
            "a node needs a 'type'",
            node=node_id,
            field=field,
            hint=f"set type to one of: {', '.join(NODE_TYPES)}",
        )
    name = str(loc[-1]) if loc else ""
    if kind == "extra_forbidden":
        allowed = _allowed_fields(loc, node_type)
        return Diagnostic(
            "unknown-field",
            "error",
            f"unknown field {name!r}",
            node=node_id,
            field=field,
            hint=(_did_you_mean(name, allowed).strip() or "remove it")
            + (f"; allowed here: {', '.join(allowed)}" if allowed else ""),
        )
    if kind == "missing":
        return Diagnostic(
            "missing-field", "error", f"missing required field {name!r}", node=node_id, field=field
        )
    if kind == "literal_error" and loc == ("cosmogen",):
        return Diagnostic(
            "unknown-version",
            "error",
            f"unknown document version {err.get('input')!r}",
            field=field,
            hint='this cosmogen reads "universe/1" and the original studio\'s saved versions',
        )
    return Diagnostic(
        "bad-field",
        "error",
        f"{err['msg']}" + _input_excerpt(err.get("input")),
        node=node_id,
        field=field,
    )


def _allowed_fields(loc: tuple[Any, ...], node_type: str | None) -> list[str]:
    owner: type[BaseModel] | None = None
    if loc and str(loc[0]).startswith("nodes[") and len(loc) == 2 and node_type in model.NODE_CLASSES:
        owner = model.NODE_CLASSES[node_type]
    elif len(loc) == 1:
        owner = model.Universe
    elif len(loc) == 3 and loc[0] == "edges":
        owner = model.Edge
    return sorted(owner.model_fields) if owner else []


def _did_you_mean(name: str, options: Any) -> str:
    close = difflib.get_close_matches(name, list(options), n=1)
    return f" did you mean {close[0]!r}?" if close else ""


def _path(loc: tuple[Any, ...]) -> str:
    parts: list[str] = []
    for part in loc:
        if isinstance(part, int):
            parts.append(f"[{part}]")
        else:
            parts.append(("." if parts else "") + str(part))
    return "".join(parts)


def _index(value: Any, index: int) -> Any:
    return value[index] if isinstance(value, list) and 0 <= index < len(value) else None


def _input_excerpt(value: Any) -> str:
    if isinstance(value, dict | list):
        return ""
    text = repr(value)
    return f" (got {text[:60]}{'…' if len(text) > 60 else ''})"
