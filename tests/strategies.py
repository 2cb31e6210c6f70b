"""Hypothesis strategies for random but valid universes."""

from typing import Any

from hypothesis import strategies as st

ENTITIES = ("acct:a", "acct:b", "acct:c")
PORTALS = ("universe:vip", "universe:far")


@st.composite
def universes(draw: st.DrawFn, max_ops: int = 12) -> dict[str, Any]:
    entities = draw(st.lists(st.sampled_from(ENTITIES), min_size=1, max_size=3, unique=True))
    nodes: list[dict[str, Any]] = []
    edges: list[tuple[str, str]] = []
    for i, entity in enumerate(entities):
        start = draw(st.integers(-20, 20))
        nodes.append(
            {"id": f"begin{i}", "type": "begin", "entity": entity, "properties": {"n": start, "tag": "t"}}
        )
    begin_of = {e: f"begin{i}" for i, e in enumerate(entities)}
    k = st.integers(-5, 5).map(str)
    for j in range(draw(st.integers(0, max_ops))):
        entity = draw(st.sampled_from(entities))
        node_id = f"op{j}"
        kind = draw(st.sampled_from(["become", "become", "cease", "transcend", "resolve", "law"]))
        node: dict[str, Any] = {"id": node_id, "type": kind, "entity": entity}
        if kind == "become":
            op = draw(st.sampled_from(["+", "-", "*"]))
            node["transform"] = {"n": f"n {op} {draw(k)}"}
            if draw(st.booleans()):
                node["trigger"] = f"n > {draw(k)}"
        elif kind == "cease":
            node["condition"] = f"n {draw(st.sampled_from(['<', '>', '==']))} {draw(k)}"
            node["action"] = draw(st.sampled_from(["terminate", "repair", "fork"]))
            if node["action"] != "terminate":
                node["repair"] = {"n": draw(k)}
        elif kind == "transcend":
            node["portal"] = draw(st.sampled_from(PORTALS))
            if draw(st.booleans()):
                node["condition"] = f"n >= {draw(k)}"
            node["mapping"] = {"n": "n + 1"}
        elif kind == "resolve":
            node["strategy"] = draw(st.sampled_from(["merge", "first-wins", "last-wins", "manual"]))
        else:
            node["entity"] = draw(st.sampled_from([entity, "acct:*"]))
            node["invariants"] = {"bounded": f"n < {draw(st.integers(0, 30))}"}
            if draw(st.booleans()):
                node["repair"] = {"n": "0"}
        nodes.append(node)
        if kind != "law":
            edges.append((begin_of[entity], node_id))
        earlier = [n["id"] for n in nodes[:-1]]
        for source in draw(st.lists(st.sampled_from(earlier), max_size=2, unique=True)):
            edges.append((source, node_id))
    return {
        "cosmogen": "universe/1",
        "name": "generated",
        "nodes": nodes,
        "edges": [{"source": s, "target": t} for s, t in dict.fromkeys(edges)],
    }
