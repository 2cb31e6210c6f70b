from typing import Any

from cosmogen.domain.fabric import apply, new_state
from cosmogen.testing.builders import document, plan_of, report_of

NODES = [
    {"id": "b", "type": "begin", "entity": "acct:1", "properties": {"balance": 10, "tier": "gold"}},
    {"id": "s", "type": "become", "entity": "acct:1", "transform": {"balance": "balance + 5"}},
]


def with_bindings(*bindings: dict[str, Any]) -> dict[str, Any]:
    doc = document(NODES)
    doc["bindings"] = list(bindings)
    return doc


def http(binding_id: str = "notify", node: str = "s", **request: Any) -> dict[str, Any]:
    return {"id": binding_id, "node": node, "request": {"url": "https://hooks.example.com/x", **request}}


def test_binding_renders_with_entity_state_upstream_outputs_and_typed_holes() -> None:
    body = {
        "who": "{{ entity.id }}",
        "balance": "{{ balance }}",
        "note": "now {{ balance }}",
        "prev": "{{ nodes.b.status }}",
    }
    plan = plan_of(
        with_bindings(
            http(url="https://hooks.example.com/{{ tier }}", headers={"X-Id": "{{ entity.id }}"}, body=body)
        )
    )
    state = new_state()
    for step in plan.steps:
        apply(state, plan, step)
    (binding,) = plan.steps[1].bindings
    props = state.main.entities["acct:1"]
    scope = {
        **props,
        "entity": {"id": "acct:1", "properties": props},
        "event": state.event,
        "nodes": state.outputs,
        "run": {},
    }
    request = binding.render(scope)
    assert request.url == "https://hooks.example.com/gold"
    assert request.headers == {"X-Id": "acct:1"}
    assert request.body == {"who": "acct:1", "balance": 15, "note": "now 15", "prev": "complete"}


def test_binding_on_unknown_node_and_duplicate_ids_are_errors() -> None:
    report = report_of(with_bindings(http("other", node="ghost"), http(), http()))
    assert sorted(d.code for d in report.errors) == ["binding-unknown-node", "duplicate-binding-id"]


def test_binding_template_errors_point_at_the_field() -> None:
    report = report_of(with_bindings(http(body={"x": "{{ balance + }}"})))
    (error,) = report.errors
    assert error.code == "expr-syntax"
    assert error.field == "bindings[0].request.body.x"
    assert error.node == "s"


def test_binding_template_unknown_property_warns() -> None:
    report = report_of(with_bindings(http(url="https://x.example.com/{{ balanse }}")))
    assert report.valid
    assert [d.code for d in report.warnings] == ["unknown-property"]
