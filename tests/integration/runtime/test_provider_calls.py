"""Provider bindings that really call, through saved accounts and the vault, against the provider
simulator on 127.0.0.1 (both dialects): OpenAI chat, Slack (including a 200 `ok: false`), Instagram's two
steps, a launch's binding override, and an echoed credential that must not reach the journal."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from cosmogen.cli.durable import report
from cosmogen.domain.runs import RunStatus
from cosmogen.integrations import credentials
from cosmogen.integrations.secret import Secret
from cosmogen.integrations.vault import new_key
from cosmogen.runtime.service import Runtime, RuntimeSettings
from cosmogen.store.tables import accounts, effects, run_events
from cosmogen.testing.simulator import DEFAULT_API_KEY, Fault, Simulator, ThreadedSimulator
from tests.integration.runtime.test_runtime import with_runtime

SLACK_TOKEN = "xoxb-sim-token-of-the-test"  # noqa: S105 - the simulator's fake token


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with ThreadedSimulator(api_keys=[DEFAULT_API_KEY, SLACK_TOKEN]) as server:
        yield server


@pytest.fixture
def vault_settings(settings: RuntimeSettings, tmp_path: Path) -> RuntimeSettings:
    if settings.data_dir is not None:
        return settings
    # PostgreSQL: the keyring comes from the environment, as every worker would get it.
    keys = {"active": "k1", "keys": {"k1": base64.b64encode(new_key()).decode()}}
    return replace(settings, vault_keys=Secret(json.dumps(keys)))


async def connect(
    runtime: Runtime,
    name: str,
    provider: str,
    base_url: str,
    secret_field: str,
    secret: str,
    auth_kind: str = "api_key",
    **extra: Any,
) -> str:
    vault = runtime.open_vault()
    account_id = await runtime.writer.write(
        credentials.create_account(
            workspace_id="default",
            provider=provider,
            name=name,
            base_url=base_url,
            auth_kind=auth_kind,
            **extra,
        )
    )
    await runtime.writer.write(credentials.put_secret(vault, account_id, secret_field, Secret(secret)))
    await runtime.writer.write(credentials.set_account_status(account_id, "connected"))
    return account_id


def universe(*bindings: dict[str, Any]) -> dict[str, Any]:
    return {
        "cosmogen": "universe/1",
        "name": "provider calls",
        "nodes": [
            {"id": "b", "type": "begin", "entity": "post:1", "properties": {"topic": "launch"}},
            {"id": "ask", "type": "become", "entity": "post:1", "transform": {"asked": "true"}},
            {
                "id": "tell",
                "type": "become",
                "entity": "post:1",
                "transform": {"answer": "nodes.ask.bindings.chat.output.text"},
            },
        ],
        "edges": [{"source": "b", "target": "ask"}, {"source": "ask", "target": "tell"}],
        "bindings": list(bindings),
    }


def one_call(binding: dict[str, Any]) -> dict[str, Any]:
    """BEGIN and the one node that calls: a refused call fails no later node that reads its answer."""
    document = universe(binding)
    document["nodes"] = document["nodes"][:2]
    document["edges"] = document["edges"][:1]
    return document


CHAT = {
    "id": "chat",
    "node": "ask",
    "kind": "provider",
    "capability": "openai.chat",
    "account": "openai-main",
    "settings": {"prompt": "Write about {{ topic }}", "max_tokens": 20},
}
SLACK = {
    "id": "post",
    "node": "tell",
    "kind": "provider",
    "capability": "slack.post_message",
    "account": "team-slack",
    "settings": {"channel": "C0SIM00001", "text": "{{ answer }}"},
}


def test_openai_then_slack_through_saved_accounts(vault_settings: RuntimeSettings, sim: Simulator) -> None:
    async def body(runtime: Runtime) -> tuple[RunStatus, dict[str, Any], list[Any]]:
        await connect(runtime, "openai-main", "openai", sim.url, "api_key", DEFAULT_API_KEY)
        await connect(
            runtime, "team-slack", "slack", sim.url, "access_token", SLACK_TOKEN,
            auth_kind="oauth2", scopes=["chat:write"],
        )  # fmt: skip
        submitted = await runtime.submit(universe(CHAT, SLACK))
        status = await runtime.wait(submitted.run_id)
        with runtime.db.engine.connect() as conn:
            stored = list(conn.execute(select(effects.c.request, effects.c.response)))
        return status, report(runtime.db, submitted.run_id), stored

    status, result, stored = with_runtime(vault_settings, body)
    assert status is RunStatus.SUCCEEDED, result["error"]
    chat = result["outputs"]["ask"]["bindings"]["chat"]
    assert chat["output"]["text"] and chat["account"] == "openai-main"
    assert result["entities"]["post:1"]["answer"] == chat["output"]["text"]
    [posted] = sim.log.select("slack.postMessage")
    assert posted.body["text"] == chat["output"]["text"] and posted.credential == SLACK_TOKEN
    [asked] = sim.log.select("openai.chat")
    assert asked.headers["Authorization"] == f"Bearer {DEFAULT_API_KEY}"
    assert asked.body["messages"] == [{"role": "user", "content": "Write about launch"}]
    text = repr(stored)
    assert DEFAULT_API_KEY not in text and SLACK_TOKEN not in text  # stored requests are redacted


def test_slack_ok_false_fails_the_node_with_what_to_do(
    vault_settings: RuntimeSettings, sim: Simulator
) -> None:
    binding = {**SLACK, "node": "ask", "settings": {"channel": "C0NOSUCH", "text": "hi"}}

    async def body(runtime: Runtime) -> dict[str, Any]:
        await connect(
            runtime, "team-slack", "slack", sim.url, "access_token", SLACK_TOKEN,
            auth_kind="oauth2", scopes=["chat:write"],
        )  # fmt: skip
        doc = universe(binding)
        doc["nodes"][2]["transform"] = {"answer": "'none'"}
        submitted = await runtime.submit(doc)
        await runtime.wait(submitted.run_id)
        return report(runtime.db, submitted.run_id)

    result = with_runtime(vault_settings, body)
    assert result["status"] == "failed"
    error = result["outputs"]["ask"]["bindings"]["post"]["error"]
    assert (error["code"], error["action"]) == ("slack.channel_not_found", "fix_setting")


def test_instagram_publishes_in_two_recorded_steps(vault_settings: RuntimeSettings, sim: Simulator) -> None:
    binding = {
        "id": "share",
        "node": "ask",
        "kind": "provider",
        "capability": "instagram.publish_image",
        "account": "brand-ig",
        "settings": {
            "ig_user_id": "17841400000000001",
            "image_url": "https://cdn.example/{{ topic }}.jpg",
            "caption": "It is {{ topic }} day",
        },
    }

    async def body(runtime: Runtime) -> tuple[dict[str, Any], list[str]]:
        await connect(
            runtime, "brand-ig", "instagram", f"{sim.url}/v21.0", "access_token", SLACK_TOKEN,
            auth_kind="oauth2", scopes=["instagram_basic", "instagram_content_publish"],
        )  # fmt: skip
        doc = universe(binding)
        doc["nodes"][2]["transform"] = {"answer": "nodes.ask.bindings.share.output.media_id"}
        submitted = await runtime.submit(doc)
        await runtime.wait(submitted.run_id)
        with runtime.db.engine.connect() as conn:
            names = [r.binding_id for r in conn.execute(select(effects.c.binding_id).order_by(effects.c.id))]
        return report(runtime.db, submitted.run_id), names

    result, names = with_runtime(vault_settings, body)
    assert result["status"] == "succeeded", result["error"]
    assert names == ["share.container", "share.publish"]  # each step journaled as its own effect
    media = result["outputs"]["ask"]["bindings"]["share"]["output"]
    assert media["container_id"] and media["media_id"] == result["entities"]["post:1"]["answer"]
    container, publish = sim.log.select("instagram")
    assert (
        container.body["caption"] == "It is launch day"
        and publish.body["creation_id"] == media["container_id"]
    )


def test_an_echoed_credential_never_reaches_the_journal(
    vault_settings: RuntimeSettings, sim: Simulator
) -> None:
    sim.inject(Fault.echo_auth(), "openai.chat")

    async def body(runtime: Runtime) -> tuple[dict[str, Any], str]:
        await connect(runtime, "openai-main", "openai", sim.url, "api_key", DEFAULT_API_KEY)
        submitted = await runtime.submit(universe(CHAT))
        await runtime.wait(submitted.run_id)
        with runtime.db.engine.connect() as conn:
            everything = repr(list(conn.execute(select(effects)))) + repr(
                list(conn.execute(select(run_events)))
            )
        return report(runtime.db, submitted.run_id), everything

    result, everything = with_runtime(vault_settings, body)
    error = result["outputs"]["ask"]["bindings"]["chat"]["error"]
    assert error["action"] == "reconnect"
    assert sim.log.select("openai.chat")[0].status == 401
    assert DEFAULT_API_KEY not in everything and DEFAULT_API_KEY not in repr(result)


def test_provider_calls_share_the_accounts_rate_limit(
    vault_settings: RuntimeSettings, sim: Simulator
) -> None:
    """Eight runs at once through one account limited to 5/s (burst 1), against a provider that answers
    429 beyond 5/s: every call waits for its token, none is refused. The provider's bucket holds 3, not
    1: we pace sends, but on a loaded 2-core machine one send can reach the provider 350 ms late and
    arrive together with the next two (a CI run saw this with a bucket of 2). An unpaced client would
    still get five 429s, and the span below proves the pace."""
    sim.limit("openai.chat", rate=5, burst=3)

    async def body(runtime: Runtime) -> list[RunStatus]:
        await connect(
            runtime, "openai-main", "openai", sim.url, "api_key", DEFAULT_API_KEY,
            settings={"rate_limit": {"requests": 5, "per": "1s", "burst": 1}},
        )  # fmt: skip
        first = await runtime.submit(universe(CHAT))
        others = [await runtime.start_run(first.universe_id, first.version_id) for _ in range(7)]
        return [await runtime.wait(run_id) for run_id in [first.run_id, *others]]

    statuses = with_runtime(vault_settings, body)
    assert statuses == [RunStatus.SUCCEEDED] * 8
    assert sim.log.count_429() == 0
    assert len(sim.log.select("openai.chat")) == 8
    assert sim.log.span("openai.chat") >= 7 / 5 - 0.1  # 8 calls at 5/s: at least 1.4 s first to last


def test_each_calls_outcome_event_shows_what_a_dashboard_needs(
    vault_settings: RuntimeSettings, sim: Simulator
) -> None:
    """The outcome event of a call names its provider and capability, its time and attempts, the room
    the provider says is left (OpenAI's x-ratelimit-*-requests headers), and, for an OAuth token, how long
    the token it was sent with still has."""
    sim.limit("openai.chat", rate=1, burst=3)

    async def body(runtime: Runtime) -> tuple[RunStatus, list[dict[str, Any]]]:
        await connect(runtime, "openai-main", "openai", sim.url, "api_key", DEFAULT_API_KEY)
        slack = await connect(
            runtime, "team-slack", "slack", sim.url, "access_token", SLACK_TOKEN,
            auth_kind="oauth2", scopes=["chat:write"],
        )  # fmt: skip
        expires = datetime.now(UTC) + timedelta(hours=1)
        await runtime.writer.write(
            lambda conn: conn.execute(
                update(accounts).where(accounts.c.id == slack).values(token_expires_at=expires)
            )
        )
        submitted = await runtime.submit(universe(CHAT, SLACK))
        status = await runtime.wait(submitted.run_id)
        with runtime.db.engine.connect() as conn:
            rows = conn.execute(
                select(run_events.c.payload)
                .where(run_events.c.run_id == submitted.run_id, run_events.c.type == "effect.succeeded")
                .order_by(run_events.c.seq)
            )
            return status, [dict(r.payload) for r in rows]

    status, outcomes = with_runtime(vault_settings, body)
    assert status == RunStatus.SUCCEEDED
    chat, post = outcomes
    assert (chat["binding"], chat["provider"], chat["capability"], chat["status"]) == (
        "chat", "openai", "openai.chat", 200,
    )  # fmt: skip
    assert chat["attempts"] == 1 and chat["ms"] > 0
    assert chat["rate_limit"] == {"remaining": 2, "limit": 3}  # one of three taken
    assert "token_expires_in_s" not in chat  # an API key does not run out
    assert (post["provider"], post["capability"], post["attempts"]) == ("slack", "slack.post_message", 1)
    assert "rate_limit" not in post  # no limit at the provider: it says nothing
    assert 3500 < post["token_expires_in_s"] <= 3600


def test_traces_nest_calls_in_nodes_in_runs(vault_settings: RuntimeSettings, sim: Simulator) -> None:
    """With a tracer, each run is a span, each node a span inside it, each call a span inside its node;
    a call the provider refused is marked as an error. Spans carry ids, statuses and redacted URLs."""
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import StatusCode

    from cosmogen.telemetry.tracing import OTelTracer

    exported = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exported))
    sim.inject(Fault.server_error(404), "slack.postMessage", after=1)  # the second run's post

    async def main() -> list[str]:
        runtime = await Runtime.open(vault_settings, tracer=OTelTracer(provider))
        try:
            if runtime.queued:
                await runtime.start_worker()
            await connect(runtime, "openai-main", "openai", sim.url, "api_key", DEFAULT_API_KEY)
            await connect(
                runtime, "team-slack", "slack", sim.url, "access_token", SLACK_TOKEN,
                auth_kind="oauth2", scopes=["chat:write"],
            )  # fmt: skip
            first = await runtime.submit(universe(CHAT, SLACK))
            await runtime.wait(first.run_id)
            second = await runtime.start_run(first.universe_id, first.version_id)
            await runtime.wait(second)
            return [first.run_id, second]
        finally:
            await runtime.close()

    run_ids = asyncio.run(main())
    spans = list(exported.get_finished_spans())

    def attributes(span: ReadableSpan) -> dict[str, Any]:
        return dict(span.attributes or {})

    def one(name: str, run_id: str) -> ReadableSpan:
        [root] = [s for s in spans if s.name == "run" and attributes(s)["cosmogen.run.id"] == run_id]
        if name == "run":
            return root
        found = [s for s in spans if s.name == name and s.context.trace_id == root.context.trace_id]
        assert len(found) == 1, (name, [s.name for s in spans])
        return found[0]

    for run_id in run_ids:
        root = one("run", run_id)
        assert root.parent is None
        for node in ("b", "ask", "tell"):
            span = one(f"node {node}", run_id)
            assert span.parent is not None and span.parent.span_id == root.context.span_id
        for node, call in (("ask", "openai.chat"), ("tell", "slack.post_message")):
            span = one(f"call {call}", run_id)
            assert (
                span.parent is not None and span.parent.span_id == one(f"node {node}", run_id).context.span_id
            )
            assert (
                attributes(span)["cosmogen.capability"] == call
                and attributes(span)["http.request.method"] == "POST"
            )
            assert DEFAULT_API_KEY not in str(attributes(span)) and SLACK_TOKEN not in str(attributes(span))
    ok_post = one("call slack.post_message", run_ids[0])
    assert (
        attributes(ok_post)["http.response.status_code"] == 200
        and ok_post.status.status_code == StatusCode.UNSET
    )
    refused = one("call slack.post_message", run_ids[1])
    assert attributes(refused)["http.response.status_code"] == 404
    assert refused.status.status_code == StatusCode.ERROR and refused.status.description == "HTTP 404"
    assert attributes(one("run", run_ids[0]))["cosmogen.run.status"] == "succeeded"
