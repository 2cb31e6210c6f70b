"""Graph structure of a universe: edges, execution order, cycles. Pure functions over ids."""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Graph:
    """Adjacency over node ids, in document order. Edges to unknown ids are kept out (see `dangling`)."""

    order: tuple[str, ...]
    successors: dict[str, tuple[str, ...]]
    predecessors: dict[str, tuple[str, ...]]
    dangling: tuple[tuple[str, str], ...]

    @classmethod
    def build(cls, node_ids: Sequence[str], edges: Sequence[tuple[str, str]]) -> Graph:
        known = set(node_ids)
        succ: dict[str, list[str]] = {n: [] for n in node_ids}
        pred: dict[str, list[str]] = {n: [] for n in node_ids}
        dangling: list[tuple[str, str]] = []
        for source, target in edges:
            if source not in known or target not in known:
                dangling.append((source, target))
                continue
            if target not in succ[source]:
                succ[source].append(target)
                pred[target].append(source)
        return cls(
            order=tuple(dict.fromkeys(node_ids)),
            successors={k: tuple(v) for k, v in succ.items()},
            predecessors={k: tuple(v) for k, v in pred.items()},
            dangling=tuple(dangling),
        )

    def topological_order(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """Kahn's algorithm; ties broken by document order, so the order is stable.

        Returns (ordered ids, ids left over because they sit on or behind a cycle).
        """
        rank = {node: i for i, node in enumerate(self.order)}
        indegree = {node: len(self.predecessors[node]) for node in self.order}
        ready = [(rank[n], n) for n in self.order if indegree[n] == 0]
        heapq.heapify(ready)
        result: list[str] = []
        while ready:
            _, node = heapq.heappop(ready)
            result.append(node)
            for nxt in self.successors[node]:
                indegree[nxt] -= 1
                if indegree[nxt] == 0:
                    heapq.heappush(ready, (rank[nxt], nxt))
        placed = set(result)
        return tuple(result), tuple(n for n in self.order if n not in placed)

    def cycles(self) -> list[list[str]]:
        """One cycle path per strongly connected component that loops (iterative Tarjan)."""
        index: dict[str, int] = {}
        low: dict[str, int] = {}
        on_stack: set[str] = set()
        stack: list[str] = []
        components: list[list[str]] = []
        counter = 0
        for root in self.order:
            if root in index:
                continue
            work: list[tuple[str, int]] = [(root, 0)]
            while work:
                node, child_i = work.pop()
                if child_i == 0:
                    index[node] = low[node] = counter
                    counter += 1
                    stack.append(node)
                    on_stack.add(node)
                children = self.successors[node]
                if child_i < len(children):
                    work.append((node, child_i + 1))
                    child = children[child_i]
                    if child not in index:
                        work.append((child, 0))
                    elif child in on_stack:
                        low[node] = min(low[node], index[child])
                    continue
                for child in children:
                    if child in on_stack:
                        low[node] = min(low[node], low[child])
                if low[node] == index[node]:
                    component: list[str] = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1 or node in self.successors[node]:
                        components.append(component)
        return [self._cycle_path(set(c)) for c in components]

    def _cycle_path(self, members: set[str]) -> list[str]:
        """A concrete loop inside one component, starting at its first node in document order."""
        start = next(n for n in self.order if n in members)
        path = [start]
        seen = {start}
        node = start
        while True:
            nxt = next(s for s in self.successors[node] if s in members)
            if nxt in seen:
                return [*path[path.index(nxt) :], nxt]
            path.append(nxt)
            seen.add(nxt)
            node = nxt

    def ancestors(self, node: str) -> set[str]:
        return self._closure(node, self.predecessors)

    def descendants(self, node: str) -> set[str]:
        """Every node reachable from `node` along edges (not `node` itself, unless it sits on a cycle)."""
        return self._closure(node, self.successors)

    @staticmethod
    def _closure(node: str, neighbours: dict[str, tuple[str, ...]]) -> set[str]:
        seen: set[str] = set()
        todo = list(neighbours.get(node, ()))
        while todo:
            current = todo.pop()
            if current not in seen:
                seen.add(current)
                todo.extend(neighbours[current])
        return seen
