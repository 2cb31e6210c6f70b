from typing import Any

from cosmogen.domain.fabric import MAIN, FabricState, apply, new_state, run_plan
from cosmogen.testing.builders import document, plan_of


def begin(entity: str = "e", node_id: str = "b", **props: Any) -> dict[str, Any]:
    return {"id": node_id, "type": "begin", "entity": entity, "properties": props}


def become(node_id: str, transform: dict[str, str], entity: str = "e", **extra: Any) -> dict[str, Any]:
    return {"id": node_id, "type": "become", "entity": entity, "transform": transform, **extra}


def run(nodes: list[dict[str, Any]], edges: list[tuple[str, str]] | None = None, **event: Any) -> FabricState:
    return run_plan(plan_of(document(nodes, edges)), event or None)


def test_begin_then_become_applies_the_transform_and_traces_both() -> None:
    state = run([begin(balance=100), become("s", {"balance": "balance - 150"})])
    assert state.status == "succeeded"
    assert state.main.entities == {"e": {"balance": -50}}
    assert [(t.node, t.before, t.after) for t in state.trace] == [
        ("b", None, {"balance": 100}),
        ("s", {"balance": 100}, {"balance": -50}),
    ]


def test_transform_map_is_evaluated_against_the_state_before_the_node() -> None:
    state = run([begin(a=1, b=2), become("swap", {"a": "b", "b": "a", "c": "a + b"})])
    assert state.main.entities["e"] == {"a": 2, "b": 1, "c": 3}


def test_false_trigger_skips_and_changes_nothing() -> None:
    state = run([begin(n=1), become("s", {"n": "n + 1"}, trigger="n > 5")])
    assert state.outcomes["s"].status == "skipped"
    assert "trigger is false" in state.outcomes["s"].reason
    assert state.main.entities["e"] == {"n": 1}


def test_on_event_fires_only_for_that_event_and_sees_its_data() -> None:
    nodes = [begin(n=1), become("dep", {"n": "n + event.data.amount"}, on_event="deposit")]
    assert run(nodes).main.entities["e"] == {"n": 1}
    assert run(nodes, name="deposit", data={"amount": 50}).main.entities["e"] == {"n": 51}


def test_entity_and_event_variables_are_available() -> None:
    state = run(
        [begin(n=1), become("s", {"who": "entity.id", "why": "event.name", "k": "size(entity.properties)"})]
    )
    assert state.main.entities["e"] == {"n": 1, "who": "e", "why": "manual", "k": 1}


def test_a_failing_node_fails_the_run_blocks_its_descendants_only() -> None:
    nodes = [
        begin(n=1),
        become("bad", {"n": "n / 0"}),
        become("after", {"n": "n + 1"}),
        begin("other", "b2", m=1),
        become("fine", {"m": "m + 1"}, entity="other"),
    ]
    state = run(nodes, [("b", "bad"), ("bad", "after"), ("b2", "fine")])
    assert state.status == "failed"
    assert state.outcomes["bad"].status == "error"
    assert state.outcomes["bad"].error_code == "division_by_zero"
    assert state.outcomes["after"].status == "skipped"
    assert state.outcomes["after"].blocked_by == "bad"
    assert state.outcomes["fine"].status == "complete"
    assert state.main.entities == {"e": {"n": 1}, "other": {"m": 2}}


def test_non_boolean_trigger_at_run_time_is_an_error() -> None:
    state = run([begin(n=1), become("s", {"n": "n + 1"}, trigger="event.data.flag")], data={"flag": 5})
    assert state.outcomes["s"].status == "error"
    assert state.outcomes["s"].error_code == "not-boolean"


def test_cease_terminate_removes_the_entity_and_later_nodes_skip() -> None:
    nodes = [
        begin(hp=1),
        {"id": "die", "type": "cease", "entity": "e", "condition": "hp <= 1", "action": "terminate"},
        become("heal", {"hp": "hp + 1"}),
    ]
    state = run(nodes)
    assert state.main.entities == {}
    assert state.trace[-1].after is None
    assert state.outcomes["heal"].status == "skipped"


