"""A run held by a shared rate limit says so: while its call waits for the account's next token the run
reports `waiting: rate limit` with the time it expects to go on, an `effect.waiting` event is committed at
once (not only when the call ends), and both are gone when the call's outcome is recorded. Both dialects,
the real simulator, the real limiter."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

from cosmogen.cli.durable import report
from cosmogen.runtime import journal
from cosmogen.runtime.service import Runtime, RuntimeSettings
from cosmogen.testing.simulator import DEFAULT_API_KEY, Simulator
from tests.integration.runtime.test_provider_calls import CHAT, connect, one_call, sim, vault_settings
from tests.integration.runtime.test_runtime import with_runtime

__all__ = ["sim", "vault_settings"]  # fixtures shared with test_provider_calls

PERIOD_S = 3.0


def _one_call() -> dict[str, Any]:
    return one_call({**CHAT, "account": "slow"})


def test_a_run_waiting_for_its_rate_limit_says_so(vault_settings: RuntimeSettings, sim: Simulator) -> None:
    async def body(runtime: Runtime) -> tuple[list[dict[str, Any]], dict[str, Any], list[dict[str, Any]]]:
        limit = {"rate_limit": {"requests": 1, "per": f"{PERIOD_S:g}s", "burst": 1}}
        await connect(runtime, "slow", "openai", sim.url, "api_key", DEFAULT_API_KEY, settings=limit)
        first = await runtime.submit(_one_call())
        await runtime.wait(first.run_id)  # takes the only token of the period
        second = await runtime.submit(_one_call())
        seen: list[dict[str, Any]] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while loop.time() < deadline:
            shown = await asyncio.to_thread(report, runtime.db, second.run_id)
            seen.append(shown)
            if shown["status"] not in ("queued", "running"):
                break
            await asyncio.sleep(0.05)
        with runtime.db.engine.connect() as conn:
            events = journal.events_of(conn, second.run_id)
        return seen, seen[-1], events

    seen, final, events = with_runtime(vault_settings, body)
    assert final["status"] == "succeeded", final
    assert final["waiting"] is None
    waiting = [s["waiting"] for s in seen if s["waiting"]]
    assert waiting, "the run never showed that it waits for its rate limit"
    shown = waiting[0]
    assert shown["reason"] == "rate_limit"
    assert (shown["node"], shown["binding"]) == ("ask", "chat")
    started = datetime.fromisoformat(seen[0]["created_at"])
    expected = (datetime.fromisoformat(shown["until"]) - started).total_seconds()
    assert 0 < expected <= PERIOD_S + 1, expected  # the next token of a 1-per-3-s key
    types = [e["type"] for e in events]
    assert "effect.waiting" in types
    assert types.index("effect.waiting") < types.index("effect.succeeded")
    # The call went out after the wait, once: the limit held.
    assert len(sim.log.select("openai.chat")) == 2
