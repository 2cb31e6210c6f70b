"""Runs over real HTTP against `cosmogen serve`: start, list with filters and cursors, the full report,
the event log, and the actions with their 409s."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

from cosmogen.domain.roles import Role
from tests.integration.api.helpers import call, member_with_token
from tests.integration.conftest import EXAMPLES

Served = tuple[str, subprocess.Popen[str]]
FAILING = {
    "cosmogen": "universe/1",
    "name": "failing",
    "nodes": [
        {"id": "a", "type": "begin", "entity": "acct:a", "properties": {"x": 1}},
        {"id": "b", "type": "become", "entity": "acct:a", "transform": {"x": "x / 0"}},
    ],
    "edges": [{"source": "a", "target": "b"}],
}


def chain(n: int) -> dict[str, Any]:
    """A long run (n nodes): long enough to be paused while it runs."""
    nodes: list[dict[str, Any]] = [{"id": "n0", "type": "begin", "entity": "acct:a", "properties": {"x": 0}}]
    nodes += [
        {"id": f"n{i}", "type": "become", "entity": "acct:a", "transform": {"x": "x + 1"}}
        for i in range(1, n)
    ]
    edges = [{"source": f"n{i}", "target": f"n{i + 1}"} for i in range(n - 1)]
    return {"cosmogen": "universe/1", "name": "chain", "nodes": nodes, "edges": edges}


def settle(
    api: str, token: str, run_id: str, until: tuple[str, ...] = (), timeout_s: float = 60
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        status, _, run = call(api + f"/runs/{run_id}", token=token)
        assert status == 200, run
        done = run["status"] in until if until else run["status"] not in ("queued", "running")
        if done:
            return dict(run)
        assert time.monotonic() < deadline, run["status"]
        time.sleep(0.05)


def save(api: str, token: str, document: dict[str, Any]) -> dict[str, Any]:
    status, _, saved = call(api + "/universes", "POST", token=token, body={"document": document})
    assert status == 201, saved
    return dict(saved)


def test_a_run_reports_entities_nodes_events_and_lists(served: Served, tmp_path: Path) -> None:
    url, _ = served
    _, token = member_with_token(tmp_path / "cosmogen-data", "ed@example.com", Role.EDITOR)
    _, viewer = member_with_token(tmp_path / "cosmogen-data", "vi@example.com", Role.VIEWER)
    api = url + "/api/v1"
    vip = save(api, token, json.loads((EXAMPLES / "vip.json").read_text()))
    failing = save(api, token, FAILING)
    status, _, started = call(
        api + "/runs", "POST", token=token,
        body={"universe_id": vip["universe"]["id"], "event": {"name": "deposit", "data": {"n": 1}}},
    )  # fmt: skip
    assert status == 201 and started["status"] in ("queued", "running"), started
    run = settle(api, viewer, started["run_id"])
    assert run["status"] == "succeeded" and run["dry_run"] is True
    assert run["universe"] == "VIP transcend" and run["version_id"] == vip["version"]["id"]
    assert run["entities"] == {} and run["nodes"] and len(run["trace"]) == 4  # bob left through the portal
    assert run["branches"][0]["entities"]["account:bob"] == {
        "balance": 600,
        "tier": "platinum",
        "since": "deposit",
    }
    assert set(run) >= {"effects", "branches", "paradoxes", "waiting", "nodes", "entities"}
    assert "state" not in run and "worker_id" not in run and "lease_expires_at" not in run

    status, _, events = call(api + f"/runs/{started['run_id']}/events", token=viewer)
    assert status == 200 and events[0]["type"] == "run.queued" and events[-1]["type"] == "run.succeeded"
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(seqs)
    later = call(api + f"/runs/{started['run_id']}/events?after_seq={seqs[1]}", token=viewer)[2]
    assert [e["seq"] for e in later] == seqs[2:]

    for _ in range(2):
        status, _, more = call(
            api + "/runs", "POST", token=token, body={"version_id": failing["version"]["id"]}
        )
        assert status == 201, more
        assert settle(api, token, more["run_id"])["status"] == "failed"

    listed = call(api + "/runs", token=viewer)[2]["items"]
    assert len(listed) == 3 and listed[-1]["id"] == started["run_id"]  # newest first
    only_failed = call(api + "/runs?status=failed", token=viewer)[2]["items"]
    assert {r["universe"] for r in only_failed} == {"failing"} and len(only_failed) == 2
    by_universe = call(api + f"/runs?universe_id={vip['universe']['id']}", token=viewer)[2]["items"]
    assert [r["id"] for r in by_universe] == [started["run_id"]]
    first = call(api + "/runs?limit=2", token=viewer)[2]
    second = call(api + f"/runs?limit=2&cursor={first['next_cursor']}", token=viewer)[2]
    assert [r["id"] for r in first["items"] + second["items"]] == [r["id"] for r in listed]
    assert second["next_cursor"] is None
    assert call(api + "/runs?status=exploded", token=viewer)[0] == 422

    # A viewer reads but does not start.
    status, _, body = call(api + "/runs", "POST", token=viewer, body={"universe_id": vip["universe"]["id"]})
    assert status == 403 and body["code"] == "forbidden"


def test_bad_run_requests_are_clear(served: Served, tmp_path: Path) -> None:
    url, _ = served
    _, token = member_with_token(tmp_path / "cosmogen-data", "ed@example.com", Role.EDITOR)
    api = url + "/api/v1"
    vip = save(api, token, json.loads((EXAMPLES / "vip.json").read_text()))
    universe_id = vip["universe"]["id"]
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({}, 422, "invalid"),
        ({"universe_id": universe_id, "version_id": vip["version"]["id"]}, 422, "invalid"),
        ({"universe_id": "nope"}, 404, "not_found"),
        ({"universe_id": universe_id, "entry_node": "ghost"}, 422, "invalid_config"),
        ({"universe_id": universe_id, "binding_overrides": {"nothing": "acc"}}, 422, "invalid_config"),
        ({"universe_id": universe_id, "status": "succeeded"}, 422, "invalid"),
    ]
    for body, status, code in cases:
        got = call(api + "/runs", "POST", token=token, body=body)
        assert (got[0], got[2]["code"]) == (status, code), (body, got)
        assert got[2]["hint"]
    assert call(api + "/runs", token=token)[2]["items"] == []
    status, _, started = call(
        api + "/runs", "POST", token=token, body={"universe_id": universe_id, "entry_node": "deposit"}
    )
    assert status == 201, started
    assert settle(api, token, started["run_id"])["status"] in ("succeeded", "failed")


def test_pause_resume_cancel_retry_rerun(served: Served, tmp_path: Path) -> None:
    url, _ = served
    _, token = member_with_token(tmp_path / "cosmogen-data", "ed@example.com", Role.EDITOR)
    api = url + "/api/v1"
    long = save(api, token, chain(1900))
    # Pause lands at the run's next checkpoint; a run that ends first answers 409 (then try again).
    paused = None
    for _ in range(3):
        run_id = call(api + "/runs", "POST", token=token, body={"universe_id": long["universe"]["id"]})[2][
            "run_id"
        ]
        status, _, answer = call(api + f"/runs/{run_id}/pause", "POST", token=token)
        if status == 200:
            assert answer["status"] in ("running", "paused")
            paused = settle(api, token, run_id, until=("paused",))
            break
        assert status == 409 and answer["code"] == "illegal_transition"
    assert paused is not None, "every run ended before its pause"
    run_id = paused["run_id"]
    status, _, body = call(api + f"/runs/{run_id}/pause", "POST", token=token)
    assert status == 409 and body["code"] == "illegal_transition" and "resume" in body["detail"]
    status, _, resumed = call(api + f"/runs/{run_id}/resume", "POST", token=token)
    assert status == 200 and resumed["status"] in ("queued", "running"), resumed
    done = settle(api, token, run_id)
    assert done["status"] == "succeeded" and done["entities"]
    assert call(api + f"/runs/{run_id}/cancel", "POST", token=token)[0] == 409  # it has ended
    assert call(api + f"/runs/{run_id}/retry", "POST", token=token)[0] == 409  # only failed runs retry

    failing = save(api, token, FAILING)
    failed_id = call(api + "/runs", "POST", token=token, body={"universe_id": failing["universe"]["id"]})[2][
        "run_id"
    ]
    assert settle(api, token, failed_id)["status"] == "failed"
    status, _, retried = call(api + f"/runs/{failed_id}/retry", "POST", token=token)
    assert status == 201, retried
    child = settle(api, token, retried["run_id"])
    assert child["parent_run_id"] == failed_id and child["status"] == "failed"
    status, _, again = call(api + f"/runs/{run_id}/rerun", "POST", token=token)
    assert status == 201
    rerun = settle(api, token, again["run_id"])
    assert rerun["parent_run_id"] == run_id and rerun["status"] == "succeeded"
    assert call(api + "/runs/not-a-run/cancel", "POST", token=token)[0] == 404
