"""`cosmogen accounts` end to end, as a user would: add an account with its key on stdin, list it (no
secret shown), run a universe whose provider binding calls the provider simulator through it, and the
refusals (a duplicate name, an unknown provider, a removed account)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from cosmogen.testing.simulator import DEFAULT_API_KEY, Simulator, ThreadedSimulator

from .conftest import CLI


@pytest.fixture
def sim(monkeypatch: pytest.MonkeyPatch) -> Iterator[Simulator]:
    monkeypatch.setenv("COSMOGEN_EGRESS_ALLOW_NETWORKS", "127.0.0.1/32")  # the simulator, on purpose
    with ThreadedSimulator() as server:
        yield server


def universe(tmp_path: Path) -> str:
    path = tmp_path / "ask.json"
    path.write_text(
        json.dumps(
            {
                "cosmogen": "universe/1",
                "name": "ask",
                "nodes": [
                    {"id": "b", "type": "begin", "entity": "q:1", "properties": {"topic": "tides"}},
                    {"id": "ask", "type": "become", "entity": "q:1", "transform": {"asked": "true"}},
                ],
                "edges": [{"source": "b", "target": "ask"}],
                "bindings": [
                    {
                        "id": "chat",
                        "node": "ask",
                        "kind": "provider",
                        "capability": "openai.chat",
                        "account": "openai-main",
                        "settings": {"prompt": "Explain {{ topic }}"},
                    }
                ],
            }
        )
    )
    return str(path)


def test_add_list_run_remove(cosmogen: CLI, sim: Simulator, tmp_path: Path) -> None:
    added = cosmogen(
        "accounts", "add", "openai-main", "--provider", "openai", "--base-url", sim.url, "--secret-stdin",
        stdin=DEFAULT_API_KEY + "\n",
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    assert "verified by a test call" in added.stdout and "not verified" not in added.stdout
    assert DEFAULT_API_KEY not in added.stdout + added.stderr
    [probe] = sim.log.select("openai.models")  # the cheap read, with the key
    assert probe.credential == DEFAULT_API_KEY
    listed = cosmogen("accounts", "list", "--json")
    [account] = json.loads(listed.stdout)
    assert (account["name"], account["status"], account["secret_fields"]) == (
        "openai-main",
        "connected",
        ["api_key"],
    )
    assert DEFAULT_API_KEY not in listed.stdout

    ran = cosmogen("run", universe(tmp_path), "--json")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    report = json.loads(ran.stdout)
    assert report["status"] == "succeeded"
    assert report["outputs"]["ask"]["bindings"]["chat"]["output"]["text"]
    [call] = sim.log.select("openai.chat")
    assert call.headers["Authorization"] == f"Bearer {DEFAULT_API_KEY}"
    assert DEFAULT_API_KEY not in ran.stdout

    again = cosmogen("accounts", "add", "openai-main", "--provider", "openai", "--secret-stdin", stdin="k\n")
    assert again.returncode == 2 and "already exists" in again.stderr
    unknown = cosmogen("accounts", "add", "x1", "--provider", "gmail", "--secret-stdin", stdin="k\n")
    assert unknown.returncode == 2 and "no provider 'gmail'" in unknown.stderr

    assert cosmogen("accounts", "remove", "openai-main").returncode == 0
    failed = cosmogen("run", universe(tmp_path), "--json")
    assert json.loads(failed.stdout)["status"] == "failed"
    assert "no account named 'openai-main'" in failed.stdout


def test_a_refused_key_is_saved_as_error_with_what_to_do(cosmogen: CLI, sim: Simulator) -> None:
    added = cosmogen(
        "accounts", "add", "claude", "--provider", "anthropic", "--base-url", sim.url, "--secret-stdin",
        stdin="sk-ant-not-a-real-key\n",
    )  # fmt: skip
    assert added.returncode == 1
    assert "status error" in added.stderr and "reconnect" in added.stderr
    assert "sk-ant-not-a-real-key" not in added.stderr + added.stdout
    [account] = json.loads(cosmogen("accounts", "list", "--json").stdout)
    assert (account["status"], account["verified"]) == ("error", False)  # nothing saved was lost
    skipped = cosmogen(
        "accounts", "add", "claude2", "--provider", "anthropic", "--base-url", sim.url,
        "--secret-stdin", "--no-test", stdin="whatever\n",
    )  # fmt: skip
    assert skipped.returncode == 0 and "not verified" in skipped.stdout


def test_disable_stops_use_and_enable_checks_the_key_again(
    cosmogen: CLI, sim: Simulator, tmp_path: Path
) -> None:
    added = cosmogen(
        "accounts", "add", "openai-main", "--provider", "openai", "--base-url", sim.url, "--secret-stdin",
        stdin=DEFAULT_API_KEY + "\n",
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    disabled = cosmogen("accounts", "disable", "openai-main")
    assert disabled.returncode == 0, disabled.stderr
    assert cosmogen("accounts", "disable", "openai-main").returncode == 2  # already disabled: says so
    ran = json.loads(cosmogen("run", universe(tmp_path), "--json").stdout)
    chat = ran["outputs"]["ask"]["bindings"]["chat"]
    assert "is disabled" in chat["error"]["message"], chat
    calls = len(sim.log.select("openai.chat"))
    assert calls == 0  # a disabled account is never called

    probes = len(sim.log.select("openai.models"))
    enabled = cosmogen("accounts", "enable", "openai-main")
    assert enabled.returncode == 0, enabled.stderr
    assert "connected" in enabled.stdout
    assert len(sim.log.select("openai.models")) == probes + 1  # the key was checked again
    assert cosmogen("accounts", "enable", "openai-main").returncode == 2  # not disabled: nothing to do
    again = json.loads(cosmogen("run", universe(tmp_path), "--json").stdout)
    assert again["status"] == "succeeded", again
    assert again["outputs"]["ask"]["bindings"]["chat"].get("error") is None

    assert cosmogen("accounts", "disable", "nobody").returncode == 2
