"""A validated universe compiled for execution: order fixed, every expression compiled once."""

from __future__ import annotations

from dataclasses import dataclass, field
from fnmatch import fnmatchcase

from cosmogen.domain.bindings import CompiledBinding
from cosmogen.domain.graph import Graph
from cosmogen.domain.model import LawNode, Node, Universe
from cosmogen.expr import Expression, Template

ExprTable = tuple[tuple[str, Expression], ...]


@dataclass(frozen=True, slots=True)
class PlanNode:
    node: Node
    predecessors: tuple[str, ...]
    # Compiled expressions by role; maps keep their document order.
    transform: ExprTable = ()
    repair: ExprTable = ()
    mapping: ExprTable = ()
    invariants: ExprTable = ()
    trigger: Expression | None = None
    condition: Expression | None = None
    narrative: Template | None = None
    bindings: tuple[CompiledBinding, ...] = ()

    @property
    def id(self) -> str:
        return self.node.id


@dataclass(frozen=True, slots=True)
class Law:
    """A LAW node's invariants, in force for the whole run on every entity its pattern matches."""

    plan: PlanNode

    @property
    def node(self) -> LawNode:
        assert isinstance(self.plan.node, LawNode)
        return self.plan.node

    @property
    def name(self) -> str:
        return self.node.name or self.node.id

    def governs(self, entity: str) -> bool:
        return fnmatchcase(entity, self.node.entity)


@dataclass(frozen=True, slots=True)
class Plan:
    universe: Universe
    steps: tuple[PlanNode, ...]
    laws: tuple[Law, ...] = field(default=())
    # Laws per entity, filled as entities are seen: glob matching on every step would dominate small nodes.
    _law_index: dict[str, tuple[Law, ...]] = field(default_factory=dict, compare=False, repr=False)

    def laws_for(self, entity: str) -> tuple[Law, ...]:
        found = self._law_index.get(entity)
        if found is None:
            found = self._law_index[entity] = tuple(law for law in self.laws if law.governs(entity))
        return found


class UnknownEntryNode(ValueError):
    """An entry node that is not a node of the plan."""


@dataclass(frozen=True, slots=True)
class EntryScope:
    """What a run that starts at `entry` executes (a launch's `entry_node`); other nodes are skipped."""

    entry: str
    nodes: frozenset[str]

    @classmethod
    def of(cls, plan: Plan, entry: str) -> EntryScope:
        """The entry node, every node downstream of it, and every LAW node: laws are rules in force for the
        whole run (usually without edges), not steps of the flow, so an entry node does not switch them off.
        """
        ids = [step.id for step in plan.steps]
        if entry not in ids:
            raise UnknownEntryNode(
                f"entry node {entry!r} is not a node of this version (its nodes: {', '.join(sorted(ids))}); "
                "set the launch's 'entry_node' to one of them, or to null to run all nodes"
            )
        graph = Graph.build(ids, [(before, step.id) for step in plan.steps for before in step.predecessors])
        laws = {law.plan.id for law in plan.laws}
        return cls(entry, frozenset({entry, *graph.descendants(entry), *laws}))

    def skip_reason(self, node: str) -> str | None:
        """Why `node` does not run, or None when it does."""
        return None if node in self.nodes else f"not reachable from entry node {self.entry!r}"
