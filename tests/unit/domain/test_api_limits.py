"""The API's size caps and page clamp."""

from __future__ import annotations

from cosmogen.domain.api_limits import MAX_PAGE, MAX_STRING_CHARS, clamp_page, document_size_problems


def test_page_sizes_are_clamped() -> None:
    assert clamp_page(None) == 50
    assert clamp_page(10**6) == MAX_PAGE
    assert clamp_page(1) == 1
    assert clamp_page(-5) == 1


def test_caps_name_what_is_over() -> None:
    assert document_size_problems({"nodes": [{}] * 2000, "edges": []}) == []
    codes = [d.code for d in document_size_problems({"nodes": [{}] * 2001, "edges": [{}] * 10_001})]
    assert codes == ["too-many-nodes", "too-many-edges"]
    deep = {"nodes": [{"id": "n", "transform": {"x": "1+" * MAX_STRING_CHARS}}]}
    assert [d.code for d in document_size_problems(deep)] == ["string-too-long"]
    assert [d.code for d in document_size_problems({"k" * (MAX_STRING_CHARS + 1): 1})] == ["string-too-long"]
    assert document_size_problems([1, 2]) == []
