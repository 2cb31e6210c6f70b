"""Validation: every problem of a universe as a diagnostic with a stable code, node id, message and hint.

A universe with no error diagnostics also yields its `Plan`, so expressions are compiled exactly once.

Codes (stable): duplicate-id, dangling-edge, cycle, duplicate-begin, no-begin,
reserved-property (entity, event, nodes, run),
expr-<compile code> (expr-syntax, expr-too-long, expr-too-deep, ...), expr-type, not-boolean,
unknown-property (warning), repair-missing, repair-unused (warning), fork-without-repair (warning),
law-no-entity (warning), empty (warning). Schema problems (unknown-node-type, unknown-field,
missing-field, bad-field) come from `document.py` before validation can start.
"""

from __future__ import annotations

import difflib
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase

from cosmogen.domain.bindings import CompiledBinding, compile_binding
from cosmogen.domain.capabilities import UnknownCapability, default_registry
from cosmogen.domain.diagnostics import Diagnostic, has_errors
from cosmogen.domain.fabric import RESERVED_NAMES
from cosmogen.domain.graph import Graph
from cosmogen.domain.model import BeginNode, Binding, CeaseNode, LawNode, Node, Universe
from cosmogen.domain.plan import ExprTable, Law, Plan, PlanNode
from cosmogen.expr import (
    CelType,
    CompileError,
    Expression,
    Template,
    TypeIssue,
    compile_expression,
    compile_template,
    type_of_value,
)

_BOOLEAN_ROLES = ("trigger", "condition", "invariants")
_RESERVED_TYPES = dict.fromkeys(sorted(RESERVED_NAMES), CelType.MAP)


@dataclass(frozen=True, slots=True)
class Report:
    diagnostics: list[Diagnostic]
    plan: Plan | None
    order: tuple[str, ...] = field(default=())

    @property
    def valid(self) -> bool:
        return not has_errors(self.diagnostics)

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == "error"]

    @property
    def warnings(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == "warning"]


def validate(universe: Universe) -> Report:
    out: list[Diagnostic] = []
    if not universe.nodes:
        out.append(Diagnostic("empty", "warning", "the universe has no nodes", hint="add a BEGIN node"))
    ids = [n.id for n in universe.nodes]
    for node_id, count in Counter(ids).items():
        if count > 1:
            out.append(
                Diagnostic(
                    "duplicate-id",
                    "error",
                    f"{count} nodes share the id {node_id!r}",
                    node=node_id,
                    hint="give every node its own id",
                )
            )
    graph = Graph.build(ids, [(e.source, e.target) for e in universe.edges])
    for source, target in graph.dangling:
        missing = source if source not in graph.successors else target
        out.append(
            Diagnostic(
                "dangling-edge",
                "error",
                f"edge {source} -> {target} points to node {missing!r}, which does not exist",
                node=missing,
                field="edges",
                hint="remove the edge or add the missing node",
            )
        )
    for path in graph.cycles():
        out.append(
            Diagnostic(
                "cycle",
                "error",
                f"the nodes form a cycle: {' -> '.join(path)}",
                node=path[0],
                field="edges",
                hint=f"remove one edge of the cycle, e.g. {path[-2]} -> {path[-1]}",
            )
        )
    out.extend(_check_entities(universe, graph))
    compiled, expr_diagnostics = _compile_all(universe)
    out.extend(expr_diagnostics)
    out.extend(_check_types(universe, compiled))
    out.extend(_check_bindings(universe, compiled))
    order, _leftover = graph.topological_order()
    if has_errors(out):
        return Report(out, None, order)
    return Report(out, _plan(universe, graph, order, compiled), order)


# --- entities ---------------------------------------------------------------------------------------


