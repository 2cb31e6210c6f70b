"""Every example universe runs through the real CLI and ends in the state its story promises."""

import json
from typing import Any

import pytest

from .conftest import CLI, EXAMPLES

EXPECTED: dict[str, dict[str, Any]] = {
    "banking.json": {
        "args": [],
        "entities": {"account:alice": {"balance": 0, "tier": "gold"}},
        "branches": {},
        "paradoxes": [],
        "skipped": ["vip"],
    },
    "onboarding.json": {
        "args": ["--event", "signup", "--data", '{"plan": "pro"}'],
        "entities": {
            "user:ada": {
                "email": "ada@example.org",
                "status": "active",
                "step": 2,
                "tags": ["welcomed"],
                "plan": "pro",
            }
        },
        "branches": {},
        "paradoxes": [],
        "skipped": [],
    },
    "inventory.json": {
        "args": [],
        "entities": {
            "product:widget": {"stock": 11, "reorder_at": 3, "reorders": 1, "price": 2.5, "revenue": 10.0}
        },
        "branches": {},
        "paradoxes": [],
        "skipped": ["second-sale"],
    },
    "game.json": {
        "args": [],
        "entities": {"player:hero": {"hp": 32, "level": 2, "xp": 15}},
        "branches": {},
        "paradoxes": [],
        "skipped": ["hero-dies"],
    },
    "vip.json": {
        "args": [],
        "entities": {},
        "branches": {
            "universe:vip": {"account:bob": {"balance": 600, "tier": "platinum", "since": "manual"}}
        },
        "paradoxes": [],
        "skipped": ["fee"],
    },
    "paradox.json": {
        "args": [],
        "entities": {"account:carol": {"balance": 0, "flagged": True}},
        "branches": {"universe:main:repair:overdraft": {}, "universe:main:explore:overdraft": {}},
        "paradoxes": [("law", "withdraw"), ("cease", "overdraft")],
        "skipped": [],
    },
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_runs_to_its_expected_end_state(cosmogen: CLI, name: str) -> None:
    expected = EXPECTED[name]
    done = cosmogen("run", str(EXAMPLES / name), "--json", *expected["args"])
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["status"] == "succeeded"
    assert result["entities"] == expected["entities"]
    assert {b["universe"]: b["entities"] for b in result["branches"]} == expected["branches"]
    assert [(p["kind"], p["node"]) for p in result["paradoxes"]] == expected["paradoxes"]
    skipped = sorted(k for k, v in result["nodes"].items() if v["status"] == "skipped")
    assert skipped == sorted(expected["skipped"])


def test_every_example_is_covered_and_every_operator_is_used() -> None:
    files = sorted(p.name for p in EXAMPLES.glob("*.json"))
    assert files == sorted(EXPECTED)
    used = {n["type"] for f in files for n in json.loads((EXAMPLES / f).read_text())["nodes"]}
    assert used == {"begin", "become", "cease", "transcend", "resolve", "law"}
    actions = {
        n.get("action")
        for f in files
        for n in json.loads((EXAMPLES / f).read_text())["nodes"]
        if n["type"] == "cease"
    }
    assert actions == {"terminate", "repair", "fork"}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_validates_clean(cosmogen: CLI, name: str) -> None:
    done = cosmogen("validate", str(EXAMPLES / name), "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["valid"] is True
    assert report["diagnostics"] == []
