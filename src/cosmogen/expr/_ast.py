"""Syntax tree. Every node records the offset of its operator/name (for error positions),
its height (bounded by the parser so later recursive passes stay shallow) and its
comprehension nesting."""

from __future__ import annotations

from typing import Any

__all__ = [
    "Binary",
    "Call",
    "Comprehension",
    "Has",
    "Ident",
    "Index",
    "ListLit",
    "Literal",
    "MapLit",
    "Member",
    "Node",
    "Ternary",
    "Unary",
    "count_nodes",
]


class Node:
    __slots__ = ("height", "nest", "offset")
    height: int
    nest: int
    offset: int

    def __init__(self, offset: int, children: tuple[Node, ...] = (), nest_self: int = 0):
        self.offset = offset
        height = nest = 0
        for child in children:
            if child.height > height:
                height = child.height
            if child.nest > nest:
                nest = child.nest
        self.height = height + 1
        self.nest = nest + nest_self

    def children(self) -> tuple[Node, ...]:
        return ()


class Literal(Node):
    __slots__ = ("value",)

    def __init__(self, offset: int, value: Any):
        super().__init__(offset)
        self.value = value


class Ident(Node):
    __slots__ = ("name",)

    def __init__(self, offset: int, name: str):
        super().__init__(offset)
        self.name = name


class ListLit(Node):
    __slots__ = ("items",)

    def __init__(self, offset: int, items: tuple[Node, ...]):
        super().__init__(offset, items)
        self.items = items

    def children(self) -> tuple[Node, ...]:
        return self.items


class MapLit(Node):
    __slots__ = ("entries",)

    def __init__(self, offset: int, entries: tuple[tuple[Node, Node], ...]):
        super().__init__(offset, tuple(n for pair in entries for n in pair))
        self.entries = entries

    def children(self) -> tuple[Node, ...]:
        return tuple(n for pair in self.entries for n in pair)


class Member(Node):
    __slots__ = ("name", "target")

    def __init__(self, offset: int, target: Node, name: str):
        super().__init__(offset, (target,))
        self.target = target
        self.name = name

    def children(self) -> tuple[Node, ...]:
        return (self.target,)


class Index(Node):
    __slots__ = ("index", "target")

    def __init__(self, offset: int, target: Node, index: Node):
        super().__init__(offset, (target, index))
        self.target = target
        self.index = index

    def children(self) -> tuple[Node, ...]:
        return (self.target, self.index)


class Call(Node):
    """`name(args)`, `target.name(args)`; `namespace` is set for `math.greatest(...)` style calls."""

    __slots__ = ("args", "name", "namespace", "target")

    def __init__(
        self, offset: int, name: str, args: tuple[Node, ...], target: Node | None, namespace: str | None
    ):
        super().__init__(offset, args if target is None else (target, *args))
        self.name = name
        self.args = args
        self.target = target
        self.namespace = namespace

    def children(self) -> tuple[Node, ...]:
        return self.args if self.target is None else (self.target, *self.args)


class Unary(Node):
    __slots__ = ("op", "operand")

    def __init__(self, offset: int, op: str, operand: Node):
        super().__init__(offset, (operand,))
        self.op = op
        self.operand = operand

    def children(self) -> tuple[Node, ...]:
        return (self.operand,)


class Binary(Node):
    __slots__ = ("left", "op", "right")

    def __init__(self, offset: int, op: str, left: Node, right: Node):
        super().__init__(offset, (left, right))
        self.op = op
        self.left = left
        self.right = right

    def children(self) -> tuple[Node, ...]:
        return (self.left, self.right)


class Ternary(Node):
    __slots__ = ("cond", "other", "then")

    def __init__(self, offset: int, cond: Node, then: Node, other: Node):
        super().__init__(offset, (cond, then, other))
        self.cond = cond
        self.then = then
        self.other = other

    def children(self) -> tuple[Node, ...]:
        return (self.cond, self.then, self.other)


class Has(Node):
    """`has(target.field)`: true when the map `target` has the key `field`."""

    __slots__ = ("field", "target")

    def __init__(self, offset: int, target: Node, field: str):
        super().__init__(offset, (target,))
        self.target = target
        self.field = field

    def children(self) -> tuple[Node, ...]:
        return (self.target,)


class Comprehension(Node):
    """`range.kind(var, ...)`: kind is all, exists, exists_one, map or filter.

    `pred` is the predicate (all/exists/exists_one/filter and the 3-argument map), `transform`
    the mapped expression (map only)."""

    __slots__ = ("kind", "pred", "range", "transform", "var", "var_offset")

    def __init__(
        self,
        offset: int,
        kind: str,
        range_: Node,
        var: str,
        var_offset: int,
        pred: Node | None,
        transform: Node | None,
    ):
        kids = tuple(n for n in (range_, pred, transform) if n is not None)
        super().__init__(offset, kids, nest_self=1)
        # The range is evaluated outside the loop, so it does not add to this macro's nesting.
        inner = max((n.nest for n in (pred, transform) if n is not None), default=0)
        self.nest = max(range_.nest, 1 + inner)
        self.kind = kind
        self.range = range_
        self.var = var
        self.var_offset = var_offset
        self.pred = pred
        self.transform = transform

    def children(self) -> tuple[Node, ...]:
        return tuple(n for n in (self.range, self.pred, self.transform) if n is not None)


def count_nodes(node: Node | None) -> int:
    """Number of nodes in a subtree: the cost of one evaluation of it, in closure calls."""
    count = 0
    stack = [node] if node is not None else []
    while stack:
        current = stack.pop()
        count += 1
        stack.extend(current.children())
    return count
