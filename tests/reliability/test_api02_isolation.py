"""API-02 (workspace isolation) for the resource API, over real HTTP against `cosmogen serve`.

User A (workspace default) owns a universe with two versions, a failed run and a live launch. User B is
the ADMIN of workspace B (so no role stops B: only the workspace does). B calls every universes/runs/
launches operation in /openapi.json with A's ids: 404 on every one that names an id, and the store's
rows are byte-for-byte the same afterwards (0 mutations). B's lists hold none of A's ids; a universe B
saves under A's universe's name is B's own.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from tests.integration.api.helpers import call
from tests.integration.api.workspaces import member, new_workspace, table_digest
from tests.integration.conftest import serving
from tests.reliability.api_walk import CALLS, check_covers_spec, request, seed

from cosmogen.domain.roles import Role


def test_api02_another_workspace_sees_404_everywhere_and_changes_nothing(tmp_path: Path) -> None:
    data = tmp_path / "cosmogen-data"
    with serving(tmp_path) as (url, _):
        api = url + "/api/v1"
        check_covers_spec(url)
        _, token_a = member(data, "a@example.com", Role.ADMIN)
        workspace_b = new_workspace(data, "B")
        _, token_b = member(data, "b@example.com", Role.ADMIN, workspace_b)
        a = seed(api, token_a)
        b = seed(api, token_b, name="b-universe")  # B has objects of its own: lists are not trivially empty
        # A's universe has a live launch, so A gets no token either; B's DELETE with one answers 404.
        refused = call(api + f"/universes/{a.universe_id}", "DELETE", token=token_a)[2]
        assert refused["code"] == "universe_busy"
        confirm_a = "9999999999." + "0" * 64

        before = table_digest(data)
        walked = 0
        for one in CALLS:
            names_an_id = "{" in one.path or any(
                isinstance(v, str) and "{" in v for v in (one.body or {}).values()
            )
            names_an_id = names_an_id or "{" in one.query
            status, body = request(url, token_b, one, a, name="failing", confirm=confirm_a)
            if names_an_id:
                assert status == 404, (one.operation, one.query, status, body)
                assert body["code"] == "not_found" and a.universe_id not in json.dumps(body)
                walked += 1
            else:
                text = json.dumps(body)
                leaked = [i for i in a.ids() if i in text]
                assert not leaked, (one.operation, leaked)
        assert walked >= 30
        # Only B's rows may change, and only through the calls that name no id (B's own saves).
        after = table_digest(data)
        changed = {t for t in before if before[t] != after[t]}
        assert changed <= {"universes", "universe_versions", "idempotency_keys"}, changed

        # None of the changes touched A's objects: A reads everything as before.
        assert call(api + f"/universes/{a.universe_id}", token=token_a)[2]["deployment_status"] == "live"
        versions = call(api + f"/universes/{a.universe_id}/versions", token=token_a)[2]
        assert [v["id"] for v in versions] == [a.version_1, a.version_2]
        assert call(api + f"/runs/{a.run_id}", token=token_a)[2]["status"] == "failed"
        assert call(api + f"/launches/{a.launch_id}", token=token_a)[2]["status"] == "live"
        assert [r["id"] for r in call(api + "/runs", token=token_a)[2]["items"]] == [a.run_id]

        # B's lists: B's objects, none of A's.
        for path in ("/universes", "/runs", "/launches", f"/runs?universe_id={a.universe_id}",
                     f"/launches?universe_id={a.universe_id}", f"/runs?launch_id={a.launch_id}"):  # fmt: skip
            status, _, page = call(api + path, token=token_b)
            assert status == 200
            assert not a.ids() & {item["id"] for item in page["items"]}, path
        mine = {u["id"] for u in call(api + "/universes", token=token_b)[2]["items"]}
        assert b.universe_id in mine and a.universe_id not in mine
        # The universe B saved under A's universe's name is B's: A's still has its 2 versions.
        saved_by_b = [
            u for u in call(api + "/universes", token=token_b)[2]["items"] if u["name"] == "failing"
        ]
        assert len(saved_by_b) == 1 and saved_by_b[0]["id"] != a.universe_id


def test_api02_a_run_uses_only_its_own_workspace_accounts(tmp_path: Path) -> None:
    """Serve's sandbox gives workspace default its accounts. The same universe, naming `sandbox-openai`,
    runs through it in default; in workspace B, which has no such account, the binding is refused before
    any call: a run never borrows another workspace's credentials."""
    data = tmp_path / "cosmogen-data"
    with serving(tmp_path) as (url, _):
        api = url + "/api/v1"
        _, token_a = member(data, "a@example.com", Role.EDITOR)
        workspace_b = new_workspace(data, "B")
        _, token_b = member(data, "b@example.com", Role.EDITOR, workspace_b)
        outcomes = {}
        for who, token in (("a", token_a), ("b", token_b)):
            saved = call(api + "/universes", "POST", token=token, body={"document": SANDBOX_UNIVERSE})[2]
            body = {"universe_id": saved["universe"]["id"], "dry_run": False}
            status, _, run = call(api + "/runs", "POST", token=token, body=body)
            assert status == 201, run
            outcomes[who] = settle_report(api, token, run["run_id"])
        chat_a = outcomes["a"]["outputs"]["ask"]["bindings"]["chat"]
        assert outcomes["a"]["status"] == "succeeded" and chat_a["output"]["text"], outcomes["a"]
        chat_b = outcomes["b"]["outputs"]["ask"]["bindings"]["chat"]
        assert chat_b["error"]["kind"] == "account", chat_b
        assert not outcomes["b"]["effects"], outcomes["b"]["effects"]  # no call was made for B


SANDBOX_UNIVERSE = {
    "cosmogen": "universe/1",
    "name": "sandbox demo",
    "nodes": [
        {"id": "b", "type": "begin", "entity": "post:1", "properties": {"topic": "launch"}},
        {"id": "ask", "type": "become", "entity": "post:1", "transform": {"asked": "true"}},
    ],
    "edges": [{"source": "b", "target": "ask"}],
    "bindings": [
        {
            "id": "chat",
            "node": "ask",
            "kind": "provider",
            "capability": "openai.chat",
            "account": "sandbox-openai",
            "settings": {"prompt": "Write about {{ topic }}", "max_tokens": 20},
        }
    ],
}


def settle_report(api: str, token: str, run_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while True:
        status, _, run = call(api + f"/runs/{run_id}", token=token)
        assert status == 200, run
        if run["status"] not in ("queued", "running"):
            return dict(run)
        assert time.monotonic() < deadline
        time.sleep(0.05)
