"""A provider that refuses an account's credential puts the account in `error` (seed-spec §2.2): the run
says reconnect, an `account.error` event is written, and the next run is refused before any call. A
disabled account is not turned into `error`. Both dialects, the real simulator."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from cosmogen.cli.durable import report
from cosmogen.integrations import credentials
from cosmogen.runtime import journal
from cosmogen.runtime.service import Runtime, RuntimeSettings
from cosmogen.store.tables import accounts
from cosmogen.testing.simulator import Simulator
from tests.integration.runtime.test_provider_calls import CHAT, connect, one_call, sim, vault_settings
from tests.integration.runtime.test_runtime import with_runtime

__all__ = ["sim", "vault_settings"]  # fixtures shared with test_provider_calls


def _one_call() -> dict[str, Any]:
    return one_call({**CHAT, "on_error": "continue"})


def test_a_refused_key_puts_the_account_in_error(vault_settings: RuntimeSettings, sim: Simulator) -> None:
    async def body(runtime: Runtime) -> tuple[dict[str, Any], dict[str, Any], Any, list[str]]:
        await connect(runtime, "openai-main", "openai", sim.url, "api_key", "sk-wrong-key-0000")
        first = await runtime.submit(_one_call())
        await runtime.wait(first.run_id)
        second = await runtime.submit(_one_call())
        await runtime.wait(second.run_id)
        with runtime.db.engine.connect() as conn:
            row = conn.execute(select(accounts.c.status, accounts.c.last_error)).one()
            types = [e["type"] for e in journal.events_of(conn, first.run_id)]
        return report(runtime.db, first.run_id), report(runtime.db, second.run_id), row, types

    first, second, row, types = with_runtime(vault_settings, body)
    refused = first["outputs"]["ask"]["bindings"]["chat"]["error"]
    assert refused["action"] == "reconnect", refused
    assert row.status == "error"
    assert row.last_error["action"] == "reconnect" and row.last_error["code"] == refused["code"]
    assert "account.error" in types
    again = second["outputs"]["ask"]["bindings"]["chat"]["error"]
    assert again["kind"] == "account" and "is in error" in again["message"], again
    assert len(sim.log.select("openai.chat")) == 1  # the second run never called


def test_a_disabled_account_stays_disabled(vault_settings: RuntimeSettings, sim: Simulator) -> None:
    async def body(runtime: Runtime) -> list[bool]:
        account = await connect(runtime, "openai-main", "openai", sim.url, "api_key", "sk-wrong-key-0000")
        await runtime.writer.write(credentials.set_account_status(account, "disabled"))
        problem = {"code": "openai.invalid_api_key", "message": "refused", "action": "reconnect"}
        changed = await runtime.writer.write(credentials.mark_refused(account, problem))
        with runtime.db.engine.connect() as conn:
            status = conn.execute(select(accounts.c.status)).scalar_one()
        return [changed, status == "disabled"]

    assert with_runtime(vault_settings, body) == [False, True]
