"""A launch's entry node: which nodes a run executes (EntryScope) and how the others are recorded."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cosmogen.domain.fabric import apply, new_state, skip_node
from cosmogen.domain.plan import EntryScope, UnknownEntryNode
from cosmogen.testing.builders import document, plan_of


def begin(node_id: str, entity: str, **props: Any) -> dict[str, Any]:
    return {"id": node_id, "type": "begin", "entity": entity, "properties": props}


def become(node_id: str, entity: str, transform: dict[str, str]) -> dict[str, Any]:
    return {"id": node_id, "type": "become", "entity": entity, "transform": transform}


# a -> a2 -> joined <- b2 <- b, plus a LAW with no edges (as laws usually are).
TWO_FLOWS = document(
    [
        begin("a", "acct:a", n=1),
        become("a2", "acct:a", {"n": "n + 1"}),
        begin("b", "acct:b", n=10),
        become("b2", "acct:b", {"n": "n + 1"}),
        become("joined", "acct:a", {"n": "n * 2"}),
        {"id": "law", "type": "law", "entity": "acct:*", "invariants": {"small": "n < 5"}},
    ],
    [("a", "a2"), ("a2", "joined"), ("b", "b2"), ("b2", "joined")],
)


def test_the_scope_is_the_entry_node_what_follows_it_and_the_laws() -> None:
    plan = plan_of(TWO_FLOWS)
    assert EntryScope.of(plan, "a").nodes == {"a", "a2", "joined", "law"}
    assert EntryScope.of(plan, "b2").nodes == {"b2", "joined", "law"}
    assert EntryScope.of(plan, "joined").nodes == {"joined", "law"}


def test_a_node_outside_the_scope_says_why() -> None:
    scope = EntryScope.of(plan_of(TWO_FLOWS), "a")
    assert scope.skip_reason("a2") is None
    assert scope.skip_reason("law") is None
    assert scope.skip_reason("b2") == "not reachable from entry node 'a'"


def test_an_unknown_entry_node_is_refused_with_the_nodes_to_choose_from() -> None:
    with pytest.raises(UnknownEntryNode) as caught:
        EntryScope.of(plan_of(TWO_FLOWS), "nope")
    message = str(caught.value)
    assert "'nope' is not a node of this version" in message
    assert "a, a2, b, b2, joined, law" in message
    assert "'entry_node'" in message


def test_a_skipped_node_does_not_block_what_follows_it() -> None:
    """Left out on purpose is no failure: `joined` still runs although `b2`, one of its inputs, did not."""
    plan = plan_of(TWO_FLOWS)
    scope = EntryScope.of(plan, "a")
    state = new_state()
    for step in plan.steps:
        reason = scope.skip_reason(step.id)
        if reason is None:
            apply(state, plan, step)
        else:
            skip_node(state, step, reason)
    assert {k: o.status for k, o in state.outcomes.items()} == {
        "a": "complete",
        "a2": "complete",
        "b": "skipped",
        "b2": "skipped",
        "joined": "complete",
        "law": "complete",
    }
    assert state.outcomes["b"].reason == "not reachable from entry node 'a'"
    assert state.outcomes["b"].blocked_by is None
    assert state.outputs["b2"] == {"status": "skipped", "entity": None}
    assert state.main.entities == {"acct:a": {"n": 4}}
    assert state.status == "succeeded"


@st.composite
def dags(draw: st.DrawFn) -> tuple[dict[str, Any], str]:
    """A random acyclic universe (edges only go forward in node order) and one of its nodes."""
    size = draw(st.integers(1, 8))
    ids = [f"n{i}" for i in range(size)]
    pairs = list(itertools.combinations(ids, 2))
    edges = draw(st.lists(st.sampled_from(pairs), unique=True, max_size=12)) if pairs else []
    nodes = [begin(node_id, f"e:{node_id}") for node_id in ids]
    return document(nodes, edges), draw(st.sampled_from(ids))


@settings(max_examples=150, deadline=None)
@given(dags())
def test_the_scope_is_exactly_what_a_path_from_the_entry_reaches(case: tuple[dict[str, Any], str]) -> None:
    doc, entry = case
    edges = {(e["source"], e["target"]) for e in doc["edges"]}
    reached = {entry}
    # Edges go forward in node order, so one pass in that order closes the set.
    for node in (n["id"] for n in doc["nodes"]):
        if any((src, node) in edges for src in reached):
            reached.add(node)
    assert EntryScope.of(plan_of(doc), entry).nodes == reached
