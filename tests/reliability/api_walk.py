"""Walking every route of the resource API (universes, runs, launches) with one workspace's objects, for
API-02 (isolation), API-03 (roles) and API-04 (mass assignment).

`CALLS` is one request per operation; `check_covers_spec` fails when /openapi.json lists an operation of
these tags that CALLS does not walk, so a new route cannot slip past the isolation and role tests.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from tests.integration.api.helpers import call

TAGS = frozenset({"universes", "runs", "launches"})

FAILING: dict[str, Any] = {
    "cosmogen": "universe/1",
    "name": "failing",
    "nodes": [
        {"id": "a", "type": "begin", "entity": "acct:a", "properties": {"x": 1}},
        {"id": "b", "type": "become", "entity": "acct:a", "transform": {"x": "x / 0"}},
    ],
    "edges": [{"source": "a", "target": "b"}],
}


def failing_v2() -> dict[str, Any]:
    document = {
        **FAILING,
        "nodes": [
            *FAILING["nodes"],
            {"id": "c", "type": "become", "entity": "acct:a", "transform": {"x": "x + 1"}},
        ],
    }
    document["edges"] = [*FAILING["edges"], {"source": "b", "target": "c"}]
    return document


@dataclass(frozen=True)
class Seeded:
    universe_id: str
    version_1: str
    version_2: str
    run_id: str  # a failed run (so retry is allowed)
    launch_id: str  # a live launch with a manual trigger

    def fill(self, text: str) -> str:
        return (
            text.replace("{universe_id}", self.universe_id)
            .replace("{version_id}", self.version_2)
            .replace("{version_1}", self.version_1)
            .replace("{run_id}", self.run_id)
            .replace("{launch_id}", self.launch_id)
        )

    def ids(self) -> set[str]:
        return {self.universe_id, self.version_1, self.version_2, self.run_id, self.launch_id}


def settle(api: str, token: str, run_id: str, timeout_s: float = 60) -> str:
    deadline = time.monotonic() + timeout_s
    while True:
        status = call(api + f"/runs/{run_id}", token=token)[2]["status"]
        if status not in ("queued", "running"):
            return str(status)
        assert time.monotonic() < deadline
        time.sleep(0.05)


def seed(api: str, token: str, name: str = "failing") -> Seeded:
    """A universe with two versions, a failed run and a live launch, made by `token` (an editor or above)."""
    first = {**FAILING, "name": name}
    status, _, saved = call(api + "/universes", "POST", token=token, body={"document": first})
    assert status == 201, saved
    universe_id = saved["universe"]["id"]
    status, _, second = call(
        api + f"/universes/{universe_id}/versions",
        "POST",
        token=token,
        body={"document": {**failing_v2(), "name": name}},
    )
    assert status == 201, second
    status, _, run = call(api + "/runs", "POST", token=token, body={"version_id": saved["version"]["id"]})
    assert status == 201, run
    assert settle(api, token, run["run_id"]) == "failed"
    status, _, launch = call(api + "/launches", "POST", token=token, body={"universe_id": universe_id})
    assert status == 201, launch
    return Seeded(universe_id, saved["version"]["id"], second["version"]["id"], run["run_id"], launch["id"])


@dataclass(frozen=True)
class Call:
    method: str
    path: str  # the spec's template, e.g. /api/v1/universes/{universe_id}
    query: str = ""
    body: Any = None

    @property
    def operation(self) -> str:
        return f"{self.method} {self.path}"


# In an order that leaves each later call meaningful (reads, then changes, then the delete).
CALLS: list[Call] = [
    Call("GET", "/api/v1/universes"),
    Call("GET", "/api/v1/universes/{universe_id}"),
    Call("GET", "/api/v1/universes/{universe_id}/versions"),
    Call("GET", "/api/v1/versions/{version_id}"),
    Call("GET", "/api/v1/versions/{version_id}/validation"),
    Call("GET", "/api/v1/universes/{universe_id}/diff", "?from={version_1}&to={version_id}"),
    Call("GET", "/api/v1/universes/{universe_id}/export", "?version_id={version_1}"),
    Call("GET", "/api/v1/universes/{universe_id}/metrics"),  # the telemetry helper's, tagged universes
    Call("POST", "/api/v1/validate", body={"document": FAILING}),
    Call("GET", "/api/v1/runs"),
    Call("GET", "/api/v1/runs/{run_id}"),
    Call("GET", "/api/v1/runs/{run_id}/events"),
    Call("GET", "/api/v1/launches"),
    Call("GET", "/api/v1/launches/{launch_id}"),
    Call("POST", "/api/v1/universes/{universe_id}/versions", body={"document": "V3"}),
    Call("PUT", "/api/v1/universes/{universe_id}/active", body={"version_id": "{version_id}"}),
    Call("POST", "/api/v1/runs", body={"universe_id": "{universe_id}"}),
    Call("POST", "/api/v1/runs", body={"version_id": "{version_1}"}),
    Call("POST", "/api/v1/runs/{run_id}/pause"),
    Call("POST", "/api/v1/runs/{run_id}/resume"),
    Call("POST", "/api/v1/runs/{run_id}/cancel"),
    Call("POST", "/api/v1/runs/{run_id}/retry-anyway"),
    Call("POST", "/api/v1/runs/{run_id}/mark-done"),
    Call("POST", "/api/v1/runs/{run_id}/retry"),
    Call("POST", "/api/v1/runs/{run_id}/rerun"),
    Call("POST", "/api/v1/launches/{launch_id}/runs", body={}),
    Call("POST", "/api/v1/launches", body={"universe_id": "{universe_id}", "live": False}),
    Call("POST", "/api/v1/launches", body={"version_id": "{version_1}", "live": False}),
    Call("POST", "/api/v1/launches/{launch_id}/pause"),
    Call("POST", "/api/v1/launches/{launch_id}/resume"),
    Call("POST", "/api/v1/launches/{launch_id}/go-live"),
    Call("POST", "/api/v1/launches/{launch_id}/stop"),
    Call("POST", "/api/v1/launches/{launch_id}/archive"),
    Call("POST", "/api/v1/universes/import", body={"document": "V3"}),
    Call("POST", "/api/v1/universes", body={"document": "V3"}),
    Call("POST", "/api/v1/universes/{universe_id}/archive"),
    Call("DELETE", "/api/v1/universes/{universe_id}"),
    Call("DELETE", "/api/v1/universes/{universe_id}", "?confirm=CONFIRM"),
]


def body_for(one: Call, seeded: Seeded, name: str) -> Any:
    if one.body is None:
        return None
    if isinstance(one.body, dict) and one.body.get("document") == "V3":
        document = failing_v2()
        document["nodes"] = [{**document["nodes"][0], "properties": {"x": 3}}, *document["nodes"][1:]]
        return {"document": {**document, "name": name}}
    return {k: seeded.fill(v) if isinstance(v, str) else v for k, v in one.body.items()}


def spec_operations(url: str) -> set[str]:
    spec = call(url + "/openapi.json")[2]
    found = set()
    for path, methods in spec["paths"].items():
        for method, operation in methods.items():
            if TAGS & set(operation.get("tags", [])):
                found.add(f"{method.upper()} {path}")
    return found


def check_covers_spec(url: str) -> None:
    walked = {one.operation for one in CALLS}
    missing = spec_operations(url) - walked
    assert not missing, f"routes the walk does not cover: {sorted(missing)}"
    assert walked <= spec_operations(url), sorted(walked - spec_operations(url))


def request(
    url: str, token: str, one: Call, seeded: Seeded, name: str, confirm: str = "x"
) -> tuple[int, Any]:
    path = seeded.fill(one.path) + seeded.fill(one.query).replace("CONFIRM", confirm)
    status, _, body = call(url + path, one.method, token=token, body=body_for(one, seeded, name))
    return status, body
