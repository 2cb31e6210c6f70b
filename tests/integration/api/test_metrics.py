"""`GET /metrics` over real HTTP against `cosmogen serve`: it needs an API token (any role) unless
COSMOGEN_METRICS_PUBLIC=1, and after a universe ran through the sandbox accounts it counts the run, its
nodes, its two provider calls by provider, capability and status class, and the journal's commits; no
account name, URL or token is in any label (LEAK-01 for metrics)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import connect

from cosmogen.domain.roles import Role
from tests.integration.api import stream_client as sc
from tests.integration.api.helpers import call, member_with_token
from tests.integration.conftest import CLI, EXAMPLES, serving
from tests.integration.test_sandbox import UNIVERSE, _run_through_serve

Served = tuple[str, subprocess.Popen[str]]


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_metrics_need_a_token_and_count_runs_nodes_calls_and_commits(
    served: Served, tmp_path: Path, cosmogen: CLI
) -> None:
    url, _ = served
    status, headers, body = call(url + "/metrics")
    assert status == 401 and headers["content-type"] == "application/problem+json", body
    _, viewer = member_with_token(tmp_path / "cosmogen-data", "vi@example.com", Role.VIEWER)

    universe = tmp_path / "demo.json"
    universe.write_text(json.dumps(UNIVERSE))
    ran = _run_through_serve(cosmogen, universe)
    assert ran["status"] == "succeeded", ran

    status, headers, text = call(url + "/metrics", token=viewer)
    assert status == 200 and headers["content-type"].startswith("text/plain"), text
    found = _samples(text)
    assert found[("cosmogen_runs_finished_total", (("status", "succeeded"),))] == 1
    assert found[("cosmogen_runs", (("status", "succeeded"),))] == 1
    assert found[("cosmogen_run_duration_seconds_count", ())] == 1
    assert found[("cosmogen_node_duration_seconds_count", ())] == 3
    for provider, capability in (("openai", "openai.chat"), ("slack", "slack.post_message")):
        labels = (("capability", capability), ("provider", provider), ("status", "2xx"))
        assert found[("cosmogen_external_calls_total", labels)] == 1, sorted(found)
        timed = (("capability", capability), ("provider", provider))
        assert found[("cosmogen_external_call_duration_seconds_count", timed)] == 1
    assert found[("cosmogen_journal_commit_group_size_count", ())] >= 2  # created+started, finished
    assert (
        found[("cosmogen_journal_commit_group_size_sum", ())]
        >= found[("cosmogen_journal_commit_group_size_count", ())]
    )
    assert found[("cosmogen_runs_in_flight", ())] == 0
    # Labels are providers, capabilities and classes: no account, no address, no token.
    for leaked in ("sandbox-openai", "sandbox-slack", "127.0.0.1", "http://", "Bearer"):
        assert leaked not in text


def test_metrics_public_setting(tmp_path: Path, cosmogen: CLI, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COSMOGEN_METRICS_PUBLIC", "1")
    with serving(tmp_path, "--no-sandbox") as (url, _):
        status, _, text = call(url + "/metrics")
        assert status == 200 and "cosmogen_runs_in_flight 0.0" in text
        assert call(url + "/api/v1/me")[0] == 401  # only /metrics opens
    monkeypatch.setenv("COSMOGEN_METRICS_PUBLIC", "maybe")
    refused = cosmogen("serve", "--port", "1")
    assert refused.returncode == 2
    assert "COSMOGEN_METRICS_PUBLIC must be 1 or 0, not 'maybe'" in refused.stderr


def test_the_event_stream_counts_its_subscribers_and_their_lag(served: Served, tmp_path: Path) -> None:
    """While a WebSocket client follows a run, the subscriber gauge reads 1 and every event handed to it
    is timed; once it closes, the gauge is back to 0."""
    url, _ = served
    token = sc.member(tmp_path / "cosmogen-data", "watcher@example.com")
    universe_id = sc.save_universe(url, token, json.loads((EXAMPLES / "banking.json").read_text()))

    def gauge() -> float:
        status, _, text = call(url + "/metrics", token=token)
        assert status == 200, text
        return _samples(text)[("cosmogen_event_stream_subscribers", ())]

    async def follow_one_run() -> tuple[float, int]:
        async with connect(sc.ws_url(url), additional_headers=sc.bearer(token)) as ws:
            while_open = await asyncio.to_thread(gauge)
            run_id = await asyncio.to_thread(sc.start_run, url, token, universe_id)
            frames = await sc.receive_until(ws, [], sc.ended({run_id}))
        return while_open, len(frames)

    assert gauge() == 0
    while_open, received = asyncio.run(follow_one_run())
    assert while_open == 1 and received >= 3
    status, _, text = call(url + "/metrics", token=token)
    assert status == 200, text
    found = _samples(text)
    assert found[("cosmogen_event_stream_lag_seconds_count", ())] >= received
    assert found[("cosmogen_event_stream_lag_seconds_sum", ())] > 0
    deadline = time.monotonic() + 10
    while gauge() != 0:  # the server notices the close on its next read
        assert time.monotonic() < deadline, "the subscriber gauge stayed up after the client closed"
        time.sleep(0.05)
