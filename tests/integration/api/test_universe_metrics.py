"""`GET /api/v1/universes/{id}/metrics` over real HTTP against `cosmogen serve` (sandbox accounts on the
provider simulator): a live launch's runs give progress, velocity over the window, the error rate of their
calls (one call refused by the egress guard) and uptime since the launch; viewers may read it, another
workspace gets 404, a bad window 422. On SQLite and on PostgreSQL (serve is its own worker there)."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from cosmogen.domain.roles import Role
from tests.integration.api.helpers import call
from tests.integration.api.stream_client import member
from tests.integration.api.test_runs_api import settle
from tests.integration.conftest import serving
from tests.integration.test_sandbox import UNIVERSE


@pytest.fixture(params=["sqlite", "postgresql"])
def served_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, Path | str]]:
    """(serve's URL, where its store is: the SQLite data dir or the PostgreSQL URL)."""
    if request.param == "sqlite":
        with serving(tmp_path) as (url, _):
            yield url, tmp_path / "cosmogen-data"
    else:
        pg_url = request.getfixturevalue("clean_pg_url")
        with serving(tmp_path, "--database-url", pg_url, "--sandbox") as (url, _):
            yield url, pg_url


def _document() -> dict[str, Any]:
    """The sandbox demo (OpenAI, then Slack) and a fourth node whose call the egress guard refuses."""
    document: dict[str, Any] = copy.deepcopy(UNIVERSE)
    document["name"] = "live metrics"
    document["nodes"].append({"id": "probe", "type": "become", "entity": "post:1", "transform": {"p": "1"}})
    document["edges"].append({"source": "tell", "target": "probe"})
    document["bindings"].append(
        {"id": "meta", "node": "probe", "request": {"url": "http://169.254.169.254/latest", "method": "GET"},
         "on_error": "continue"}
    )  # fmt: skip
    return document


def test_live_metrics_of_a_launched_universe(served_store: tuple[str, Path | str]) -> None:
    url, store = served_store
    editor = member(store, "ed@example.com", Role.EDITOR)
    viewer = member(store, "vi@example.com", Role.VIEWER)
    api = url + "/api/v1"
    status, _, saved = call(api + "/universes", "POST", token=editor, body={"document": _document()})
    assert status == 201, saved
    universe_id = saved["universe"]["id"]

    status, _, before = call(api + f"/universes/{universe_id}/metrics", token=viewer)
    assert status == 200, before
    assert before["progress"] is None and before["uptime_s"] is None and before["error_rate"] is None
    assert before["runs"] == {"total": 0, "by_status": {}} and before["launch"] is None

    body = {"universe_id": universe_id, "triggers": [{"kind": "manual"}], "dry_run": False}
    status, _, launch = call(api + "/launches", "POST", token=editor, body=body)
    assert status == 201 and launch["status"] == "live", launch
    finished, ids = [], []
    for _ in range(2):
        status, _, run = call(api + f"/launches/{launch['id']}/runs", "POST", token=editor, body={})
        assert status == 201, run
        ids.append(run["run_id"])
        finished.append(settle(api, viewer, run["run_id"]))
    assert [r["status"] for r in finished] == ["succeeded", "succeeded"], finished

    status, _, live = call(api + f"/universes/{universe_id}/metrics?window_s=60", token=viewer)
    assert status == 200, live
    assert live["deployment_status"] == "live" and live["launch"]["id"] == launch["id"]
    launched_at = datetime.fromisoformat(launch["created_at"])
    at = datetime.fromisoformat(live["at"])
    assert live["uptime_s"] == (at - launched_at).total_seconds() > 0
    assert live["runs"] == {"total": 2, "by_status": {"succeeded": 2}}
    assert live["last_run"]["id"] == ids[-1]
    assert live["progress"] == {"run_id": ids[-1], "completed": 4, "total": 4, "ratio": 1.0}
    # 2 runs x 4 nodes, and 2 x (2 answered calls + 1 refused) within the last minute.
    assert live["velocity"] == {"nodes_per_min": 8.0, "calls_per_min": 6.0}
    assert live["calls"] == {"total": 6, "failed": 2}
    assert live["error_rate"] == 2 / 6
    wider = call(api + f"/universes/{universe_id}/metrics?window_s=600", token=viewer)[2]
    assert wider["velocity"] == {"nodes_per_min": 0.8, "calls_per_min": 0.6}

    outsider = member(store, "out@example.com", Role.ADMIN, workspace="other")
    status, _, hidden = call(api + f"/universes/{universe_id}/metrics", token=outsider)
    assert status == 404 and hidden["code"] == "not_found", hidden
    assert call(api + f"/universes/{universe_id}/metrics")[0] == 401
    status, _, bad = call(api + f"/universes/{universe_id}/metrics?window_s=5", token=viewer)
    assert status == 422 and bad["errors"][0]["field"] == "query.window_s", bad