def _check_entities(universe: Universe, graph: Graph) -> Iterable[Diagnostic]:
    begins: dict[str, list[BeginNode]] = {}
    for node in universe.nodes:
        if isinstance(node, BeginNode):
            begins.setdefault(node.entity, []).append(node)
            for name in RESERVED_NAMES & node.properties.keys():
                yield _reserved(node, f"properties.{name}", name)
        for role in ("transform", "repair", "mapping"):
            for name in RESERVED_NAMES & set(getattr(node, role, None) or ()):
                yield _reserved(node, f"{role}.{name}", name)
    for entity, nodes in begins.items():
        for extra in nodes[1:]:
            yield Diagnostic(
                "duplicate-begin",
                "error",
                f"{entity} already begins at node {nodes[0].id!r}",
                node=extra.id,
                hint="use a BECOME node to change an existing entity",
            )
    for node in universe.nodes:
        if isinstance(node, BeginNode):
            continue
        if isinstance(node, LawNode):
            if not any(fnmatchcase(entity, node.entity) for entity in begins):
                yield Diagnostic(
                    "law-no-entity",
                    "warning",
                    f"no BEGIN creates an entity matching {node.entity!r}, so this law never applies",
                    node=node.id,
                    field="entity",
                )
            continue
        if node.id not in graph.successors:
            continue
        upstream = graph.ancestors(node.id)
        if not any(b.id in upstream for b in begins.get(node.entity, [])):
            elsewhere = begins.get(node.entity)
            hint = (
                f"add an edge from {elsewhere[0].id!r} (which begins {node.entity}) to a node before this one"
                if elsewhere
                else f"add a BEGIN node for {node.entity} upstream of this node"
            )
            yield Diagnostic(
                "no-begin",
                "error",
                f"{node.type.upper()} on {node.entity}, but no BEGIN of {node.entity} comes before it",
                node=node.id,
                field="entity",
                hint=hint,
            )
        if isinstance(node, CeaseNode):
            if node.action == "repair" and not node.repair:
                yield Diagnostic(
                    "repair-missing",
                    "error",
                    "CEASE with action 'repair' needs a repair map",
                    node=node.id,
                    field="repair",
                    hint='add e.g. "repair": {"balance": "0"}',
                )
            elif node.action == "fork" and not node.repair:
                yield Diagnostic(
                    "fork-without-repair",
                    "warning",
                    "the repaired branch of this fork will equal the explored one: there is no repair map",
                    node=node.id,
                    field="repair",
                )
            elif node.action == "terminate" and node.repair:
                yield Diagnostic(
                    "repair-unused",
                    "warning",
                    "the repair map is unused because the action is 'terminate'",
                    node=node.id,
                    field="repair",
                    hint="set action to 'repair' or 'fork', or remove the map",
                )


def _reserved(node: Node, where: str, name: str) -> Diagnostic:
    return Diagnostic(
        "reserved-property",
        "error",
        f"{name!r} is a reserved name in expressions and cannot be a property",
        node=node.id,
        field=where,
        hint=f"rename the property, e.g. {name}_name",
    )


# --- expressions ------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Compiled:
    """Compiled expressions per node id and role ("transform.balance", "trigger", ...)."""

    exprs: dict[str, dict[str, Expression]] = field(default_factory=dict)
    narratives: dict[str, Template] = field(default_factory=dict)
    bindings: dict[str, list[CompiledBinding]] = field(default_factory=dict)
    types: dict[str, dict[str, CelType]] = field(default_factory=dict)


def _expression_sources(node: Node) -> Iterable[tuple[str, str]]:
    for role in ("transform", "repair", "mapping", "invariants"):
        for name, source in (getattr(node, role, None) or {}).items():
            yield f"{role}.{name}", source
    for role in ("trigger", "condition"):
        source = getattr(node, role, None)
        if source is not None:
            yield role, source


