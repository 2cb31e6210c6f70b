"""The universe diff: ids match list items, edges are pairs, paths are JSON Pointers."""

from __future__ import annotations

from cosmogen.domain.json_diff import diff


def test_nodes_match_by_id_not_position() -> None:
    a = {"nodes": [{"id": "x", "v": 1}, {"id": "y", "v": 2}]}
    b = {"nodes": [{"id": "new", "v": 0}, {"id": "x", "v": 1}, {"id": "y", "v": 3}]}
    assert diff(a, b) == [
        {"op": "add", "path": "/nodes/new", "to": {"id": "new", "v": 0}},
        {"op": "change", "path": "/nodes/y/v", "from": 2, "to": 3},
    ]


def test_edges_are_pairs_and_keys_are_escaped() -> None:
    a = {"edges": [{"source": "a", "target": "b"}], "a/b": 1}
    b = {"edges": [{"source": "b", "target": "a"}, {"source": "a", "target": "b"}]}
    assert diff(a, b) == [
        {"op": "remove", "path": "/a~1b", "from": 1},
        {"op": "add", "path": "/edges/b->a"},
    ]


def test_equal_documents_have_no_changes_and_types_count() -> None:
    doc = {"name": "n", "nodes": [{"id": "x", "p": [1, 2]}], "edges": []}
    assert diff(doc, doc) == []
    assert diff({"v": 1}, {"v": 1.5}) == [{"op": "change", "path": "/v", "from": 1, "to": 1.5}]
    assert diff({"v": True}, {"v": 1}) == [{"op": "change", "path": "/v", "from": True, "to": 1}]
    # Lists without ids compare as values.
    assert diff({"l": [1, 2]}, {"l": [2, 1]}) == [
        {"op": "change", "path": "/l", "from": [1, 2], "to": [2, 1]}
    ]
