"""API-03 (role matrix) for the resource API, over real HTTP against `cosmogen serve`.

For each role (viewer, editor, admin) in the workspace, fresh objects are made (a universe with two
versions, a failed run, a live launch) and every universes/runs/launches operation is called once, in
the walk's order (tests/reliability/api_walk.py). The observed statuses must equal the checked-in
matrix (api03_role_matrix.json) exactly. Viewer: reads (and validating, which saves nothing), 403 on
every change; editor: changes, 403 on delete; admin: everything. Every 403 changes nothing: the store's
rows are the same before and after the viewer's whole walk and around the editor's deletes.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from tests.integration.api.helpers import call
from tests.integration.api.workspaces import member, table_digest
from tests.integration.conftest import serving
from tests.reliability.api_walk import CALLS, Call, check_covers_spec, request, seed

from cosmogen.domain.roles import Role

MATRIX = Path(__file__).with_name("api03_role_matrix.json")


def keys() -> list[str]:
    out: list[str] = []
    for one in CALLS:
        key = one.operation + one.query.split("=")[0].replace("?", " ?")
        while key in out:
            key += " (again)"
        out.append(key)
    return out


def quiet(api: str, token: str, timeout_s: float = 60) -> None:
    """Until no run of the workspace is queued or running (runs write as they go)."""
    deadline = time.monotonic() + timeout_s
    while any(call(api + f"/runs?status={s}", token=token)[2]["items"] for s in ("queued", "running")):
        assert time.monotonic() < deadline
        time.sleep(0.05)


def walk(url: str, data: Path, owner: str, role: Role, token: str) -> dict[str, int]:
    api = url + "/api/v1"
    name = f"u-{role.value}"
    seeded = seed(api, owner, name=name)
    quiet(api, owner)
    start = table_digest(data)
    observed: dict[str, int] = {}
    confirm = "0.0"
    deletes: list[tuple[str, Call]] = []
    for key, one in zip(keys(), CALLS, strict=True):
        if one.method == "DELETE":
            deletes.append((key, one))
            continue
        observed[key] = request(url, token, one, seeded, name=name)[0]
    quiet(api, owner)
    if role is Role.VIEWER:
        assert table_digest(data) == start, "a viewer's refused calls changed the store"
    before = table_digest(data)
    for key, one in deletes:
        status, body = request(url, token, one, seeded, name=name, confirm=confirm)
        observed[key] = status
        if isinstance(body, dict) and "confirm_token" in body:
            confirm = body["confirm_token"]
    if role is not Role.ADMIN:
        assert table_digest(data) == before, "a refused delete changed the store"
    else:
        gone = call(api + f"/universes/{seeded.universe_id}", token=owner)
        assert gone[0] == 404, (observed, gone)  # deleted
    return observed


def test_api03_role_matrix(tmp_path: Path) -> None:
    data = tmp_path / "cosmogen-data"
    expected: dict[str, dict[str, Any]] = json.loads(MATRIX.read_text())
    with serving(tmp_path) as (url, _):
        check_covers_spec(url)
        _, owner = member(data, "owner@example.com", Role.ADMIN)
        observed: dict[str, dict[str, int]] = {key: {} for key in keys()}
        for role in (Role.VIEWER, Role.EDITOR, Role.ADMIN):
            _, token = member(data, f"{role.value}@example.com", role)
            for key, status in walk(url, data, owner, role, token).items():
                observed[key][role.value] = status
    if observed != expected:
        written = tmp_path / "api03_observed.json"
        written.write_text(json.dumps(observed, indent=1) + "\n")
        raise AssertionError(f"the observed role matrix differs from {MATRIX.name}; see {written}")
    for key, row in expected.items():
        assert row["viewer"] in (200, 403), key  # a viewer is never refused for any other reason
        if row["viewer"] == 200:
            assert key.startswith("GET ") or key == "POST /api/v1/validate", key
        assert row["editor"] == 403 if key.startswith("DELETE") else row["editor"] != 403, key
        assert row["admin"] != 403, key
