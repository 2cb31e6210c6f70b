"""LEAK-02: node names and inputs holding `\\n`, `\\r`, ANSI escapes and fake JSON log lines reach
`cosmogen serve`'s log (a run that fails at such a node logs its id and message at DEBUG), and every line
the process writes to stderr parses as one JSON object: the injected text stays inside its own record's
strings, whole, and no forged record appears. The same serve at DEBUG logs no secret: the canaries
(cosmogen.testing.canaries) sent as the run's inputs appear in no form, in the log or in /metrics (LEAK-01
for serve's own log lines and its metrics).

Real processes: `cosmogen serve` (SQLite) and the `cosmogen run` CLI handing it the runs."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from tests.integration import conftest as cli_fixtures
from tests.integration.api.helpers import call, member_with_token
from tests.integration.conftest import CLI, serving

from cosmogen.domain.roles import Role
from cosmogen.testing.canaries import hits, mint

cosmogen = cli_fixtures.cosmogen  # fixture: the real CLI in a fresh process, data dir in tmp_path

FORGED = (
    '{"ts": "2026-01-01T00:00:00.000+00:00", "level": "critical", "logger": "cosmogen", "message": "forged"}'
)
NODE_ID = f"n\n{FORGED}\r\x1b[31mred\x1b[0m\u2028x"
INPUT = f"in\r\n{FORGED}\n\x1b[2J\x1b]0;title\x07"


def _universe() -> dict[str, Any]:
    return {
        "cosmogen": "universe/1",
        "name": "leak02",
        "nodes": [
            {"id": "b", "type": "begin", "entity": "e:1", "properties": {"x": 1}},
            # Fails on the injected input: the error names the node and quotes the value.
            {"id": NODE_ID, "type": "become", "entity": "e:1", "transform": {"x": "int(event.data.note)"}},
        ],
        "edges": [{"source": "b", "target": NODE_ID}],
    }


def _run(cosmogen: CLI, universe: Path, data: dict[str, Any]) -> dict[str, Any]:
    detached = cosmogen("run", str(universe), "--detach", "--json", "--data", json.dumps(data))
    assert detached.returncode == 0, detached.stderr
    run_id = json.loads(detached.stdout)["run_id"]
    deadline = time.monotonic() + 60
    while True:
        shown = json.loads(cosmogen("runs", "show", run_id, "--json").stdout)
        if shown["status"] in ("succeeded", "failed") or time.monotonic() > deadline:
            return dict(shown)
        time.sleep(0.2)


def test_leak02_injected_text_stays_inside_one_json_record(
    tmp_path: Path, cosmogen: CLI, monkeypatch: pytest.MonkeyPatch
) -> None:
    canaries = mint()
    assert cosmogen("accounts", "list", "--json").returncode == 0  # the store exists, with its schema
    _, token = member_with_token(tmp_path / "cosmogen-data", "ops@example.com", Role.ADMIN)  # no setup link
    monkeypatch.setenv("COSMOGEN_LOG_LEVEL", "debug")
    universe = tmp_path / "leak02.json"
    universe.write_text(json.dumps(_universe()))
    with serving(tmp_path, "--no-sandbox") as (url, _):
        ran = _run(cosmogen, universe, {"note": INPUT, **canaries})
        status, _, metrics = call(url + "/metrics", token=token)
    assert ran["status"] == "failed", ran
    assert status == 200 and 'cosmogen_runs_finished_total{status="failed"} 1.0' in metrics

    lines = (tmp_path / "serve.log").read_bytes().split(b"\n")
    assert lines[-1] == b""  # every record ends its line
    records = []
    for line in lines[:-1]:
        record = json.loads(line)  # raises on anything that is not exactly one JSON value
        assert isinstance(record, dict) and {"ts", "level", "logger", "message"} <= set(record), line
        records.append(record)
    assert not [r for r in records if r["message"] == "forged" or r["level"] == "critical"]
    failed = [r for r in records if r.get("node") == NODE_ID]
    assert len(failed) == 1, records  # the injected id reached the log, whole, inside one record
    assert failed[0]["level"] == "debug" and NODE_ID in failed[0]["message"]
    assert FORGED in failed[0]["message"] and "cannot convert the string 'in" in failed[0]["message"]

    raw = (tmp_path / "serve.log").read_bytes()
    assert b"\x1b" not in raw and b"\r" not in raw  # escapes reach no terminal
    needles = {name: value.encode() for name, value in canaries.items()}
    assert hits(raw, needles, substrings=True) == []
    assert hits(metrics.encode(), needles, substrings=True) == []
