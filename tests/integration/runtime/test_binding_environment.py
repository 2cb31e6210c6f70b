"""A production binding refuses sandbox and unverified accounts before any call; a sandbox binding may use
any connected account (seed-spec §2.8). Real runtime on both dialects, real simulator on 127.0.0.1."""

from __future__ import annotations

from typing import Any

from sqlalchemy import update

from cosmogen.cli.durable import report
from cosmogen.domain.runs import RunStatus
from cosmogen.runtime.service import Runtime, RuntimeSettings
from cosmogen.store.tables import accounts, utcnow
from cosmogen.testing.simulator import DEFAULT_API_KEY, Simulator
from tests.integration.runtime.test_provider_calls import CHAT, connect, one_call, sim, vault_settings
from tests.integration.runtime.test_runtime import with_runtime

__all__ = ["sim", "vault_settings"]  # fixtures shared with test_provider_calls

ACCOUNTS = {
    # name: (tier, verified)
    "prod-verified": ("production", True),
    "prod-unverified": ("production", False),
    "sandbox-verified": ("sandbox", True),
}


async def _accounts(runtime: Runtime, sim: Simulator) -> None:
    for name, (tier, verified) in ACCOUNTS.items():
        account_id = await connect(runtime, name, "openai", sim.url, "api_key", DEFAULT_API_KEY, tier=tier)
        if verified:
            with runtime.db.engine.begin() as conn:
                conn.execute(update(accounts).where(accounts.c.id == account_id).values(verified_at=utcnow()))


def _chat(account: str, environment: str) -> dict[str, Any]:
    return one_call({**CHAT, "account": account, "environment": environment, "on_error": "continue"})


def test_production_bindings_use_only_verified_production_accounts(
    vault_settings: RuntimeSettings, sim: Simulator
) -> None:
    cases = [
        ("prod-verified", "production", None),
        ("prod-unverified", "production", "never been verified"),
        ("sandbox-verified", "production", "is a sandbox account"),
        ("sandbox-verified", "sandbox", None),
        ("prod-unverified", "sandbox", None),
    ]

    async def body(runtime: Runtime) -> list[tuple[RunStatus, dict[str, Any]]]:
        await _accounts(runtime, sim)
        results = []
        for account, environment, _ in cases:
            submitted = await runtime.submit(_chat(account, environment))
            status = await runtime.wait(submitted.run_id)
            results.append((status, report(runtime.db, submitted.run_id)))
        return results

    results = with_runtime(vault_settings, body)
    for (account, environment, refusal), (status, shown) in zip(cases, results, strict=True):
        assert status is RunStatus.SUCCEEDED, shown
        chat = shown["outputs"]["ask"]["bindings"]["chat"]
        if refusal is None:
            assert chat.get("error") is None, (account, environment, chat)
            assert chat["account"] == account
        else:
            assert chat["error"]["kind"] == "account", chat
            assert refusal in chat["error"]["message"], chat
            assert chat["error"]["action"] == "fix_setting"
    # Refused bindings never reached the provider: one chat call per allowed case.
    allowed = sum(1 for *_, refusal in cases if refusal is None)
    assert len(sim.log.select("openai.chat")) == allowed


def test_http_bindings_have_no_environment() -> None:
    import pytest
    from pydantic import ValidationError

    from cosmogen.domain.model import Binding

    with pytest.raises(ValidationError, match="an http binding has no account"):
        Binding.model_validate(
            {"id": "h", "node": "n", "request": {"url": "https://example.com"}, "environment": "production"}
        )
