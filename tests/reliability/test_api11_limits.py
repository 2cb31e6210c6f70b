"""API-11 (resource limits) for the resource API, over real HTTP against `cosmogen serve`.

- bodies over 1 MiB: 413, whether Content-Length says so (20 MiB declared: refused before it is sent)
  or the body arrives chunked with no length (counted while read);
- a page size of 10**6 is clamped to 200, and the cursor walks the rest;
- a 10,000-node universe and a 20,000-character expression: 422 with a diagnostic naming the cap; a
  1 MiB expression is a body over 1 MiB: 413;
- a workspace with COSMOGEN_RUN_QUOTA (3) unfinished runs gets 429 with Retry-After for the next one,
  another workspace does not, and a cancelled run frees its place;
- the serving process stays under 1 GiB RSS throughout.
"""

from __future__ import annotations

import contextlib
import http.client
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from tests.integration.api.helpers import call
from tests.integration.api.test_runs_api import chain
from tests.integration.api.workspaces import member, new_workspace, open_store
from tests.integration.conftest import EXAMPLES, serving

from cosmogen.domain.roles import Role
from cosmogen.store import repos

VIP = json.loads((EXAMPLES / "vip.json").read_text())
MiB = 1024 * 1024


def raw_post(
    url: str, path: str, token: str, body: bytes | Iterator[bytes], length: int | None
) -> tuple[int, Any]:
    where = urlsplit(url)
    conn = http.client.HTTPConnection(where.hostname or "127.0.0.1", where.port, timeout=30)
    try:
        conn.putrequest("POST", path)
        conn.putheader("Authorization", f"Bearer {token}")
        conn.putheader("Content-Type", "application/json")
        if length is not None:
            conn.putheader("Content-Length", str(length))
            conn.endheaders()
            if isinstance(body, bytes) and body:
                # The server may answer 413 and close before reading it all: what it said still counts.
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    conn.send(body)
        else:
            conn.putheader("Transfer-Encoding", "chunked")
            conn.endheaders()
            assert not isinstance(body, bytes)
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                for chunk in body:
                    conn.send(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                conn.send(b"0\r\n\r\n")
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_api11_bodies_pages_and_size_caps(tmp_path: Path) -> None:
    data = tmp_path / "cosmogen-data"
    with serving(tmp_path) as (url, process):
        api = url + "/api/v1"
        _, token = member(data, "ed@example.com", Role.EDITOR)

        # 20 MiB declared: refused on the header, before any of it is sent.
        status, body = raw_post(url, "/api/v1/universes", token, b"", 20 * MiB)
        assert (status, body["code"]) == (413, "too_large") and body["hint"]
        # 2 MiB chunked, no length: counted while read.
        blob = json.dumps({"document": {**VIP, "description": "x" * (2 * MiB)}}).encode()
        chunks = iter([blob[i : i + 64 * 1024] for i in range(0, len(blob), 64 * 1024)])
        status, body = raw_post(url, "/api/v1/universes", token, chunks, None)
        assert (status, body["code"]) == (413, "too_large")
        for path in ("/api/v1/runs", "/api/v1/launches", "/api/v1/validate"):
            status, body = raw_post(url, path, token, b"", 2 * MiB)
            assert status == 413, path

        # A 1 MiB expression is a body over 1 MiB.
        huge = json.loads(json.dumps(VIP))
        huge["nodes"][1]["transform"]["balance"] = "balance + " + "1 + " * (MiB // 4) + "1"
        payload = json.dumps({"document": huge}).encode()
        assert raw_post(url, "/api/v1/universes", token, payload, len(payload))[0] == 413
        # 20,000 characters fit the body but not the string cap.
        long = json.loads(json.dumps(VIP))
        long["nodes"][1]["transform"]["balance"] = "balance + " + "1 + " * 5000 + "1"
        status, _, body = call(api + "/universes", "POST", token=token, body={"document": long})
        assert status == 422 and [d["code"] for d in body["diagnostics"]] == ["string-too-long"]
        # 10,000 nodes fit the body but not the node cap.
        begin = {"id": "b", "type": "begin", "entity": "a:b", "properties": {}}
        nodes = [begin] + [
            {"id": f"{i}", "type": "become", "entity": "a:b", "transform": {}} for i in range(9999)
        ]
        many = {"cosmogen": "universe/1", "name": "many", "nodes": nodes, "edges": []}
        assert len(json.dumps(many)) < MiB
        status, _, body = call(api + "/universes", "POST", token=token, body={"document": many})
        assert status == 422 and [d["code"] for d in body["diagnostics"]] == ["too-many-nodes"]
        status, _, report = call(api + "/validate", "POST", token=token, body={"document": many})
        assert status == 200 and report["valid"] is False
        assert call(api + "/universes", token=token)[2]["items"] == []

        # Page size 10**6 is clamped to 200.
        db = open_store(data)
        try:
            with db.engine.begin() as conn:
                for i in range(205):
                    repos.save_version(conn, workspace_id="default", name=f"u{i:03d}", document=VIP)
        finally:
            db.close()
        status, _, page = call(api + "/universes?limit=1000000", token=token)
        assert status == 200 and len(page["items"]) == 200 and page["next_cursor"]
        rest = call(api + f"/universes?limit=1000000&cursor={page['next_cursor']}", token=token)[2]
        assert len(rest["items"]) == 5 and rest["next_cursor"] is None
        names = [u["name"] for u in page["items"] + rest["items"]]
        assert names == sorted(names) and len(set(names)) == 205
        assert call(api + "/universes?limit=0", token=token)[0] == 422

        assert rss_mib(process.pid) < 1024


def test_api11_run_quota_per_workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COSMOGEN_RUN_QUOTA", "3")
    data = tmp_path / "cosmogen-data"
    with serving(tmp_path) as (url, process):
        api = url + "/api/v1"
        _, token = member(data, "ed@example.com", Role.EDITOR)
        other = new_workspace(data, "other")
        _, token_other = member(data, "other@example.com", Role.EDITOR, other)
        long = call(api + "/universes", "POST", token=token, body={"document": chain(1900)})[2]
        # Three unfinished runs: paused (pause lands at a checkpoint; a run that ends first is replaced).
        paused: list[str] = []
        for _ in range(12):
            if len(paused) == 3:
                break
            status, _, run = call(
                api + "/runs", "POST", token=token, body={"universe_id": long["universe"]["id"]}
            )
            assert status == 201, run
            if call(api + f"/runs/{run['run_id']}/pause", "POST", token=token)[0] == 200:
                paused.append(run["run_id"])
        assert len(paused) == 3
        status, headers, body = call(
            api + "/runs", "POST", token=token, body={"universe_id": long["universe"]["id"]}
        )
        assert (status, body["code"]) == (429, "run_quota") and headers["retry-after"] == "5" and body["hint"]
        # Retry, rerun and a launch's runs count against the same quota.
        launch = call(api + "/launches", "POST", token=token, body={"universe_id": long["universe"]["id"]})[2]
        assert call(api + f"/launches/{launch['id']}/runs", "POST", token=token, body={})[0] == 429
        assert call(api + f"/runs/{paused[0]}/rerun", "POST", token=token)[0] == 429
        # Another workspace has its own quota.
        vip = call(api + "/universes", "POST", token=token_other, body={"document": VIP})[2]
        assert (
            call(api + "/runs", "POST", token=token_other, body={"universe_id": vip["universe"]["id"]})[0]
            == 201
        )
        # A cancelled run frees its place.
        assert call(api + f"/runs/{paused[0]}/cancel", "POST", token=token)[0] == 200
        status, _, run = call(
            api + "/runs", "POST", token=token, body={"universe_id": long["universe"]["id"]}
        )
        assert status == 201, run
        assert rss_mib(process.pid) < 1024
