"""DUR-11 on `POST /api/v1/runs`, over real HTTP against `cosmogen serve`, on SQLite and on PostgreSQL
(where serve runs its own worker):

(a) the same key and body twice: the second answer is the first one (Idempotent-Replayed), 1 run exists;
(b) the same key with another body: 422, no run;
(c) the same key while the first request holds it: 409 with Retry-After, no run; and 12 concurrent
    requests with one key make exactly 1 run, every other answer being that run or a 409;
(d) a malformed key: 400 (the key is optional on POST /runs; "missing where required" is the webhook's,
    tests/reliability/test_dur11_idempotency_keys.py);
(e) workspace B sending A's key: a new request (its own run), and B never sees A's answer.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from tests.integration.api.helpers import call
from tests.integration.api.workspaces import member, new_workspace, open_store
from tests.integration.conftest import EXAMPLES, serving

from cosmogen.domain import idempotency as idem
from cosmogen.domain.roles import Role
from cosmogen.runtime import idempotency
from cosmogen.store.tables import runs, utcnow

VIP = json.loads((EXAMPLES / "vip.json").read_text())


def run_count(where: Path | str) -> int:
    db = open_store(where)
    try:
        with db.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(runs)).scalar_one())
    finally:
        db.close()


def hold_key(where: Path | str, workspace: str, key: str, body: Any) -> None:
    """Another request's claim on the key, in flight (what a request holds between its two commits)."""
    db = open_store(where)
    try:
        with db.engine.begin() as conn:
            ref = idempotency.KeyRef(workspace, "POST /runs", key)
            claim = idempotency.begin(ref, idem.fingerprint(body), utcnow())(conn)
            assert claim.verdict is idem.Verdict.PROCEED
    finally:
        db.close()


def check_dur11(url: str, where: Path | str) -> None:
    api = url + "/api/v1"
    _, token_a = member(where, "a@example.com", Role.EDITOR)
    workspace_b = new_workspace(where, "B")
    _, token_b = member(where, "b@example.com", Role.EDITOR, workspace_b)
    saved_a = call(api + "/universes", "POST", token=token_a, body={"document": VIP})[2]
    saved_b = call(api + "/universes", "POST", token=token_b, body={"document": VIP})[2]
    body = {"universe_id": saved_a["universe"]["id"], "event": {"name": "deposit"}}

    # (a)
    first = call(api + "/runs", "POST", token=token_a, body=body, headers={"Idempotency-Key": "k-a"})
    assert first[0] == 201, first
    second = call(api + "/runs", "POST", token=token_a, body=body, headers={"Idempotency-Key": "k-a"})
    assert (second[0], second[2]) == (201, first[2])
    assert second[1].get("idempotent-replayed") == "true" and "idempotent-replayed" not in first[1]
    assert run_count(where) == 1
    # The same JSON spelled differently is the same request.
    respelled = {"event": {"name": "deposit"}, "universe_id": saved_a["universe"]["id"]}
    assert (
        call(api + "/runs", "POST", token=token_a, body=respelled, headers={"Idempotency-Key": "k-a"})[2]
        == first[2]
    )

    # (b)
    other = {**body, "event": {"name": "withdraw"}}
    status, _, problem = call(
        api + "/runs", "POST", token=token_a, body=other, headers={"Idempotency-Key": "k-a"}
    )
    assert (status, problem["code"]) == (422, "idempotency_key_reused") and problem["hint"]
    assert run_count(where) == 1

    # (c) a claim held by a request still in flight
    hold_key(where, "default", "k-c", body)
    status, headers, problem = call(
        api + "/runs", "POST", token=token_a, body=body, headers={"Idempotency-Key": "k-c"}
    )
    assert (status, problem["code"]) == (409, "idempotency_key_in_flight") and headers["retry-after"] == "1"
    assert run_count(where) == 1
    # ... and real concurrent requests with one key
    with ThreadPoolExecutor(12) as pool:
        answers = list(
            pool.map(
                lambda _: call(
                    api + "/runs", "POST", token=token_a, body=body, headers={"Idempotency-Key": "k-race"}
                ),
                range(12),
            )
        )
    made = {a[2]["run_id"] for a in answers if a[0] == 201}
    assert len(made) == 1, answers
    assert all(a[0] in (201, 409) for a in answers), [a[0] for a in answers]
    assert run_count(where) == 2

    # (d)
    for bad in ("", "x" * 256, "caf\u00e9"):
        got = call(
            api + "/runs",
            "POST",
            token=token_a,
            body=body,
            headers={"Idempotency-Key": bad.encode().decode("latin-1")},
        )
        assert got[0] == 400 and got[2]["code"] == "idempotency_key_invalid", (bad, got)
    assert run_count(where) == 2

    # (e) B's key "k-a" is B's own: a new run in B; B's body differs from A's, and still no 422.
    body_b = {"universe_id": saved_b["universe"]["id"]}
    status, _, created_b = call(
        api + "/runs", "POST", token=token_b, body=body_b, headers={"Idempotency-Key": "k-a"}
    )
    assert status == 201 and created_b["run_id"] != first[2]["run_id"]
    assert run_count(where) == 3
    assert call(api + f"/runs/{created_b['run_id']}", token=token_a)[0] == 404
    # A's replay is still A's run.
    assert (
        call(api + "/runs", "POST", token=token_a, body=body, headers={"Idempotency-Key": "k-a"})[2]
        == first[2]
    )


def test_dur11_post_runs_sqlite(tmp_path: Path) -> None:
    with serving(tmp_path) as (url, _):
        check_dur11(url, tmp_path / "cosmogen-data")


def test_dur11_post_runs_postgres(tmp_path: Path, clean_pg_url: str) -> None:
    with serving(tmp_path, "--database-url", clean_pg_url) as (url, _):
        check_dur11(url, clean_pg_url)
