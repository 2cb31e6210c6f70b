import itertools

from cosmogen.domain.graph import Graph


def test_order_is_topological_with_document_order_tie_break() -> None:
    graph = Graph.build(["c", "a", "b", "d"], [("a", "d"), ("c", "d"), ("b", "a")])
    order, leftover = graph.topological_order()
    assert order == ("c", "b", "a", "d")
    assert leftover == ()


def test_cycle_is_reported_as_a_path_and_its_nodes_are_left_over() -> None:
    graph = Graph.build(["x", "a", "b", "c"], [("x", "a"), ("a", "b"), ("b", "c"), ("c", "a")])
    assert graph.cycles() == [["a", "b", "c", "a"]]
    order, leftover = graph.topological_order()
    assert order == ("x",)
    assert leftover == ("a", "b", "c")


def test_self_loop_is_a_cycle() -> None:
    graph = Graph.build(["a"], [("a", "a")])
    assert graph.cycles() == [["a", "a"]]


def test_two_separate_cycles_are_both_found() -> None:
    graph = Graph.build(["a", "b", "c", "d"], [("a", "b"), ("b", "a"), ("c", "d"), ("d", "c")])
    assert sorted(graph.cycles()) == [["a", "b", "a"], ["c", "d", "c"]]


def test_dangling_edges_are_kept_out_of_the_graph() -> None:
    graph = Graph.build(["a"], [("a", "ghost"), ("ghost2", "a")])
    assert graph.dangling == (("a", "ghost"), ("ghost2", "a"))
    assert graph.successors["a"] == ()


def test_deep_chain_needs_no_recursion() -> None:
    ids = [f"n{i}" for i in range(20_000)]
    graph = Graph.build(ids, list(itertools.pairwise(ids)))
    assert graph.cycles() == []
    assert graph.topological_order()[0] == tuple(ids)
    assert len(graph.ancestors("n19999")) == 19_999


def test_long_cycle_is_found_iteratively() -> None:
    ids = [f"n{i}" for i in range(5_000)]
    edges = [*itertools.pairwise(ids), (ids[-1], ids[0])]
    cycles = Graph.build(ids, edges).cycles()
    assert len(cycles) == 1
    assert cycles[0][0] == cycles[0][-1] == "n0"
    assert len(cycles[0]) == 5_001


def test_descendants_follow_edges_downstream_only() -> None:
    graph = Graph.build(["a", "b", "c", "d", "e"], [("a", "b"), ("b", "c"), ("d", "c"), ("c", "e")])
    assert graph.descendants("b") == {"c", "e"}
    assert graph.descendants("a") == {"b", "c", "e"}
    assert graph.descendants("e") == set()
    assert graph.ancestors("c") == {"a", "b", "d"}
