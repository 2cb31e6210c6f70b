import json

import pytest

from cosmogen.domain.diagnostics import DocumentError
from cosmogen.domain.document import dump_universe, load_universe, parse_json
from cosmogen.domain.model import BecomeNode


def doc(**overrides: object) -> dict[str, object]:
    base: dict[str, object] = {
        "cosmogen": "universe/1",
        "name": "t",
        "nodes": [{"id": "a", "type": "begin", "entity": "e", "properties": {"n": 1}}],
        "edges": [],
    }
    base.update(overrides)
    return base


def codes(text: str | bytes) -> list[str]:
    with pytest.raises(DocumentError) as info:
        load_universe(text)
    return [d.code for d in info.value.diagnostics]


def test_minimal_document_loads_and_round_trips() -> None:
    universe, notes = load_universe(json.dumps(doc()))
    assert notes == []
    again, _ = load_universe(dump_universe(universe))
    assert again == universe


def test_numbers_stay_numbers() -> None:
    raw = doc(nodes=[{"id": "a", "type": "begin", "entity": "e", "properties": {"i": 3, "f": 2.5, "s": "3"}}])
    universe, _ = load_universe(json.dumps(raw))
    props = universe.nodes[0].properties  # type: ignore[union-attr]
    assert props == {"i": 3, "f": 2.5, "s": "3"}
    assert type(props["i"]) is int
    assert type(props["f"]) is float


def test_malformed_json_reports_line_and_column() -> None:
    with pytest.raises(DocumentError) as info:
        load_universe('{"cosmogen": "universe/1",\n "name": }')
    diagnostic = info.value.diagnostics[0]
    assert diagnostic.code == "bad-json"
    assert (diagnostic.line, diagnostic.column) == (2, 10)
    assert diagnostic.hint


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("[1, 2]", "bad-shape"),
        ('"universe"', "bad-shape"),
        ("{}", "unknown-version"),
        ('{"cosmogen": "universe/99", "name": "x", "nodes": []}', "unknown-version"),
        ('{"cosmogen": "universe/1", "name": "x", "nodes": [], "n": NaN}', "bad-number"),
        ('{"cosmogen": "universe/1", "name": "x", "nodes": [], "n": 1e999}', "bad-number"),
        ('{"cosmogen": "universe/1", "name": "x", "nodes": [], "n": 99999999999999999999}', "bad-number"),
        (b"\xff\xfe{}", "bad-json"),
    ],
)
def test_bad_documents_get_specific_codes(text: str | bytes, code: str) -> None:
    assert codes(text) == [code]


def test_ten_thousand_deep_nesting_is_refused_without_recursion_error() -> None:
    deep = "[" * 10_000 + "]" * 10_000
    assert codes(json.dumps(doc())[:-1] + f', "x": {deep}}}') == ["too-deep"]
    deep_map = '{"a":' * 10_000 + "1" + "}" * 10_000
    assert codes(deep_map) == ["too-deep"]


def test_oversized_document_is_refused_before_parsing() -> None:
    assert codes(" " * (16 * 1024 * 1024 + 1)) == ["too-large"]


def test_unknown_field_names_node_and_suggests_the_right_one() -> None:
    raw = doc(nodes=[{"id": "s", "type": "become", "entity": "e", "tranform": {"n": "n + 1"}}])
    with pytest.raises(DocumentError) as info:
        load_universe(json.dumps(raw))
    by_code = {d.code: d for d in info.value.diagnostics}
    assert by_code["unknown-field"].node == "s"
    assert "transform" in (by_code["unknown-field"].hint or "")
    assert by_code["missing-field"].field == "nodes[0].transform"


def test_unknown_node_type_lists_the_known_ones() -> None:
    raw = doc(nodes=[{"id": "x", "type": "becom", "entity": "e"}])
    with pytest.raises(DocumentError) as info:
        load_universe(json.dumps(raw))
    (diagnostic,) = info.value.diagnostics
    assert diagnostic.code == "unknown-node-type"
    assert diagnostic.node == "x"
    assert "become" in (diagnostic.hint or "")


def test_wrong_types_are_reported_with_their_path() -> None:
    raw = doc(nodes=[{"id": "a", "type": "begin", "entity": 5, "properties": []}])
    with pytest.raises(DocumentError) as info:
        load_universe(json.dumps(raw))
    fields = {d.field for d in info.value.diagnostics}
    assert {"nodes[0].entity", "nodes[0].properties"} <= fields
    assert all(d.code == "bad-field" for d in info.value.diagnostics)


def test_unknown_top_level_field_is_refused() -> None:
    assert codes(json.dumps(doc(nodez=[]))) == ["unknown-field"]


def test_become_fields_parse() -> None:
    raw = doc(
        nodes=[
            {"id": "a", "type": "begin", "entity": "e"},
            {"id": "b", "type": "become", "entity": "e", "transform": {"n": "1"}, "on_event": "deposit"},
        ]
    )
    universe, _ = load_universe(json.dumps(raw))
    node = universe.nodes[1]
    assert isinstance(node, BecomeNode)
    assert node.on_event == "deposit"
    assert node.trigger is None


def test_parse_json_refuses_infinity_literal() -> None:
    with pytest.raises(DocumentError):
        parse_json('{"x": Infinity}')
