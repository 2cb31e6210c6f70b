"""Launches over real HTTP against `cosmogen serve`: create (dry run by default, live or draft, triggers),
list, read, steer (pause, resume, stop, archive) and start runs of a live launch by hand."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from cosmogen.domain.roles import Role
from tests.integration.api.helpers import call, member_with_token
from tests.integration.api.test_runs_api import settle
from tests.integration.conftest import EXAMPLES

Served = tuple[str, subprocess.Popen[str]]


def saved(api: str, token: str, name: str = "vip.json") -> dict[str, Any]:
    document = json.loads((EXAMPLES / name).read_text())
    status, _, body = call(api + "/universes", "POST", token=token, body={"document": document})
    assert status == 201, body
    return dict(body)


def test_launch_lifecycle_and_manual_runs(served: Served, tmp_path: Path) -> None:
    url, _ = served
    _, token = member_with_token(tmp_path / "cosmogen-data", "ed@example.com", Role.EDITOR)
    _, viewer = member_with_token(tmp_path / "cosmogen-data", "vi@example.com", Role.VIEWER)
    api = url + "/api/v1"
    universe = saved(api, token)
    universe_id = universe["universe"]["id"]
    triggers = [{"kind": "manual"}, {"kind": "interval", "every_s": 3600}]
    body = {"universe_id": universe_id, "triggers": triggers}
    status, _, launch = call(api + "/launches", "POST", token=token, body=body)
    assert status == 201, launch
    assert launch["status"] == "live" and launch["dry_run"] is True
    assert launch["version_id"] == universe["version"]["id"]
    assert {t["kind"] for t in launch["triggers"]} == {"manual", "interval"}
    interval = next(t for t in launch["triggers"] if t["kind"] == "interval")
    assert interval["next_fire_at"] is not None
    assert launch["webhook_paths"] == {} and launch["webhook_secrets"] == {}
    launch_id = launch["id"]
    assert call(api + f"/universes/{universe_id}", token=viewer)[2]["deployment_status"] == "live"

    status, _, run = call(
        api + f"/launches/{launch_id}/runs", "POST", token=token, body={"event": {"name": "go"}}
    )
    assert status == 201, run
    report = settle(api, viewer, run["run_id"])
    assert report["status"] == "succeeded" and report["launch_id"] == launch_id and report["dry_run"] is True
    assert [r["id"] for r in call(api + f"/runs?launch_id={launch_id}", token=viewer)[2]["items"]] == [
        run["run_id"]
    ]

    status, _, paused = call(api + f"/launches/{launch_id}/pause", "POST", token=token)
    assert status == 200 and paused["status"] == "paused"
    assert all(t["next_fire_at"] is None for t in paused["triggers"])
    status, _, body = call(api + f"/launches/{launch_id}/runs", "POST", token=token, body={})
    assert status == 409 and body["code"] == "launch_not_live"
    status, _, body = call(api + f"/launches/{launch_id}/pause", "POST", token=token)
    assert status == 409 and body["code"] == "illegal_transition"
    assert call(api + f"/launches/{launch_id}/resume", "POST", token=token)[2]["status"] == "live"
    status, _, stopped = call(api + f"/launches/{launch_id}/stop", "POST", token=token)
    assert (
        status == 200
        and stopped["status"] == "draft"
        and stopped["stopped_at"]
        and stopped["cancelled_runs"] == []
    )
    assert call(api + f"/launches/{launch_id}/archive", "POST", token=token)[2]["status"] == "archived"
    assert call(api + f"/launches/{launch_id}/go-live", "POST", token=token)[0] == 409

    listed = call(api + "/launches", token=viewer)[2]
    assert [one["id"] for one in listed["items"]] == [launch_id] and listed["next_cursor"] is None
    assert call(api + "/launches?status=live", token=viewer)[2]["items"] == []
    assert call(api + f"/launches/{launch_id}", token=viewer)[2]["status"] == "archived"
    assert call(api + f"/launches/{launch_id}/pause", "POST", token=viewer)[0] == 403


def test_draft_real_and_webhook_launches(served: Served, tmp_path: Path) -> None:
    url, _ = served
    _, token = member_with_token(tmp_path / "cosmogen-data", "ed@example.com", Role.EDITOR)
    api = url + "/api/v1"
    universe = saved(api, token)
    status, _, draft = call(
        api + "/launches", "POST", token=token,
        body={"version_id": universe["version"]["id"], "live": False, "dry_run": False,
              "triggers": [{"kind": "webhook", "signed": False}]},
    )  # fmt: skip
    assert status == 201, draft
    assert draft["status"] == "draft" and draft["dry_run"] is False
    ((_trigger_id, path),) = draft["webhook_paths"].items()
    assert path.startswith("/hooks/") and len(path) > 40
    # Shown once: reading the launch again shows the trigger, never its token.
    again = call(api + f"/launches/{draft['id']}", token=token)[2]
    assert path.split("/")[-1] not in json.dumps(again) and "webhook_paths" not in again
    status, _, signed = call(
        api + "/launches", "POST", token=token,
        body={"universe_id": universe["universe"]["id"], "triggers": [{"kind": "webhook"}]},
    )  # fmt: skip
    assert status == 201 and len(signed["webhook_secrets"]) == 1, signed
    secret = next(iter(signed["webhook_secrets"].values()))
    assert secret not in json.dumps(call(api + f"/launches/{signed['id']}", token=token)[2])

    bad: list[tuple[dict[str, Any], int, str]] = [
        (
            {"universe_id": universe["universe"]["id"], "triggers": [{"kind": "sometimes"}]},
            422,
            "invalid_config",
        ),
        ({"universe_id": universe["universe"]["id"], "entry_node": "ghost"}, 422, "invalid_config"),
        ({"universe_id": universe["universe"]["id"], "status": "live"}, 422, "invalid"),
        ({"universe_id": "missing"}, 404, "not_found"),
        ({}, 422, "invalid"),
    ]
    for body, status_code, code in bad:
        got = call(api + "/launches", "POST", token=token, body=body)
        assert (got[0], got[2]["code"]) == (status_code, code), (body, got)
    assert len(call(api + "/launches", token=token)[2]["items"]) == 2
