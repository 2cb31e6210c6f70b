"""Provider bindings in documents: what validation can say before a run (capability, setting names,
templates), and what the fields of each binding kind must be."""

from __future__ import annotations

from typing import Any

import pytest

from cosmogen.domain.diagnostics import DocumentError
from cosmogen.testing.builders import document, plan_of, report_of

NODES = [
    {"id": "b", "type": "begin", "entity": "acct:1", "properties": {"balance": 10, "owner": "ada"}},
    {"id": "s", "type": "become", "entity": "acct:1", "transform": {"balance": "balance + 5"}},
]


def provider(capability: str = "slack.post_message", **settings: Any) -> dict[str, Any]:
    return {
        "id": "tell",
        "node": "s",
        "kind": "provider",
        "capability": capability,
        "account": "team-slack",
        "settings": settings or {"channel": "#ops", "text": "{{ owner }} now has {{ balance }}"},
    }


def with_binding(binding: dict[str, Any]) -> dict[str, Any]:
    doc = document(NODES)
    doc["bindings"] = [binding]
    return doc


def test_a_provider_binding_compiles_its_setting_templates() -> None:
    plan = plan_of(with_binding(provider()))
    (compiled,) = plan.steps[1].bindings
    assert compiled.is_provider
    rendered = compiled.render_settings({"owner": "ada", "balance": 15})
    assert rendered == {"channel": "#ops", "text": "ada now has 15"}


def test_unknown_capability_and_not_yet_executable_ones_are_errors_with_the_list() -> None:
    report = report_of(with_binding(provider("slack.post_mesage")))
    (diag,) = [d for d in report.diagnostics if d.code == "binding-unknown-capability"]
    assert "slack.post_message" in diag.message and diag.field == "bindings[0].capability"
    assert (
        "not yet executable"
        in report_of(with_binding(provider("github.create-issue"))).diagnostics[0].message
    )


def test_unknown_and_missing_settings_are_named_with_a_hint() -> None:
    report = report_of(with_binding(provider(channel="#ops", txt="hi")))
    found = {d.code: d for d in report.diagnostics}
    assert found["binding-unknown-setting"].field == "bindings[0].settings.txt"
    assert "'text'" in (found["binding-unknown-setting"].hint or "")
    assert found["binding-missing-setting"].message.endswith("'text'")


def test_templates_in_settings_are_checked_like_request_templates() -> None:
    report = report_of(with_binding(provider(channel="#ops", text="{{ nosuch }}")))
    assert [d.field for d in report.diagnostics] == ["bindings[0].settings.text"]
    broken = report_of(with_binding(provider(channel="#ops", text="{{ 1 + }}")))
    assert [d.severity for d in broken.diagnostics if d.field == "bindings[0].settings.text"] == ["error"]


@pytest.mark.parametrize(
    ("binding", "message"),
    [
        ({"id": "x", "node": "s"}, "needs 'request'"),
        ({"id": "x", "node": "s", "kind": "provider", "account": "a"}, "needs 'capability'"),
        (
            {"id": "x", "node": "s", "request": {"url": "https://a.example"}, "capability": "x.post"},
            "belong to provider bindings",
        ),
        (
            {
                "id": "x",
                "node": "s",
                "kind": "provider",
                "capability": "x.post",
                "account": "a",
                "request": {"url": "https://a.example"},
            },
            "remove 'request'",
        ),
    ],
)
def test_each_kind_has_its_own_fields(binding: dict[str, Any], message: str) -> None:
    with pytest.raises(DocumentError) as refused:
        report_of(with_binding(binding))
    assert any(message in d.message for d in refused.value.diagnostics), refused.value.diagnostics
