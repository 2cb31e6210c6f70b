"""Builders for universe documents in tests, benchmarks and examples."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

from cosmogen.domain.document import universe_from_raw
from cosmogen.domain.plan import Plan
from cosmogen.domain.validate import Report, validate


def document(
    nodes: Sequence[dict[str, Any]],
    edges: Sequence[tuple[str, str]] | None = None,
    *,
    name: str = "test",
) -> dict[str, Any]:
    """A universe/1 document; without `edges` the nodes are chained in list order."""
    if edges is None:
        edges = [(a["id"], b["id"]) for a, b in itertools.pairwise(nodes)]
    return {
        "cosmogen": "universe/1",
        "name": name,
        "nodes": list(nodes),
        "edges": [{"source": s, "target": t} for s, t in edges],
    }


def report_of(raw: dict[str, Any]) -> Report:
    universe, _ = universe_from_raw(raw)
    return validate(universe)


def plan_of(raw: dict[str, Any]) -> Plan:
    """Compile a document that must be valid; a test sees the diagnostics when it is not."""
    report = report_of(raw)
    if report.plan is None:
        raise AssertionError("invalid test universe:\n" + "\n".join(d.render() for d in report.diagnostics))
    return report.plan
