"""The runtime feeds its `Metrics` (telemetry/metrics.py) from the real paths: a provider call that got a
500 (not retried: an unkeyed POST), one that got a 429 with Retry-After and was retried, a call held by the
account's shared rate limit, a call the egress guard refused, the runs and nodes, the group-commit writer,
and OAuth refresh-token grants (one answered, one refused with invalid_grant). Both dialects, the real
simulator and limiter; the values are read back from the runtime's own registry."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest

from cosmogen.domain.runs import RunStatus
from cosmogen.integrations.connections import AccountUnavailable
from cosmogen.runtime.service import Runtime, RuntimeSettings
from cosmogen.telemetry.metrics import Metrics
from cosmogen.testing.simulator import DEFAULT_API_KEY, Fault, Simulator
from tests.integration.runtime.test_provider_calls import CHAT, connect, sim, universe, vault_settings
from tests.integration.test_token_refresher import add

__all__ = ["sim", "vault_settings"]  # fixtures shared with test_provider_calls

REFUSED = {
    "id": "meta",
    "node": "tell",
    "request": {"url": "http://169.254.169.254/x"},
    "on_error": "continue",
}


def _with_metrics(settings: RuntimeSettings, metrics: Metrics, body: Any) -> Any:
    async def main() -> Any:
        runtime = await Runtime.open(settings, telemetry=metrics)
        try:
            if runtime.queued:
                await runtime.start_worker()
            return await body(runtime)
        finally:
            await runtime.close()

    return asyncio.run(main())


def test_runtime_hooks_feed_the_metrics(vault_settings: RuntimeSettings, sim: Simulator) -> None:
    metrics = Metrics()

    async def body(runtime: Runtime) -> list[RunStatus]:
        limit = {"rate_limit": {"requests": 1, "per": "2s", "burst": 1}}  # run 2's call waits for run 1's
        await connect(runtime, "openai-main", "openai", sim.url, "api_key", DEFAULT_API_KEY, settings=limit)
        # Run 1: a chat completion only reads, so a 500 is retried; four of them (all its attempts) and
        # the call ends 5xx.
        sim.inject(Fault.server_error(500), "openai.chat", times=4)
        first = await runtime.submit(universe(CHAT, REFUSED))
        done = [await runtime.wait(first.run_id)]
        # Run 2, at once: the account's bucket holds its call; then a 429 blocks the key for 1 s and the
        # retry answers.
        sim.inject(Fault.rate_limited(retry_after=1), "openai.chat")
        second = await runtime.submit(universe(CHAT, REFUSED))
        done.append(await runtime.wait(second.run_id))
        return done

    statuses = _with_metrics(vault_settings, metrics, body)
    assert statuses[1] is RunStatus.SUCCEEDED, statuses

    def value(name: str, **labels: str) -> float:
        found = metrics.registry.get_sample_value(name, labels)
        assert found is not None, (name, labels)
        return found

    chat = {"provider": "openai", "capability": "openai.chat"}
    assert value("cosmogen_external_calls_total", **chat, status="5xx") == 1
    assert value("cosmogen_external_calls_total", **chat, status="2xx") == 1
    assert value("cosmogen_external_call_retries_total", **chat) == 4  # run 1's three, run 2's 429
    assert value("cosmogen_external_call_duration_seconds_count", **chat) == 2
    # Run 1 failed at `ask`, so its `tell` (and the refused call) never ran; run 2's did.
    assert statuses[0] is RunStatus.FAILED
    assert value("cosmogen_external_calls_total", provider="http", capability="http", status="egress") == 1
    assert value("cosmogen_rate_limit_waits_total", provider="openai", reason="rate_limit") >= 1
    assert value("cosmogen_rate_limit_waits_total", provider="openai", reason="retry_after") >= 1
    assert value("cosmogen_rate_limit_wait_seconds_sum", provider="openai") > 0.5
    finished = sum(value("cosmogen_runs_finished_total", status=s.value) for s in set(statuses))
    assert finished == 2 and value("cosmogen_run_duration_seconds_count") == 2
    assert value("cosmogen_node_duration_seconds_count") == 6
    commits = value("cosmogen_journal_commit_seconds_count")
    assert value("cosmogen_journal_commit_group_size_sum") >= commits > 0


def test_token_refreshes_are_counted_by_outcome(vault_settings: RuntimeSettings, sim: Simulator) -> None:
    metrics = Metrics()

    async def body(runtime: Runtime) -> None:
        fine = add(runtime, sim, "fine", timedelta(minutes=4))  # within the refresh window: due
        dead = add(runtime, sim, "dead", timedelta(minutes=4))
        await runtime.tokens.access_token(fine)
        sim.inject(Fault.invalid_grant("the grant was revoked"), "oauth.token")
        with pytest.raises(AccountUnavailable, match="must be reconnected"):
            await runtime.tokens.access_token(dead)

    _with_metrics(vault_settings, metrics, body)
    sample = metrics.registry.get_sample_value
    assert sample("cosmogen_token_refreshes_total", {"provider": "slack", "outcome": "ok"}) == 1
    assert sample("cosmogen_token_refreshes_total", {"provider": "slack", "outcome": "invalid_grant"}) == 1
    assert sim.counts["oauth.token"] == 2