def _compile_all(universe: Universe) -> tuple[_Compiled, list[Diagnostic]]:
    compiled = _Compiled()
    out: list[Diagnostic] = []
    for node in universe.nodes:
        table = compiled.exprs.setdefault(node.id, {})
        for where, source in _expression_sources(node):
            try:
                table[where] = compile_expression(source)
            except CompileError as exc:
                out.append(_compile_diagnostic(node, where, exc))
        if node.narrative:
            try:
                compiled.narratives[node.id] = compile_template(node.narrative)
            except CompileError as exc:
                out.append(_compile_diagnostic(node, "narrative", exc))
    return compiled, out


def _compile_diagnostic(node: Node, where: str, exc: CompileError) -> Diagnostic:
    return Diagnostic(
        f"expr-{exc.code.replace('_', '-')}",
        "error",
        exc.message,
        node=node.id,
        field=where,
        hint=exc.hint,
        line=exc.position.line if exc.position else None,
        column=exc.position.column if exc.position else None,
    )


def _check_types(universe: Universe, compiled: _Compiled) -> Iterable[Diagnostic]:
    types = compiled.types = _property_types(universe, compiled)
    for node in universe.nodes:
        scope: Mapping[str, CelType] = _scope_types(node, types)
        for where, expr in compiled.exprs.get(node.id, {}).items():
            result, issues = expr.check(scope)
            for issue in issues:
                yield _issue_diagnostic(node, where, issue)
            if where.split(".")[0] in _BOOLEAN_ROLES and result not in (CelType.BOOL, CelType.DYN):
                yield Diagnostic(
                    "not-boolean",
                    "error",
                    f"{where} must be true or false, but {expr.source!r} gives {result.name.lower()}",
                    node=node.id,
                    field=where,
                    hint="compare it, e.g. balance > 0",
                )
        template = compiled.narratives.get(node.id)
        if template is not None:
            for issue in template.check(scope):
                yield _issue_diagnostic(node, "narrative", issue)


def _issue_diagnostic(node: Node, where: str, issue: TypeIssue) -> Diagnostic:
    return Diagnostic(
        "unknown-property" if issue.code == "unknown_variable" else "expr-type",
        issue.severity,
        issue.message,
        node=node.id,
        field=where,
        hint=issue.hint,
        line=issue.position.line if issue.position else None,
        column=issue.position.column if issue.position else None,
    )


def _property_types(universe: Universe, compiled: _Compiled) -> dict[str, dict[str, CelType]]:
    """Static type of each entity property: from BEGIN values, widened to DYN where writes disagree."""
    types: dict[str, dict[str, CelType]] = {}
    for node in universe.nodes:
        if isinstance(node, BeginNode):
            table = types.setdefault(node.entity, {})
            for name, value in node.properties.items():
                table[name] = type_of_value(value)
    for node in universe.nodes:
        if isinstance(node, LawNode | BeginNode):
            continue
        table = types.setdefault(node.entity, {})
        scope = {**table, **_RESERVED_TYPES}
        for where, expr in compiled.exprs.get(node.id, {}).items():
            role, _, name = where.partition(".")
            if role not in ("transform", "repair", "mapping"):
                continue
            written, issues = expr.check(scope)
            if any(issue.severity == "error" for issue in issues):
                continue  # reported where the node is checked; its DYN result would hide that error
            known = table.get(name)
            table[name] = written if known is None or known == written else _widen(known, written)
    return types


def _widen(a: CelType, b: CelType) -> CelType:
    numbers = {CelType.INT, CelType.DOUBLE}
    return CelType.DOUBLE if {a, b} <= numbers else CelType.DYN


def _scope_types(node: Node, types: dict[str, dict[str, CelType]]) -> dict[str, CelType]:
    if isinstance(node, LawNode):
        merged: dict[str, CelType] = {}
        for entity, table in types.items():
            if fnmatchcase(entity, node.entity):
                for name, kind in table.items():
                    merged[name] = kind if merged.get(name, kind) == kind else CelType.DYN
        props = merged
    else:
        props = types.get(node.entity, {})
    return {**props, **_RESERVED_TYPES}


# --- bindings ---------------------------------------------------------------------------------------


