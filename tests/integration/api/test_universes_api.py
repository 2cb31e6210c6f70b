"""Universes over real HTTP against `cosmogen serve`: save, list with cursors, versions, diff, active
version, archive, the two-step delete, validate, import and export."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

from cosmogen.domain.roles import Role
from tests.integration.api.helpers import call, member_with_token
from tests.integration.api.workspaces import member
from tests.integration.conftest import EXAMPLES, serving

Served = tuple[str, subprocess.Popen[str]]


def example(name: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((EXAMPLES / name).read_text())
    return document


def wait_settled(api: str, token: str, run_id: str, timeout_s: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        status, _, run = call(api + f"/runs/{run_id}", token=token)
        assert status == 200, run
        if run["status"] not in ("queued", "running") or time.monotonic() > deadline:
            return dict(run)
        time.sleep(0.05)


def test_save_list_versions_diff_export(served: Served, tmp_path: Path) -> None:
    url, _ = served
    _, token = member_with_token(tmp_path / "cosmogen-data", "ed@example.com", Role.EDITOR)
    api = url + "/api/v1"
    document = example("vip.json")
    status, _, first = call(api + "/universes", "POST", token=token, body={"document": document})
    assert status == 201, first
    universe_id = first["universe"]["id"]
    assert first["version"]["number"] == 1 and first["created"] is True
    assert first["universe"]["active_version_id"] == first["version"]["id"]
    # The same document again is the same version, not a duplicate.
    status, _, again = call(api + "/universes", "POST", token=token, body={"document": document})
    assert status == 201 and again["created"] is False and again["version"]["id"] == first["version"]["id"]

    changed = json.loads(json.dumps(document))
    changed["nodes"][1]["transform"]["balance"] = "balance + 200"
    changed["nodes"].append({"id": "audit", "type": "become", "entity": "account:bob", "transform": {}})
    changed["edges"].append({"source": "fee", "target": "audit"})
    status, _, second = call(
        api + f"/universes/{universe_id}/versions", "POST", token=token, body={"document": changed}
    )
    assert status == 201 and second["version"]["number"] == 2, second
    # A new version waits to be made active.
    assert second["universe"]["active_version_id"] == first["version"]["id"]

    status, _, versions = call(api + f"/universes/{universe_id}/versions", token=token)
    assert status == 200 and [v["number"] for v in versions] == [1, 2]
    assert "document" not in versions[0]
    v1, v2 = versions[0]["id"], versions[1]["id"]
    status, _, checked = call(api + f"/versions/{v2}/validation", token=token)
    assert status == 200 and checked["valid"] is True and checked["order"][-1] == "audit"
    status, _, detail = call(api + f"/versions/{v2}", token=token)
    assert status == 200 and detail["document"]["nodes"][-1]["id"] == "audit"

    status, _, delta = call(api + f"/universes/{universe_id}/diff?from={v1}&to={v2}", token=token)
    assert status == 200, delta
    changes = {(c["op"], c["path"]) for c in delta["changes"]}
    assert ("change", "/nodes/deposit/transform/balance") in changes
    assert ("add", "/nodes/audit") in changes
    assert ("add", "/edges/fee->audit") in changes
    assert len(delta["changes"]) == 3  # nothing else reported: nodes are matched by id, not position

    status, _, exported = call(api + f"/universes/{universe_id}/export", token=token)
    assert status == 200 and exported["nodes"][1]["transform"]["balance"] == "balance + 100"
    status, _, active = call(
        api + f"/universes/{universe_id}/active", "PUT", token=token, body={"version_id": v2}
    )
    assert status == 200 and active["active_version_id"] == v2
    status, _, exported = call(api + f"/universes/{universe_id}/export", token=token)
    assert exported["nodes"][1]["transform"]["balance"] == "balance + 200"


def test_invalid_documents_are_422_with_diagnostics_and_nothing_is_saved(
    served: Served, tmp_path: Path
) -> None:
    url, _ = served
    _, token = member_with_token(tmp_path / "cosmogen-data", "ed@example.com", Role.EDITOR)
    api = url + "/api/v1"
    broken = example("vip.json")
    broken["edges"].append({"source": "fee", "target": "open"})  # a cycle
    status, headers, body = call(api + "/universes", "POST", token=token, body={"document": broken})
    assert status == 422 and headers["content-type"] == "application/problem+json"
    assert body["code"] == "invalid_universe" and "cycle" in {d["code"] for d in body["diagnostics"]}
    assert body["hint"]
    status, _, body = call(api + "/universes", "POST", token=token, body={"document": {"nodes": 3}})
    assert status == 422 and body["diagnostics"]
    assert call(api + "/universes", token=token)[2]["items"] == []

    # /validate says the same without saving anything.
    status, _, report = call(api + "/validate", "POST", token=token, body={"document": broken})
    assert status == 200 and report["valid"] is False
    status, _, report = call(api + "/validate", "POST", token=token, body={"document": example("vip.json")})
    assert status == 200 and report["valid"] is True and report["order"][0] == "open"
    assert call(api + "/universes", token=token)[2]["items"] == []


def test_paging_is_clamped_and_cursors_walk_every_universe_once(served: Served, tmp_path: Path) -> None:
    url, _ = served
    _, token = member_with_token(tmp_path / "cosmogen-data", "ed@example.com", Role.EDITOR)
    api = url + "/api/v1"
    names = [f"u{i:02d}" for i in range(7)]
    for name in names:
        document = {**example("vip.json"), "name": name}
        assert call(api + "/universes", "POST", token=token, body={"document": document})[0] == 201
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        query = f"?limit=3&cursor={cursor}" if cursor else "?limit=3"
        status, _, page = call(api + "/universes" + query, token=token)
        assert status == 200 and len(page["items"]) <= 3
        seen += [u["name"] for u in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == names and pages == 3
    status, _, page = call(api + "/universes?limit=1000000", token=token)
    assert status == 200 and len(page["items"]) == 7 and page["next_cursor"] is None
    status, _, body = call(api + "/universes?cursor=not-ours", token=token)
    assert status == 400 and body["code"] == "invalid_cursor"


def test_archive_and_two_step_delete(served: Served, tmp_path: Path) -> None:
    url, _ = served
    data = tmp_path / "cosmogen-data"
    _, editor = member_with_token(data, "ed@example.com", Role.EDITOR)
    _, admin = member_with_token(data, "ad@example.com", Role.ADMIN)
    api = url + "/api/v1"
    saved = call(api + "/universes", "POST", token=editor, body={"document": example("vip.json")})[2]
    universe_id = saved["universe"]["id"]
    run = call(api + "/runs", "POST", token=editor, body={"universe_id": universe_id, "dry_run": True})
    assert run[0] == 201, run
    wait_settled(api, editor, run[2]["run_id"])

    # The editor may archive but not delete.
    status, _, archived = call(api + f"/universes/{universe_id}/archive", "POST", token=editor)
    assert status == 200 and archived["deployment_status"] == "archived"
    status, _, body = call(
        api + f"/universes/{universe_id}/versions",
        "POST",
        token=editor,
        body={"document": example("vip.json")},
    )
    assert status == 409 and body["code"] == "universe_archived"
    assert call(api + f"/universes/{universe_id}", "DELETE", token=editor)[0] == 403

    status, _, first = call(api + f"/universes/{universe_id}", "DELETE", token=admin)
    assert status == 409 and first["code"] == "confirmation_required" and first["confirm_token"]
    assert call(api + f"/universes/{universe_id}", token=admin)[0] == 200  # not gone yet
    forged = first["confirm_token"][:-4] + "0000"
    status, _, body = call(api + f"/universes/{universe_id}?confirm={forged}", "DELETE", token=admin)
    assert status == 409 and body["code"] == "confirmation_required"
    # Another universe's token does not delete this one.
    other = call(api + "/universes", "POST", token=editor, body={"document": example("game.json")})[2]
    other_token = call(api + f"/universes/{other['universe']['id']}", "DELETE", token=admin)[2][
        "confirm_token"
    ]
    assert call(api + f"/universes/{universe_id}?confirm={other_token}", "DELETE", token=admin)[0] == 409

    status, _, gone = call(
        api + f"/universes/{universe_id}?confirm={first['confirm_token']}", "DELETE", token=admin
    )
    assert status == 200 and gone == {"deleted": universe_id, "runs_deleted": 1}
    assert call(api + f"/universes/{universe_id}", token=admin)[0] == 404
    assert call(api + f"/runs/{run[2]['run_id']}", token=admin)[0] == 404
    assert call(api + f"/universes/{other['universe']['id']}", token=admin)[0] == 200


def test_import_converts_a_legacy_universe(served: Served, tmp_path: Path) -> None:
    url, _ = served
    _, token = member_with_token(tmp_path / "cosmogen-data", "ed@example.com", Role.EDITOR)
    legacy_files = sorted((EXAMPLES / "legacy").glob("*.json"))
    assert legacy_files
    legacy = json.loads(legacy_files[0].read_text())
    status, _, saved = call(url + "/api/v1/universes/import", "POST", token=token, body={"document": legacy})
    assert status == 201, saved
    exported = call(url + f"/api/v1/universes/{saved['universe']['id']}/export", token=token)[2]
    assert exported["cosmogen"] == "universe/1"


def test_on_postgresql_runs_page_and_delete_cascades(tmp_path: Path, clean_pg_url: str) -> None:
    """The same routes on PostgreSQL (serve runs its own worker): cursors over runs, and the delete that
    removes runs with their events, effects and node results."""
    with serving(tmp_path, "--database-url", clean_pg_url) as (url, _):
        api = url + "/api/v1"
        _, token = member(clean_pg_url, "ad@example.com", Role.ADMIN)
        saved = call(api + "/universes", "POST", token=token, body={"document": example("vip.json")})[2]
        universe_id = saved["universe"]["id"]
        started = []
        for _ in range(3):
            status, _, run = call(api + "/runs", "POST", token=token, body={"universe_id": universe_id})
            assert status == 201, run
            started.append(run["run_id"])
        for run_id in started:
            assert wait_settled(api, token, run_id)["status"] == "succeeded"
        first = call(api + "/runs?limit=2", token=token)[2]
        second = call(api + f"/runs?limit=2&cursor={first['next_cursor']}", token=token)[2]
        assert [r["id"] for r in first["items"] + second["items"]] == started[::-1]
        confirm = call(api + f"/universes/{universe_id}", "DELETE", token=token)[2]["confirm_token"]
        status, _, gone = call(api + f"/universes/{universe_id}?confirm={confirm}", "DELETE", token=token)
        assert status == 200 and gone["runs_deleted"] == 3
        assert call(api + "/runs", token=token)[2]["items"] == []
        assert call(api + "/universes", token=token)[2]["items"] == []
