"""Which provider calls are retried after a 5xx: a read sent as a POST (a chat completion) is, since
sending it twice changes nothing; a write without an idempotency key (an X post) is not, since the first
may have been carried out. Both dialects, the real simulator."""

from __future__ import annotations

from typing import Any

from cosmogen.cli.durable import report
from cosmogen.runtime.service import Runtime, RuntimeSettings
from cosmogen.testing.simulator import DEFAULT_API_KEY, Fault, Simulator
from tests.integration.runtime.test_provider_calls import CHAT, connect, one_call, sim, vault_settings
from tests.integration.runtime.test_runtime import with_runtime

__all__ = ["sim", "vault_settings"]  # fixtures shared with test_provider_calls

TWEET = {
    "id": "chat",  # the name test_provider_calls' universe reads its answer from
    "node": "ask",
    "kind": "provider",
    "capability": "x.post",
    "account": "x-main",
    "settings": {"text": "launch"},
    "on_error": "continue",
}


def test_a_read_is_retried_after_a_5xx_and_a_write_is_not(
    vault_settings: RuntimeSettings, sim: Simulator
) -> None:
    async def body(runtime: Runtime) -> tuple[dict[str, Any], dict[str, Any]]:
        await connect(runtime, "openai-main", "openai", sim.url, "api_key", DEFAULT_API_KEY)
        await connect(runtime, "x-main", "x", sim.url, "access_token", DEFAULT_API_KEY, auth_kind="oauth2",
                      scopes=["tweet.read", "tweet.write", "users.read"])  # fmt: skip
        sim.inject(Fault.server_error(500), "openai.chat")
        read = await runtime.submit(one_call(CHAT))
        await runtime.wait(read.run_id)
        sim.inject(Fault.server_error(500), "x.tweets")
        write = await runtime.submit(one_call(TWEET))
        await runtime.wait(write.run_id)
        return report(runtime.db, read.run_id), report(runtime.db, write.run_id)

    read, write = with_runtime(vault_settings, body)
    assert read["status"] == "succeeded", read
    assert [e.status for e in sim.log.select("openai.chat")] == [500, 200]
    assert read["outputs"]["ask"]["bindings"]["chat"]["output"]["text"]
    assert [e.status for e in sim.log.select("x.tweets")] == [500]  # sent once: it may have been posted
    assert write["outputs"]["ask"]["bindings"]["chat"]["error"] is not None
