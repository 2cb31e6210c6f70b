"""The operator fabric: what each operator does to entity state. Pure: no clock, no I/O, no randomness.

A run is a sequence of `apply(state, step)` calls in plan order, so the durable runtime can checkpoint
`FabricState` between nodes and resume by applying the remaining steps.

Semantics (seed-spec §1.4, with its defects fixed):
- operators act on the main reality; branches are realities created by CEASE `fork` and TRANSCEND;
- expressions of one map are evaluated against the state *before* the node, then applied together;
- every change is a trace step `(reality, entity, before, after)`, so a reality's history can be replayed;
- RESOLVE brings an entity's versions home from the branches into the main reality;
- LAW invariants are checked after every operator that touches a governed entity.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from json.encoder import encode_basestring
from typing import Any, Literal

from cosmogen.domain.model import (
    BecomeNode,
    BeginNode,
    CeaseNode,
    LawNode,
    ResolveNode,
    TranscendNode,
)
from cosmogen.domain.plan import ExprTable, Law, Plan, PlanNode
from cosmogen.expr import EvalError, Expression

MAIN = "universe:main"
# Names every expression sees besides the entity's properties; no property may take them.
RESERVED_NAMES = frozenset({"entity", "event", "nodes", "run"})

Properties = dict[str, Any]
NodeStatus = Literal["complete", "skipped", "error"]


@dataclass(slots=True)
class Reality:
    universe: str
    reason: str | None = None
    parent: str | None = None
    node: str | None = None
    entities: dict[str, Properties] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "universe": self.universe,
            "reason": self.reason,
            "parent": self.parent,
            "node": self.node,
            "entities": self.entities,
        }


@dataclass(frozen=True, slots=True)
class TraceStep:
    seq: int
    node: str
    operator: str
    entity: str
    reality: str
    before: Properties | None
    after: Properties | None
    narrative: str

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "node": self.node,
            "operator": self.operator,
            "entity": self.entity,
            "reality": self.reality,
            "before": self.before,
            "after": self.after,
            "narrative": self.narrative,
        }


@dataclass(frozen=True, slots=True)
class Paradox:
    kind: Literal["cease", "law", "conflict"]
    entity: str
    node: str
    constraint: str
    violation: Any
    reality: str = MAIN
    resolved: bool = False
    message: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "entity": self.entity,
            "node": self.node,
            "constraint": self.constraint,
            "violation": self.violation,
            "reality": self.reality,
            "resolved": self.resolved,
            "message": self.message,
        }


@dataclass(frozen=True, slots=True)
class NodeOutcome:
    node: str
    status: NodeStatus
    reason: str = ""
    error_code: str | None = None
    field: str | None = None
    # The upstream node whose failure kept this one from running.
    blocked_by: str | None = None

    @property
    def stops_downstream(self) -> bool:
        return self.status == "error" or self.blocked_by is not None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"node": self.node, "status": self.status}
        if self.reason:
            data["reason"] = self.reason
        if self.error_code:
            data["error"] = {"code": self.error_code, "field": self.field}
        if self.blocked_by:
            data["blocked_by"] = self.blocked_by
        return data


@dataclass(slots=True)
class FabricState:
    """Everything a run has produced so far. Checkpointable: `to_json` / `from_json` round-trip."""

    event: dict[str, Any]
    main: Reality = field(default_factory=lambda: Reality(MAIN))
    branches: list[Reality] = field(default_factory=list)
    trace: list[TraceStep] = field(default_factory=list)
    paradoxes: list[Paradox] = field(default_factory=list)
    outcomes: dict[str, NodeOutcome] = field(default_factory=dict)
    # What later nodes see as `nodes.<id>`: status and entity state, plus binding results from the runtime.
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Run metadata (`run.id`, `run.dry_run`, ...), supplied by the runtime; empty for in-memory runs.
    run: dict[str, Any] = field(default_factory=dict)

    @property
    def status(self) -> Literal["succeeded", "failed"]:
        return "failed" if any(o.status == "error" for o in self.outcomes.values()) else "succeeded"

    def branch(self, universe: str) -> Reality | None:
        for reality in self.branches:
            if reality.universe == universe:
                return reality
        return None

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "entities": self.main.entities,
            "branches": [b.to_json() for b in self.branches],
            "paradoxes": [p.to_json() for p in self.paradoxes],
            "trace": [t.to_json() for t in self.trace],
            "nodes": {k: v.to_json() for k, v in self.outcomes.items()},
            "event": self.event,
            "outputs": self.outputs,
            "run": self.run,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FabricState:
        def reality(raw: Mapping[str, Any]) -> Reality:
            return Reality(
                raw["universe"], raw.get("reason"), raw.get("parent"), raw.get("node"), raw["entities"]
            )

        outcomes = {}
        for key, raw in data["nodes"].items():
            error = raw.get("error") or {}
            outcomes[key] = NodeOutcome(
                raw["node"],
                raw["status"],
                raw.get("reason", ""),
                error.get("code"),
                error.get("field"),
                raw.get("blocked_by"),
            )
        return cls(
            event=dict(data["event"]),
            main=Reality(MAIN, entities=dict(data["entities"])),
            branches=[reality(b) for b in data["branches"]],
            trace=[TraceStep(**t) for t in data["trace"]],
            paradoxes=[Paradox(**p) for p in data["paradoxes"]],
            outcomes=outcomes,
            outputs=dict(data.get("outputs", {})),
            run=dict(data.get("run", {})),
        )


class NodeFailure(Exception):
    """A node could not complete; carries what to show the user."""

    def __init__(self, message: str, code: str, field: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.field = field


DEFAULT_EVENT: dict[str, Any] = {"name": "manual", "data": {}}


def new_state(event: Mapping[str, Any] | None = None, run: Mapping[str, Any] | None = None) -> FabricState:
    merged = {**DEFAULT_EVENT, **(event or {})}
    return FabricState(event=merged, run=dict(run or {}))


def run_plan(
    plan: Plan,
    event: Mapping[str, Any] | None = None,
    on_step: Callable[[PlanNode, NodeOutcome], None] | None = None,
) -> FabricState:
    """Apply every step of the plan in order; the in-memory run."""
    state = new_state(event)
    for step in plan.steps:
        outcome = apply(state, plan, step)
        if on_step is not None:
            on_step(step, outcome)
    return state


def apply(state: FabricState, plan: Plan, step: PlanNode) -> NodeOutcome:
    """Apply one node to the state and record its outcome. Never raises for user-caused failures."""
    culprit = next((p for p in step.predecessors if _stops(state.outcomes.get(p))), None)
    if culprit is not None:
        outcome = NodeOutcome(step.id, "skipped", f"upstream node {culprit!r} failed", blocked_by=culprit)
    else:
        try:
            outcome = _OPERATORS[step.node.type](state, plan, step)
        except NodeFailure as exc:
            outcome = NodeOutcome(step.id, "error", str(exc), exc.code, exc.field)
    return _settle(state, step, outcome)


def skip_node(state: FabricState, step: PlanNode, reason: str) -> NodeOutcome:
    """Record a node as skipped without applying it (e.g. outside a launch's entry scope).

    Not `blocked_by`: a node left out on purpose is no failure, so what follows it may still run.
    """
    return _settle(state, step, NodeOutcome(step.id, "skipped", reason))


def _settle(state: FabricState, step: PlanNode, outcome: NodeOutcome) -> NodeOutcome:
    state.outcomes[step.id] = outcome
    entity = getattr(step.node, "entity", None)
    state.outputs[step.id] = {
        "status": outcome.status,
        "entity": state.main.entities.get(entity) if isinstance(entity, str) else None,
    }
    return outcome


def binding_scope(state: FabricState, step: PlanNode) -> dict[str, Any]:
    """What a node's bindings see: the entity as the node left it (or as it was, if the node removed it)."""
    entity = getattr(step.node, "entity", "")
    props = state.main.entities.get(entity)
    if props is None:
        props = next((t.before for t in reversed(state.trace) if t.node == step.id and t.before), None) or {}
    return _scope(entity, props, state)


def record_binding(state: FabricState, step: PlanNode, binding_id: str, result: dict[str, Any]) -> None:
    """Make a binding's result visible to later nodes as `nodes.<node>.bindings.<binding>`."""
    output = state.outputs.setdefault(step.id, {"status": "complete", "entity": None})
    output.setdefault("bindings", {})[binding_id] = result


def fail_node(state: FabricState, step: PlanNode, message: str, code: str, field: str) -> NodeOutcome:
    """A node whose binding failed fails as a whole, so its descendants are skipped like any failure."""
    outcome = NodeOutcome(step.id, "error", message, code, field)
    state.outcomes[step.id] = outcome
    state.outputs.setdefault(step.id, {"entity": None})["status"] = "error"
    return outcome


def _stops(outcome: NodeOutcome | None) -> bool:
    return outcome is not None and outcome.stops_downstream


# --- operators -------------------------------------------------------------------------------------


def _begin(state: FabricState, plan: Plan, step: PlanNode) -> NodeOutcome:
    node = step.node
    assert isinstance(node, BeginNode)
    before = state.main.entities.get(node.entity)
    after = dict(node.properties)
    _change(state, plan, step, node.entity, before, after, f"{node.entity} begins with {_describe(after)}")
    return NodeOutcome(step.id, "complete")


def _become(state: FabricState, plan: Plan, step: PlanNode) -> NodeOutcome:
    node = step.node
    assert isinstance(node, BecomeNode)
    before = state.main.entities.get(node.entity)
    if before is None:
        return _absent(step, node.entity)
    if node.on_event is not None and state.event.get("name") != node.on_event:
        return NodeOutcome(step.id, "skipped", f"waits for event {node.on_event!r}")
    scope = _scope(node.entity, before, state)
    if step.trigger is not None and not _truth(step.trigger, scope, "trigger"):
        return NodeOutcome(step.id, "skipped", f"trigger is false: {step.trigger.source}")
    after = {**before, **_evaluate_map(step.transform, scope, "transform")}
    _change(state, plan, step, node.entity, before, after, f"{node.entity} becomes {_changes(before, after)}")
    return NodeOutcome(step.id, "complete")


def _cease(state: FabricState, plan: Plan, step: PlanNode) -> NodeOutcome:
    node = step.node
    assert isinstance(node, CeaseNode)
    assert step.condition is not None
    before = state.main.entities.get(node.entity)
    if before is None:
        return _absent(step, node.entity)
    scope = _scope(node.entity, before, state)
    if not _truth(step.condition, scope, "condition"):
        return NodeOutcome(step.id, "skipped", f"condition is false: {node.condition}")
    if node.action == "terminate":
        del state.main.entities[node.entity]
        _record(state, step, node.entity, MAIN, before, None, f"{node.entity} ceases ({node.condition})")
        return NodeOutcome(step.id, "complete")
    repaired = {**before, **_evaluate_map(step.repair, scope, "repair")}
    if node.action == "repair":
        state.main.entities[node.entity] = repaired
        _record(
            state,
            step,
            node.entity,
            MAIN,
            before,
            repaired,
            f"{node.entity} is repaired: {_changes(before, repaired)}",
        )
        still = _truth(step.condition, _scope(node.entity, repaired, state), "condition")
        if still:
            state.paradoxes.append(
                Paradox(
                    "cease",
                    node.entity,
                    step.id,
                    node.condition,
                    repaired,
                    MAIN,
                    False,
                    "the repair did not lift the condition",
                )
            )
        _enforce_laws(state, plan, step, node.entity)
        return NodeOutcome(step.id, "complete")
    # fork: the main reality stays as it is; two branches record what repairing and exploring lead to.
    repair_branch = _fork_branch(state, step, "repair", f"repaired: {node.condition}")
    explore_branch = _fork_branch(state, step, "explore", f"explored: {node.condition}")
    repair_branch.entities[node.entity] = repaired
    explore_branch.entities[node.entity] = before
    _record(state, step, node.entity, MAIN, before, before, f"reality forks at {step.id}: {node.condition}")
    _record(
        state,
        step,
        node.entity,
        repair_branch.universe,
        None,
        repaired,
        f"{node.entity} repaired in {repair_branch.universe}",
    )
    _record(
        state,
        step,
        node.entity,
        explore_branch.universe,
        None,
        before,
        f"{node.entity} explored in {explore_branch.universe}",
    )
    state.paradoxes.append(
        Paradox(
            "cease",
            node.entity,
            step.id,
            node.condition,
            before,
            MAIN,
            False,
            "forked into repaired and explored branches",
        )
    )
    return NodeOutcome(step.id, "complete")


def _transcend(state: FabricState, plan: Plan, step: PlanNode) -> NodeOutcome:
    node = step.node
    assert isinstance(node, TranscendNode)
    before = state.main.entities.get(node.entity)
    if before is None:
        return _absent(step, node.entity)
    scope = _scope(node.entity, before, state)
    if step.condition is not None and not _truth(step.condition, scope, "condition"):
        return NodeOutcome(step.id, "skipped", f"condition is false: {node.condition}")
    mapped = {**before, **_evaluate_map(step.mapping, scope, "mapping")}
    portal = state.branch(node.portal)
    if portal is None:
        reason = f"portal: {node.condition}" if node.condition else "portal: always open"
        portal = Reality(node.portal, reason, MAIN, step.id)
        state.branches.append(portal)
    previous = portal.entities.get(node.entity)
    del state.main.entities[node.entity]
    portal.entities[node.entity] = mapped
    _record(state, step, node.entity, MAIN, before, None, f"{node.entity} transcends to {node.portal}")
    _record(
        state, step, node.entity, node.portal, previous, mapped, f"{node.entity} arrives in {node.portal}"
    )
    return NodeOutcome(step.id, "complete")


def _resolve(state: FabricState, plan: Plan, step: PlanNode) -> NodeOutcome:
    node = step.node
    assert isinstance(node, ResolveNode)
    holders = [b for b in state.branches if node.entity in b.entities]
    if not holders:
        return NodeOutcome(step.id, "skipped", f"no branch holds {node.entity}")
    home = state.main.entities.get(node.entity)
    # Branch versions in the order the branches were made, then the main reality's, which went on last.
    versions = [b.entities[node.entity] for b in holders] + ([home] if home is not None else [])
    disputed = sorted({k for v in versions for k in v if any(k not in w or w[k] != v[k] for w in versions)})
    if node.strategy == "manual" and disputed:
        conflict = {b.universe: {k: b.entities[node.entity].get(k) for k in disputed} for b in holders}
        if home is not None:
            conflict[MAIN] = {k: home.get(k) for k in disputed}
        state.paradoxes.append(
            Paradox(
                "conflict",
                node.entity,
                step.id,
                f"{len(versions)} versions disagree on {', '.join(disputed)}",
                conflict,
                MAIN,
                False,
                "left for manual resolution",
            )
        )
        return NodeOutcome(step.id, "complete", f"conflict on {', '.join(disputed)} needs manual resolution")
    if node.strategy == "first-wins":
        resolved = dict(versions[0])
    elif node.strategy == "last-wins":
        resolved = dict(versions[-1])
    else:  # merge (and manual without disagreement): union; the most recent version wins a dispute
        resolved = {}
        for version in versions:
            resolved.update(version)
    for branch in holders:
        gone = branch.entities.pop(node.entity)
        _record(
            state, step, node.entity, branch.universe, gone, None, f"{node.entity} leaves {branch.universe}"
        )
    note = f" (disputed: {', '.join(disputed)})" if disputed else ""
    narrative = f"{node.entity} resolved by {node.strategy} from {len(versions)} versions{note}"
    _change(state, plan, step, node.entity, home, resolved, narrative)
    return NodeOutcome(step.id, "complete")


def _law(state: FabricState, plan: Plan, step: PlanNode) -> NodeOutcome:
    node = step.node
    assert isinstance(node, LawNode)
    governed = [e for e in state.main.entities if Law(step).governs(e)]
    if not governed:
        return NodeOutcome(step.id, "skipped", f"no entity matches {node.entity!r} yet")
    for entity in governed:
        _check_law(state, step, Law(step), entity)
    return NodeOutcome(step.id, "complete")


_OPERATORS: dict[str, Callable[[FabricState, Plan, PlanNode], NodeOutcome]] = {
    "begin": _begin,
    "become": _become,
    "cease": _cease,
    "transcend": _transcend,
    "resolve": _resolve,
    "law": _law,
}


# --- helpers ---------------------------------------------------------------------------------------


def _change(
    state: FabricState,
    plan: Plan,
    step: PlanNode,
    entity: str,
    before: Properties | None,
    after: Properties,
    narrative: str,
) -> None:
    """Set an entity in the main reality, trace it, and hold it to the laws that govern it."""
    state.main.entities[entity] = after
    _record(state, step, entity, MAIN, before, after, narrative)
    _enforce_laws(state, plan, step, entity)


def _enforce_laws(state: FabricState, plan: Plan, step: PlanNode, entity: str) -> None:
    for law in plan.laws_for(entity):
        if entity not in state.main.entities:
            return
        _check_law(state, step, law, entity)


def _check_law(state: FabricState, step: PlanNode, law: Law, entity: str) -> None:
    """Record a paradox per broken invariant; apply the law's repair once and re-check."""
    props = state.main.entities[entity]
    broken = _broken_invariants(law, entity, props, state)
    if not broken:
        return
    repaired_ok = False
    if law.node.repair is not None:
        scope = _scope(entity, props, state)
        after = {**props, **_evaluate_map(law.plan.repair, scope, f"law {law.name} repair")}
        state.main.entities[entity] = after
        _record(
            state,
            step,
            entity,
            MAIN,
            props,
            after,
            f"law {law.name} repairs {entity}: {_changes(props, after)}",
        )
        repaired_ok = not _broken_invariants(law, entity, after, state)
    for name, source in broken:
        state.paradoxes.append(
            Paradox(
                "law",
                entity,
                step.id,
                f"{law.name}.{name}: {source}",
                props,
                MAIN,
                repaired_ok,
                "repaired" if repaired_ok else "invariant violated",
            )
        )


def _broken_invariants(law: Law, entity: str, props: Properties, state: FabricState) -> list[tuple[str, str]]:
    scope = _scope(entity, props, state)
    return [
        (name, expr.source)
        for name, expr in law.plan.invariants
        if not _truth(expr, scope, f"invariant {name}")
    ]


def _fork_branch(state: FabricState, step: PlanNode, kind: str, reason: str) -> Reality:
    universe = f"{MAIN}:{kind}:{step.id}"
    existing = state.branch(universe)
    if existing is not None:
        return existing
    # A branch holds only the forked entity: the others did not fork, so copying them would duplicate them.
    branch = Reality(universe, reason, MAIN, step.id)
    state.branches.append(branch)
    return branch


def _scope(entity: str, props: Properties, state: FabricState) -> dict[str, Any]:
    """Variables an expression sees: properties by name, then the reserved names (they win)."""
    return {
        **props,
        "entity": {"id": entity, "properties": props},
        "event": state.event,
        "nodes": state.outputs,
        "run": state.run,
    }


def _truth(expr: Expression, scope: Mapping[str, Any], role: str) -> bool:
    value = _evaluate(expr, scope, role)
    if not isinstance(value, bool):
        raise NodeFailure(
            f"{role} {expr.source!r} must be true or false, but gave {_short(value)}",
            "not-boolean",
            role,
        )
    return value


def _evaluate_map(table: ExprTable, scope: Mapping[str, Any], role: str) -> Properties:
    return {name: _evaluate(expr, scope, f"{role}.{name}") for name, expr in table}


def _evaluate(expr: Expression, scope: Mapping[str, Any], role: str) -> Any:
    try:
        return expr.evaluate(scope)
    except EvalError as exc:
        raise NodeFailure(f"{role}: {exc}", exc.code, role) from None


def _record(
    state: FabricState,
    step: PlanNode,
    entity: str,
    reality: str,
    before: Properties | None,
    after: Properties | None,
    default_narrative: str,
) -> None:
    narrative = default_narrative
    if step.narrative is not None and reality == MAIN:
        shown = after if after is not None else before
        try:
            narrative = step.narrative.render(_scope(entity, shown or {}, state))
        except EvalError as exc:
            # The narrative is presentation; its failure is shown, not hidden, and does not fail the node.
            narrative = f"{default_narrative} [narrative could not render: {exc}]"
    state.trace.append(
        TraceStep(len(state.trace) + 1, step.id, step.node.type, entity, reality, before, after, narrative)
    )


def _absent(step: PlanNode, entity: str) -> NodeOutcome:
    return NodeOutcome(step.id, "skipped", f"{entity} is not in the main reality")


def _describe(props: Properties) -> str:
    if not props:
        return "no properties"
    return ", ".join(f"{k}={_short(v)}" for k, v in props.items())


def _changes(before: Properties, after: Properties) -> str:
    changed = [
        f"{k}: {_short(before.get(k))} → {_short(v)}"
        for k, v in after.items()
        if before.get(k, _MISSING) != v
    ]
    return "; ".join(changed) if changed else "(no change)"


_MISSING = object()


def _short(value: Any) -> str:
    """Compact JSON for narratives; scalars skip the general encoder because this runs on every step."""
    if value is None:
        return "null"
    if value is True or value is False:
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    text = (
        encode_basestring(value)
        if isinstance(value, str)
        else json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    )
    return text if len(text) <= 60 else text[:57] + "..."