def test_cease_repair_applies_the_repair_map() -> None:
    nodes = [
        begin(balance=-5),
        {
            "id": "floor",
            "type": "cease",
            "entity": "e",
            "condition": "balance < 0",
            "action": "repair",
            "repair": {"balance": "0"},
        },
    ]
    state = run(nodes)
    assert state.main.entities["e"] == {"balance": 0}
    assert state.paradoxes == []


def test_cease_repair_that_does_not_lift_the_condition_records_a_paradox() -> None:
    nodes = [
        begin(balance=-5),
        {
            "id": "floor",
            "type": "cease",
            "entity": "e",
            "condition": "balance < 0",
            "action": "repair",
            "repair": {"balance": "balance + 1"},
        },
    ]
    state = run(nodes)
    assert state.main.entities["e"] == {"balance": -4}
    assert [p.kind for p in state.paradoxes] == ["cease"]
    assert not state.paradoxes[0].resolved


def test_cease_fork_keeps_main_and_records_two_branches_and_a_paradox() -> None:
    nodes = [
        begin(balance=-5),
        begin("bystander", "b2", x=1),
        {
            "id": "f",
            "type": "cease",
            "entity": "e",
            "condition": "balance < 0",
            "action": "fork",
            "repair": {"balance": "0"},
        },
    ]
    state = run(nodes, [("b", "f")])
    assert state.main.entities["e"] == {"balance": -5}
    assert [(b.universe, b.entities) for b in state.branches] == [
        (f"{MAIN}:repair:f", {"e": {"balance": 0}}),
        (f"{MAIN}:explore:f", {"e": {"balance": -5}}),
    ]
    assert [p.kind for p in state.paradoxes] == ["cease"]


def test_transcend_moves_the_entity_into_the_portal_after_its_mapping() -> None:
    nodes = [
        begin(balance=600, tier="gold"),
        {
            "id": "t",
            "type": "transcend",
            "entity": "e",
            "portal": "universe:vip",
            "condition": "balance > 50",
            "mapping": {"tier": "'platinum'"},
        },
        become("fee", {"balance": "balance - 5"}),
    ]
    state = run(nodes)
    assert state.main.entities == {}
    (vip,) = state.branches
    assert vip.universe == "universe:vip"
    assert vip.entities == {"e": {"balance": 600, "tier": "platinum"}}
    assert state.outcomes["fee"].status == "skipped"


def test_two_transcends_to_one_portal_share_that_reality() -> None:
    nodes = [
        begin("a", "ba", n=1),
        begin("b", "bb", n=2),
        {"id": "ta", "type": "transcend", "entity": "a", "portal": "universe:x"},
        {"id": "tb", "type": "transcend", "entity": "b", "portal": "universe:x"},
    ]
    state = run(nodes, [("ba", "ta"), ("bb", "tb")])
    assert [b.universe for b in state.branches] == ["universe:x"]
    assert set(state.branches[0].entities) == {"a", "b"}


def fork_then_resolve(strategy: str) -> FabricState:
    nodes = [
        begin(balance=20, tier="basic"),
        become("w", {"balance": "balance - 50"}),
        {
            "id": "f",
            "type": "cease",
            "entity": "e",
            "condition": "balance < 0",
            "action": "fork",
            "repair": {"balance": "0", "flagged": "true"},
        },
        {"id": "r", "type": "resolve", "entity": "e", "strategy": strategy},
    ]
    return run(nodes)


def test_resolve_first_wins_takes_the_first_branch_home() -> None:
    state = fork_then_resolve("first-wins")
    assert state.main.entities["e"] == {"balance": 0, "tier": "basic", "flagged": True}
    assert all("e" not in b.entities for b in state.branches)


def test_resolve_last_wins_keeps_the_main_version() -> None:
    state = fork_then_resolve("last-wins")
    assert state.main.entities["e"] == {"balance": -30, "tier": "basic"}


def test_resolve_merge_unions_properties_and_later_versions_win_disputes() -> None:
    state = fork_then_resolve("merge")
    assert state.main.entities["e"] == {"balance": -30, "tier": "basic", "flagged": True}
    assert "disputed: balance, flagged" in state.trace[-1].narrative