def _check_bindings(universe: Universe, compiled: _Compiled) -> Iterable[Diagnostic]:
    nodes = {n.id: n for n in universe.nodes}
    seen: set[str] = set()
    for index, binding in enumerate(universe.bindings):
        where = f"bindings[{index}]"
        if binding.id in seen:
            yield Diagnostic(
                "duplicate-binding-id",
                "error",
                f"two bindings share the id {binding.id!r}",
                node=binding.node,
                field=where,
                hint="give every binding its own id",
            )
        seen.add(binding.id)
        node = nodes.get(binding.node)
        if node is None:
            yield Diagnostic(
                "binding-unknown-node",
                "error",
                f"binding {binding.id!r} is attached to node {binding.node!r}, which does not exist",
                field=where,
                hint="attach it to an existing node, or remove it with the node it belonged to",
            )
            continue
        if binding.kind == "provider":
            yield from _check_capability(binding, where)
        result, errors = compile_binding(binding)
        for field_name, exc in errors:
            yield _compile_diagnostic(node, f"{where}.{field_name}", exc)
        if result is None:
            continue
        compiled.bindings.setdefault(binding.node, []).append(result)
        scope = _scope_types(node, compiled.types)
        for field_name, template in result.templates():
            for issue in template.check(scope):
                yield _issue_diagnostic(node, f"{where}.{field_name}", issue)


def _check_capability(binding: Binding, where: str) -> Iterable[Diagnostic]:
    """What can be known before a run: the capability exists, no unknown setting, no missing one.
    Values are checked after rendering, at run time, since most are templates."""
    registry = default_registry()
    try:
        capability = registry.capability(binding.capability or "")
    except UnknownCapability as exc:
        yield Diagnostic(
            "binding-unknown-capability",
            "error",
            str(exc),
            node=binding.node,
            field=f"{where}.capability",
            hint="pick one of the executable capabilities (`cosmogen providers` lists them)",
        )
        return
    fields = capability.settings.model_fields
    for name in sorted(set(binding.settings) - set(fields)):
        close = difflib.get_close_matches(name, list(fields), n=1)
        yield Diagnostic(
            "binding-unknown-setting",
            "error",
            f"{capability.id} has no setting {name!r}",
            node=binding.node,
            field=f"{where}.settings.{name}",
            hint=f"did you mean {close[0]!r}?" if close else f"its settings: {', '.join(fields)}",
        )
    for name in sorted(n for n, f in fields.items() if f.is_required() and n not in binding.settings):
        yield Diagnostic(
            "binding-missing-setting",
            "error",
            f"{capability.id} needs the setting {name!r}",
            node=binding.node,
            field=f"{where}.settings",
            hint=fields[name].description or f"add {name!r} to the binding's settings",
        )


# --- plan -------------------------------------------------------------------------------------------


def _plan(universe: Universe, graph: Graph, order: tuple[str, ...], compiled: _Compiled) -> Plan:
    by_id = {n.id: n for n in universe.nodes}
    steps: list[PlanNode] = []
    for node_id in order:
        node = by_id[node_id]
        exprs = compiled.exprs.get(node_id, {})

        def table(role: str, exprs: dict[str, Expression] = exprs) -> ExprTable:
            prefix = role + "."
            return tuple((k[len(prefix) :], v) for k, v in exprs.items() if k.startswith(prefix))

        steps.append(
            PlanNode(
                node=node,
                predecessors=graph.predecessors[node_id],
                transform=table("transform"),
                repair=table("repair"),
                mapping=table("mapping"),
                invariants=table("invariants"),
                trigger=exprs.get("trigger"),
                condition=exprs.get("condition"),
                narrative=compiled.narratives.get(node_id),
                bindings=tuple(compiled.bindings.get(node_id, ())),
            )
        )
    laws = tuple(Law(step) for step in steps if isinstance(step.node, LawNode))
    return Plan(universe=universe, steps=tuple(steps), laws=laws)


__all__ = ["Report", "validate"]
