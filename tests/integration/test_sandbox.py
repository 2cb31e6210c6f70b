"""`cosmogen serve` on a fresh data directory offers sandbox accounts on the provider simulator: a
universe with OpenAI and Slack bindings runs offline through them, they are labelled as the simulator, and
they keep working across a restart (new simulator, new tokens) while the user's own accounts are left
alone. Real processes, the real CLI, the simulator over TCP."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from tests.integration.conftest import CLI, serving

UNIVERSE = {
    "cosmogen": "universe/1",
    "name": "sandbox demo",
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
    "bindings": [
        {
            "id": "chat",
            "node": "ask",
            "kind": "provider",
            "capability": "openai.chat",
            "account": "sandbox-openai",
            "settings": {"prompt": "Write about {{ topic }}", "max_tokens": 20},
        },
        {
            "id": "post",
            "node": "tell",
            "kind": "provider",
            "capability": "slack.post_message",
            "account": "sandbox-slack",
            "settings": {"channel": "C0SIM00001", "text": "{{ answer }}"},
        },
    ],
}


def _run_through_serve(cosmogen: CLI, universe: Path) -> dict[str, Any]:
    detached = json.loads(cosmogen("run", str(universe), "--detach", "--json").stdout)
    deadline = time.monotonic() + 60
    while True:
        shown = json.loads(cosmogen("runs", "show", detached["run_id"], "--json").stdout)
        if shown["status"] in ("succeeded", "failed") or time.monotonic() > deadline:
            return dict(shown)
        time.sleep(0.2)


def test_fresh_serve_offers_sandbox_accounts_that_run_offline(tmp_path: Path, cosmogen: CLI) -> None:
    universe = tmp_path / "demo.json"
    universe.write_text(json.dumps(UNIVERSE))
    with serving(tmp_path):
        first = _run_through_serve(cosmogen, universe)
    assert first["status"] == "succeeded", first
    outputs = first["outputs"]
    assert outputs["ask"]["bindings"]["chat"]["account"] == "sandbox-openai"
    assert outputs["ask"]["bindings"]["chat"]["output"]["text"]
    assert outputs["tell"]["bindings"]["post"]["output"]["channel"] == "C0SIM00001"
    log = (tmp_path / "serve.log").read_text()
    assert "sandbox: provider simulator on http://127.0.0.1:" in log
    assert "not the real providers" in log

    listed = {a["name"]: a for a in json.loads(cosmogen("accounts", "list", "--json").stdout)}
    sandbox = {name: a for name, a in listed.items() if name.startswith("sandbox-")}
    assert set(sandbox) == {
        f"sandbox-{p}" for p in ("openai", "anthropic", "slack", "x", "instagram", "http")
    }
    for account in sandbox.values():
        assert account["tier"] == "sandbox", account
        assert account["status"] == "connected", account

    # The user's own account and a removed sandbox account survive a restart as they were.
    added = cosmogen("accounts", "add", "mine", "--provider", "http", "--auth", "none",
                     "--base-url", "https://example.com")  # fmt: skip
    assert added.returncode == 0, added.stderr
    removed = cosmogen("accounts", "remove", "sandbox-x")
    assert removed.returncode == 0, removed.stderr
    with serving(tmp_path):
        # A new simulator on another port, with new tokens: the sandbox accounts follow it.
        second = _run_through_serve(cosmogen, universe)
    assert second["status"] == "succeeded", second
    after = {a["name"]: a for a in json.loads(cosmogen("accounts", "list", "--json").stdout)}
    assert "sandbox-x" not in after
    assert after["mine"]["base_url"] == "https://example.com"
    assert after["mine"]["tier"] == "sandbox"  # the default tier of an added account, untouched


def test_no_sandbox_starts_no_simulator_and_adds_no_account(tmp_path: Path, cosmogen: CLI) -> None:
    with serving(tmp_path, "--no-sandbox"):
        pass
    assert "sandbox:" not in (tmp_path / "serve.log").read_text()
    assert json.loads(cosmogen("accounts", "list", "--json").stdout) == []
