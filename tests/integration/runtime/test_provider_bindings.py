"""Provider bindings through the durable runtime (both dialects): a dry run shows each request a
capability would send, with no credential read; a live run without an account store is refused loudly."""

from __future__ import annotations

from typing import Any

from cosmogen.cli.durable import report
from cosmogen.domain.runs import RunStatus
from cosmogen.runtime import journal
from cosmogen.runtime.service import Runtime, RuntimeSettings
from tests.integration.runtime.test_runtime import with_runtime


def universe(capability: str, settings: dict[str, Any]) -> dict[str, Any]:
    return {
        "cosmogen": "universe/1",
        "name": f"provider {capability}",
        "nodes": [
            {"id": "b", "type": "begin", "entity": "post:1", "properties": {"caption": "Launch day"}},
            {"id": "s", "type": "become", "entity": "post:1", "transform": {"sent": "true"}},
        ],
        "edges": [{"source": "b", "target": "s"}],
        "bindings": [
            {
                "id": "share",
                "node": "s",
                "kind": "provider",
                "capability": capability,
                "account": "brand",
                "settings": settings,
            }
        ],
    }


def dry_run(
    settings: RuntimeSettings, document: dict[str, Any]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    async def body(runtime: Runtime) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        submitted = await runtime.submit(document, dry_run=True)
        assert await runtime.wait(submitted.run_id) is RunStatus.SUCCEEDED
        with runtime.db.engine.connect() as conn:
            events = journal.events_of(conn, submitted.run_id)
        return report(runtime.db, submitted.run_id), events

    return with_runtime(settings, body)


def test_a_dry_run_shows_both_instagram_requests_and_reads_no_credential(settings: RuntimeSettings) -> None:
    document = universe(
        "instagram.publish_image",
        {"ig_user_id": "17841400000", "image_url": "https://cdn.example/a.jpg", "caption": "{{ caption }}"},
    )
    result, events = dry_run(settings, document)
    (shown,) = [e for e in events if e["type"] == "effect.dry_run"]
    container, publish = shown["payload"]["requests"]
    assert container["step"] == "container"
    assert container["url"] == "https://graph.facebook.com/v21.0/17841400000/media"
    assert container["body"] == {"image_url": "https://cdn.example/a.jpg", "caption": "Launch day"}
    assert "Authorization" not in container["headers"] and "access_token" not in container["body"]
    assert publish == {"step": "publish", "after": "container"}  # needs the container id: shown, not guessed
    assert result["calls"] == []  # no effect row: nothing was sent


def test_a_dry_run_with_bad_settings_fails_the_node_with_the_field_named(settings: RuntimeSettings) -> None:
    async def body(runtime: Runtime) -> dict[str, Any]:
        # "x" * 300 is over X's 280: known only once the template is rendered.
        document = universe("x.post", {"text": "{{ caption + '" + "x" * 300 + "' }}"})
        submitted = await runtime.submit(document, dry_run=True)
        assert await runtime.wait(submitted.run_id) is RunStatus.FAILED
        return report(runtime.db, submitted.run_id)

    result = with_runtime(settings, body)
    assert result["error"]["code"] == "binding-failed"
    assert "settings of x.post: text" in result["error"]["message"]


def test_a_live_provider_run_with_an_unknown_account_fails_with_what_to_do(settings: RuntimeSettings) -> None:
    async def body(runtime: Runtime) -> tuple[RunStatus, dict[str, Any]]:
        document = universe("slack.post_message", {"channel": "#ops", "text": "{{ caption }}"})
        submitted = await runtime.submit(document)
        status = await runtime.wait(submitted.run_id)
        return status, report(runtime.db, submitted.run_id)

    status, result = with_runtime(settings, body)
    assert status is RunStatus.FAILED
    assert "no account named 'brand'" in result["error"]["message"]
    error = result["outputs"]["s"]["bindings"]["share"]["error"]
    assert (error["kind"], error["action"], error["account"]) == ("account", "fix_setting", "brand")