def test_resolve_manual_leaves_a_conflict_record_and_changes_nothing() -> None:
    state = fork_then_resolve("manual")
    conflict = state.paradoxes[-1]
    assert conflict.kind == "conflict"
    assert conflict.violation[MAIN] == {"balance": -30, "flagged": None}
    assert state.main.entities["e"] == {"balance": -30, "tier": "basic"}
    assert all("e" in b.entities for b in state.branches)


def test_resolve_without_branches_is_skipped() -> None:
    state = run([begin(n=1), {"id": "r", "type": "resolve", "entity": "e"}])
    assert state.outcomes["r"].status == "skipped"


def law(entity: str, invariants: dict[str, str], repair: dict[str, str] | None = None) -> dict[str, Any]:
    node: dict[str, Any] = {
        "id": "law",
        "type": "law",
        "entity": entity,
        "name": "guard",
        "invariants": invariants,
    }
    if repair:
        node["repair"] = repair
    return node


def test_law_is_checked_after_every_operator_touching_a_governed_entity() -> None:
    nodes = [
        law("acct:*", {"non_negative": "balance >= 0"}),
        begin("acct:1", "b", balance=10),
        become("spend", {"balance": "balance - 20"}, entity="acct:1"),
        become("spend2", {"balance": "balance - 1"}, entity="acct:1"),
    ]
    state = run(nodes, [("b", "spend"), ("spend", "spend2")])
    assert [(p.kind, p.node, p.violation) for p in state.paradoxes] == [
        ("law", "spend", {"balance": -10}),
        ("law", "spend2", {"balance": -11}),
    ]
    assert state.outcomes["law"].status == "skipped"  # it ran first, before any entity existed


def test_law_repair_fixes_the_entity_and_marks_the_paradox_resolved() -> None:
    nodes = [
        begin("acct:1", "b", balance=10),
        law("acct:1", {"nn": "balance >= 0"}, {"balance": "0"}),
        become("spend", {"balance": "balance - 20"}, entity="acct:1"),
    ]
    state = run(nodes, [("b", "spend")])
    assert state.main.entities["acct:1"] == {"balance": 0}
    assert [(p.kind, p.resolved) for p in state.paradoxes] == [("law", True)]


def test_checkpointed_state_resumes_to_the_same_result() -> None:
    plan = plan_of(
        document(
            [
                begin(n=1),
                become("a", {"n": "n * 3"}),
                {
                    "id": "f",
                    "type": "cease",
                    "entity": "e",
                    "condition": "n > 2",
                    "action": "fork",
                    "repair": {"n": "0"},
                },
                {"id": "r", "type": "resolve", "entity": "e", "strategy": "merge"},
            ]
        )
    )
    straight = run_plan(plan)
    for cut in range(len(plan.steps) + 1):
        state = new_state()
        for step in plan.steps[:cut]:
            apply(state, plan, step)
        resumed = FabricState.from_json(_json_round_trip(state.to_json()))
        for step in plan.steps[cut:]:
            apply(resumed, plan, step)
        assert resumed.to_json() == straight.to_json()


def _json_round_trip(value: Any) -> Any:
    import json

    return json.loads(json.dumps(value))


def test_later_nodes_see_upstream_outputs_and_run_metadata() -> None:
    transform = {"seen": "nodes.a.entity.n", "st": "nodes.a.status", "dry": "run.dry_run"}
    plan = plan_of(document([begin(n=1), become("a", {"n": "n + 1"}), become("c", transform)]))
    state = new_state(run={"dry_run": True})
    for step in plan.steps:
        apply(state, plan, step)
    assert state.main.entities["e"] == {"n": 2, "seen": 2, "st": "complete", "dry": True}


def test_reserved_names_win_over_nothing_and_cannot_be_properties() -> None:
    from cosmogen.testing.builders import report_of

    for name in ("entity", "event", "nodes", "run"):
        report = report_of(document([{"id": "b", "type": "begin", "entity": "e", "properties": {name: 1}}]))
        assert [d.code for d in report.errors] == ["reserved-property"]
