"""Step-wise upgraders: each takes one document version to the next, until `universe/1`.

The oldest "version" is the original TypeScript studio's saved version (`canvasState` with ReactFlow
nodes, seed-spec §1.2 and §6.3), so its users can bring their universes. Each step returns notes
(warnings) for whatever it had to interpret, so nothing changes silently.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from cosmogen.domain.diagnostics import Diagnostic, DocumentError
from cosmogen.domain.model import SCHEMA_VERSION
from cosmogen.expr import CompileError, compile_expression

Raw = dict[str, Any]
Step = Callable[[Raw], tuple[Raw, list[Diagnostic]]]

LEGACY_VERSION = "fortistate/studio"

# Operator symbols the original accepted (JavaScript) and their CEL spelling.
_JS_OPERATORS = (("===", "=="), ("!==", "!="))
_ASSIGNMENT = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*=(?!=)\s*(.+)$", re.DOTALL)
_WHEN = re.compile(r"^\s*(?:WHEN\s*\(\s*['\"]?([^'\")]+)['\"]?\s*\)|when:\s*(\S+))\s*$", re.IGNORECASE)
_NUMBER = re.compile(r"^-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?$")


def detect_version(raw: Raw) -> str | None:
    version = raw.get("cosmogen")
    if isinstance(version, str):
        return version
    if isinstance(raw.get("canvasState"), dict) or isinstance(raw.get("canvas"), dict):
        return LEGACY_VERSION
    nodes = raw.get("nodes")
    if isinstance(nodes, list) and any(
        isinstance(n, dict) and isinstance(n.get("data"), dict) for n in nodes
    ):
        return LEGACY_VERSION
    return None


def upgrade(raw: Raw) -> tuple[Raw, list[Diagnostic]]:
    """Apply upgraders until the document is current. Unknown versions are an error with a hint."""
    notes: list[Diagnostic] = []
    version = detect_version(raw)
    if version is None:
        raise DocumentError(
            [
                Diagnostic(
                    "unknown-version",
                    "error",
                    "the document does not say what it is",
                    field="cosmogen",
                    hint=f'add "cosmogen": "{SCHEMA_VERSION}" at the top level',
                )
            ]
        )
    seen: set[str] = set()
    while version != SCHEMA_VERSION:
        step = UPGRADERS.get(version)
        if step is None or version in seen:
            raise DocumentError(
                [
                    Diagnostic(
                        "unknown-version",
                        "error",
                        f"unknown document version {version!r}",
                        field="cosmogen",
                        hint=f"this release reads {SCHEMA_VERSION!r} and the original studio's versions",
                    )
                ]
            )
        seen.add(version)
        raw, step_notes = step(raw)
        notes.extend(step_notes)
        version = str(raw.get("cosmogen"))
    return raw, notes


def from_legacy_studio(raw: Raw) -> tuple[Raw, list[Diagnostic]]:
    """The original studio's saved version or draft-save body -> universe/1."""
    notes: list[Diagnostic] = []
    canvas = raw.get("canvasState") or raw.get("canvas") or raw
    if not isinstance(canvas, dict):
        canvas = {}
    metadata: Raw = raw["metadata"] if isinstance(raw.get("metadata"), dict) else {}
    name = raw.get("label") or raw.get("name") or metadata.get("label") or "Imported universe"
    nodes: list[Raw] = []
    kept: set[str] = set()
    for index, node in enumerate(_list(canvas.get("nodes"))):
        converted = _legacy_node(node, index, notes)
        if converted is not None:
            nodes.append(converted)
            kept.add(converted["id"])
    edges: list[Raw] = []
    for edge in _list(canvas.get("edges")):
        if not isinstance(edge, dict):
            continue
        source, target = edge.get("source"), edge.get("target")
        if source in kept and target in kept:
            edges.append({"source": source, "target": target})
        elif isinstance(source, str) and isinstance(target, str):
            # Edges to nodes we could not import would dangle: drop them and say so.
            dropped = source if source not in kept else target
            notes.append(
                Diagnostic(
                    "import-dropped-edge",
                    "warning",
                    f"edge {source} -> {target} dropped: node {dropped!r} was not imported",
                )
            )
    document: Raw = {"cosmogen": SCHEMA_VERSION, "name": str(name)[:200], "nodes": nodes, "edges": edges}
    description = raw.get("description") or metadata.get("description")
    if isinstance(description, str):
        document["description"] = description
    viewport = canvas.get("viewport")
    if isinstance(viewport, dict) and all(isinstance(v, int | float) for v in viewport.values()):
        document["viewport"] = {k: float(v) for k, v in viewport.items()}
    if raw.get("bindings"):
        notes.append(
            Diagnostic(
                "import-bindings",
                "warning",
                f"{len(_list(raw.get('bindings')))} integration binding(s) were not imported",
                hint="re-create them on the nodes once the accounts are connected in cosmogen",
            )
        )
    return document, notes


