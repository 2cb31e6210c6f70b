from typing import Any

import pytest

from cosmogen.domain.diagnostics import Diagnostic
from cosmogen.testing.builders import document, report_of


def begin(entity: str = "e", node_id: str = "b", **props: Any) -> dict[str, Any]:
    return {"id": node_id, "type": "begin", "entity": entity, "properties": props}


def become(node_id: str, transform: dict[str, str], entity: str = "e", **extra: Any) -> dict[str, Any]:
    return {"id": node_id, "type": "become", "entity": entity, "transform": transform, **extra}


def diagnostics(nodes: list[dict[str, Any]], edges: list[tuple[str, str]] | None = None) -> list[Diagnostic]:
    return report_of(document(nodes, edges)).diagnostics


def only(nodes: list[dict[str, Any]], code: str, edges: list[tuple[str, str]] | None = None) -> Diagnostic:
    found = [d for d in diagnostics(nodes, edges) if d.code == code]
    assert len(found) == 1, found
    return found[0]


def test_valid_universe_has_a_plan_in_topological_order() -> None:
    report = report_of(document([begin(n=1), become("s", {"n": "n + 1"})]))
    assert report.valid
    assert report.plan is not None
    assert [s.id for s in report.plan.steps] == ["b", "s"]
    assert report.diagnostics == []


def test_cycle_reports_its_path() -> None:
    nodes = [begin(n=1), become("x", {"n": "n + 1"}), become("y", {"n": "n + 2"})]
    d = only(nodes, "cycle", [("b", "x"), ("x", "y"), ("y", "x")])
    assert "x -> y -> x" in d.message
    assert d.hint
    assert "remove one edge" in d.hint


def test_dangling_edge_names_the_missing_node() -> None:
    d = only([begin(n=1)], "dangling-edge", [("b", "ghost")])
    assert d.node == "ghost"


def test_duplicate_ids() -> None:
    d = only([begin(n=1), begin("f", "b", n=2)], "duplicate-id", [])
    assert d.node == "b"


def test_operator_without_upstream_begin() -> None:
    d = only([become("s", {"n": "1"})], "no-begin")
    assert d.node == "s"
    assert d.hint
    assert "add a BEGIN" in d.hint


def test_begin_elsewhere_but_not_upstream_gets_an_edge_hint() -> None:
    d = only([begin(n=1), become("s", {"n": "n + 1"})], "no-begin", [])
    assert d.hint
    assert "add an edge from 'b'" in d.hint


def test_duplicate_begin() -> None:
    d = only([begin(n=1), begin("e", "b2", n=2)], "duplicate-begin")
    assert d.node == "b2"


def test_syntax_error_carries_position_and_hint() -> None:
    d = only([begin(balance=1), become("s", {"balance": "balance +"})], "expr-syntax")
    assert d.node == "s"
    assert d.field == "transform.balance"
    assert d.column == 10
    assert d.hint


def test_ill_typed_expression_is_an_error() -> None:
    d = only([begin(tier="gold"), become("s", {"tier": "tier - 1"})], "expr-type")
    assert d.severity == "error"
    assert d.field == "transform.tier"


def test_unknown_property_is_a_warning_with_a_suggestion() -> None:
    report = report_of(document([begin(balance=1), become("s", {"balance": "balanse + 1"})]))
    (d,) = [d for d in report.diagnostics if d.code == "unknown-property"]
    assert d.severity == "warning"
    assert d.hint
    assert "balance" in d.hint
    assert report.valid


def test_property_written_upstream_is_known() -> None:
    nodes = [begin(n=1), become("a", {"m": "n * 2"}), become("b2", {"n": "m + 1"})]
    assert diagnostics(nodes) == []


def test_condition_must_be_boolean() -> None:
    d = only([begin(n=1), become("s", {"n": "1"}, trigger="n + 1")], "not-boolean")
    assert d.field == "trigger"


def test_cease_repair_without_map() -> None:
    node = {"id": "c", "type": "cease", "entity": "e", "condition": "n < 0", "action": "repair"}
    d = only([begin(n=1), node], "repair-missing")
    assert d.node == "c"


def test_reserved_property_names() -> None:
    d = only([begin(event=1)], "reserved-property")
    assert d.field == "properties.event"


def test_law_without_matching_entity_warns() -> None:
    law = {"id": "l", "type": "law", "entity": "acct:*", "invariants": {"x": "true"}}
    d = only([begin(n=1), law], "law-no-entity", [])
    assert d.severity == "warning"


@pytest.mark.parametrize(
    ("source", "code"),
    [
        ("(" * 4_000 + "1" + ")" * 4_000, "expr-too-deep"),
        ("-" * 8_000 + "1", "expr-too-deep"),
        ("1 + " * 300_000 + "1", "expr-too-long"),
    ],
)
def test_hostile_expressions_become_diagnostics(source: str, code: str) -> None:
    d = only([begin(n=1), become("s", {"n": source})], code)
    assert d.node == "s"


def test_every_node_of_a_valid_plan_is_in_the_order_once() -> None:
    nodes = [begin(n=1), become("a", {"n": "n+1"}), become("c", {"n": "n+1"}), become("d", {"n": "n+1"})]
    report = report_of(document(nodes, [("b", "a"), ("b", "c"), ("a", "d"), ("c", "d")]))
    assert report.plan is not None
    assert [s.id for s in report.plan.steps] == ["b", "a", "c", "d"]
