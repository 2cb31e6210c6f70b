"""`GET /metrics` over real HTTP against `cosmogen serve`: it needs an API token (any role) unless
COSMOGEN_METRICS_PUBLIC=1, and after a universe ran through the sandbox accounts it counts the run, its
nodes, its two provider calls by provider, capability and status class, and the journal's commits; no
account name, URL or token is in any label (LEAK-01 for metrics)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from cosmogen.domain.roles import Role
from tests.integration.api.helpers import call, member_with_token
from tests.integration.conftest import CLI, serving
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