def _legacy_node(node: Any, index: int, notes: list[Diagnostic]) -> Raw | None:
    if not isinstance(node, dict):
        return None
    node_id = str(node.get("id") or f"node-{index}")
    kind = str(node.get("type") or "")
    data: Raw = node["data"] if isinstance(node.get("data"), dict) else {}
    out: Raw = {"id": node_id, "type": kind}
    position = node.get("position")
    if isinstance(position, dict) and {"x", "y"} <= position.keys():
        out["position"] = {"x": position["x"], "y": position["y"]}
    for key in ("label", "narrative"):
        if isinstance(data.get(key), str) and data[key]:
            out[key] = data[key]
    if kind in ("law", "operator"):
        notes.append(
            Diagnostic(
                "import-dropped-node",
                "warning",
                f"legacy {kind} node {node_id!r} was not imported: it named no entity and the original "
                "never executed it",
                node=node_id,
                hint="add a cosmogen LAW node with invariants on the entity it should govern",
            )
        )
        return None
    if "entity" in data:
        out["entity"] = str(data["entity"])
    if kind == "begin":
        out["properties"] = _legacy_properties(data.get("properties"), node_id, notes)
    elif kind == "become":
        out["transform"] = _legacy_transform(data.get("transform"), node_id, notes)
        trigger = data.get("trigger")
        if isinstance(trigger, str) and trigger.strip() and trigger.strip().upper() != "IMMEDIATE":
            _legacy_trigger(trigger, out, node_id, notes)
    elif kind == "cease":
        out["condition"] = _js_to_cel(str(data.get("condition") or "false"))
        out["action"] = data.get("action") or "terminate"
    elif kind == "transcend":
        out["portal"] = data.get("portal") or "universe:elsewhere"
        if isinstance(data.get("condition"), str) and data["condition"].strip():
            out["condition"] = _js_to_cel(data["condition"])
    elif kind == "resolve":
        out["strategy"] = data.get("strategy") or "merge"
    return out


def _legacy_properties(value: Any, node_id: str, notes: list[Diagnostic]) -> Raw:
    if isinstance(value, str):
        # The original's editor stored unparsable property JSON as a string (seed defect 20).
        try:
            value = json.loads(value)
        except ValueError:
            raise DocumentError(
                [
                    Diagnostic(
                        "import-bad-properties",
                        "error",
                        "the properties of this BEGIN node were saved as text that is not JSON",
                        node=node_id,
                        hint="fix the properties in the original export, or write them in the converted file",
                    )
                ]
            ) from None
    if not isinstance(value, dict):
        return {}
    out: Raw = {}
    converted: list[str] = []
    for key, item in value.items():
        # The original's editor turned numbers into strings (seed defect 20); bring them back.
        if isinstance(item, str) and _NUMBER.match(item.strip()):
            number = json.loads(item.strip())
            out[key] = number
            converted.append(key)
        else:
            out[key] = item
    if converted:
        notes.append(
            Diagnostic(
                "import-number",
                "warning",
                f"numeric text turned back into numbers: {', '.join(converted)}",
                node=node_id,
            )
        )
    return out


def _legacy_transform(value: Any, node_id: str, notes: list[Diagnostic]) -> Raw:
    if isinstance(value, dict):
        return {str(k): _js_to_cel(str(v)) for k, v in value.items()}
    text = str(value or "").strip()
    if not text:
        return {}
    assignments = [part for part in re.split(r"[;\n]", text) if part.strip()]
    parsed = [_ASSIGNMENT.match(part) for part in assignments]
    if all(parsed):
        return {m.group(1): _js_to_cel(m.group(2).strip()) for m in parsed if m}
    # The original wrote every transform's result to `balance` (seed-spec §1.5).
    notes.append(
        Diagnostic(
            "import-transform-target",
            "warning",
            f"transform {text!r} has no target property; it is applied to 'balance' as the original did",
            node=node_id,
            hint="write it as a map such as {'stock': 'stock - 1'} to target another property",
        )
    )
    return {"balance": _js_to_cel(text)}


def _legacy_trigger(trigger: str, out: Raw, node_id: str, notes: list[Diagnostic]) -> None:
    when = _WHEN.match(trigger)
    if when:
        out["on_event"] = (when.group(1) or when.group(2)).strip()
        return
    try:
        compile_expression(_js_to_cel(trigger))
    except CompileError:
        # The original ignored every trigger; a free-text one was only a description.
        out["narrative"] = f"{out.get('narrative', '')} (trigger: {trigger})".strip()
        notes.append(
            Diagnostic(
                "import-trigger-text",
                "warning",
                f"trigger {trigger!r} is not an expression; the original ignored it, so the node always "
                "fires; the text was kept in the narrative",
                node=node_id,
                hint="set on_event to an event name, or trigger to a boolean expression",
            )
        )
    else:
        out["trigger"] = _js_to_cel(trigger)


def _js_to_cel(text: str) -> str:
    for js, cel in _JS_OPERATORS:
        text = text.replace(js, cel)
    return text.strip()


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


UPGRADERS: dict[str, Step] = {
    LEGACY_VERSION: from_legacy_studio,
}
