"""The whole path a new user takes, end to end, with every part real: `cosmogen serve` on a fresh data
directory (its sandbox simulator as the providers), then over HTTP as the studio does it (a session cookie
with the CSRF token, a stream ticket):

1. the owner is created with the one-time setup link serve printed;
2. a Slack account is connected with OAuth through the real callback route (PKCE, state);
3. the original studio's example is imported, and a version that posts to Slack saved;
4. a live launch with a signed webhook trigger is made, its Slack binding overridden to use the new
   account, and the webhook fired;
5. the run is watched on the WebSocket until it succeeds, and its post is at the provider;
6. `/metrics` counts it;
7. `cosmogen backup` copies the data directory while serve runs; `cosmogen restore` puts it in a new
   one; serve on that one shows the run, and the account's sealed token still opens with the key."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import connect

from cosmogen.domain.webhook_signature import header_value
from cosmogen.integrations import credentials
from cosmogen.runtime.service import Runtime, RuntimeSettings
from tests.integration.api import stream_client as sc
from tests.integration.api.accounts_helpers import authorize, get
from tests.integration.api.helpers import call
from tests.integration.api.sessions_support import OWNER, Browser, create_owner, login
from tests.integration.conftest import EXAMPLES, ROOT, serving

CLIENT = ("e2e-studio", "e2e-client-secret-0123456789abcdef")
ANNOUNCED = "the banking flow ran"


def _simulator_url(log: Path) -> str:
    found: list[str] = re.findall(
        r"sandbox: provider simulator on (http://127\.0\.0\.1:\d+)", log.read_text()
    )
    assert found, log.read_text()
    return found[-1]


def _connect_slack(owner: Browser, sim: str) -> dict[str, Any]:
    """The studio's Connect button: start, approve at the provider, come back through the callback."""
    status, _, client = call(sim + "/_sim/oauth/clients", "POST", body={
        "client_id": CLIENT[0], "client_secret": CLIENT[1],
        "redirect_uris": [f"{owner.url}/oauth/callback/slack"]})  # fmt: skip
    assert status == 200, client
    oauth = {"authorize_url": f"{sim}/oauth/authorize", "token_url": f"{sim}/oauth/token",
             "revoke_url": f"{sim}/oauth/revoke", "issuer": sim}  # fmt: skip
    status, _, started = owner.call("/api/v1/accounts/oauth/start", "POST", body={
        "name": "team", "provider": "slack", "client_id": CLIENT[0], "client_secret": CLIENT[1],
        "settings": {"oauth": oauth}, "base_url": sim, "return_to": "/studio/accounts"})  # fmt: skip
    assert status == 201, started
    back = authorize(started["authorization_url"])
    assert back.startswith(f"{owner.url}/oauth/callback/slack?code="), back
    status, headers, page = get(back, cookie=owner.cookie)
    assert status == 303 and headers["location"] == "/studio/accounts", page
    status, _, account = owner.call(f"/api/v1/accounts/{started['account_id']}")
    assert status == 200 and account["status"] == "connected", account
    assert set(account["secrets"].values()) == {"********"}
    return dict(account)


def _import_and_bind(owner: Browser) -> tuple[str, str]:
    """The original studio's saved version, imported; then a version whose last node posts to Slack."""
    legacy = json.loads((EXAMPLES / "legacy" / "original-studio-version.json").read_text())
    status, _, imported = owner.call("/api/v1/universes/import", "POST", body={"document": legacy})
    assert status == 201, imported
    universe_id = imported["universe"]["id"]
    status, _, document = owner.call(f"/api/v1/universes/{universe_id}/export")
    assert status == 200, document
    last = document["nodes"][-1]["id"]
    document["bindings"] = [*document.get("bindings", []), {
        "id": "announce", "node": last, "kind": "provider", "capability": "slack.post_message",
        "account": "sandbox-slack", "settings": {"channel": "C0SIM00001", "text": ANNOUNCED}}]  # fmt: skip
    status, _, version = owner.call(
        f"/api/v1/universes/{universe_id}/versions", "POST", body={"document": document, "label": "announce"}
    )
    assert status == 201, version
    return universe_id, version["version"]["id"]


def _watch_webhook_run(owner: Browser, path: str, secret: str) -> tuple[str, list[dict[str, Any]]]:
    """Opens the stream (a ticket, as a browser does), fires the webhook, reads until the run ends."""

    async def scenario() -> tuple[str, list[dict[str, Any]]]:
        status, _, ticket = await asyncio.to_thread(owner.call, "/api/v1/events/ticket", "POST")
        assert status == 200 or status == 201, ticket
        uri = sc.ws_url(owner.url, f"ticket={ticket['ticket']}")
        async with connect(uri, origin=owner.url) as ws:  # type: ignore[arg-type]
            body = json.dumps({"source": "e2e"}).encode()
            signature = header_value([secret.encode()], int(time.time()), body)
            headers = {"X-Cosmogen-Signature": signature}
            status, _, fired = await asyncio.to_thread(
                call, owner.url + path, "POST", body={"source": "e2e"}, headers=headers
            )
            assert status == 202, fired
            run_id = str(fired["run_id"])
            frames = await sc.receive_until(ws, [], sc.ended({run_id}))
        return run_id, frames

    return asyncio.run(scenario())


def _metric(owner: Browser, name: str, labels: dict[str, str]) -> float:
    status, _, text = owner.call("/metrics")
    assert status == 200, text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    raise AssertionError(f"{name}{labels} not in /metrics")


def _cosmogen(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cosmogen", *args], capture_output=True, text=True, timeout=120, cwd=ROOT
    )


def test_owner_to_restored_run(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    with serving(first) as (url, _):
        owner = create_owner(url, first / "serve.log")
        sim = _simulator_url(first / "serve.log")
        account = _connect_slack(owner, sim)
        universe_id, version_id = _import_and_bind(owner)

        status, _, launch = owner.call("/api/v1/launches", "POST", body={
            "version_id": version_id, "dry_run": False, "triggers": [{"kind": "webhook"}],
            "binding_overrides": {"announce": "team"}})  # fmt: skip
        assert status == 201 and launch["status"] == "live", launch
        ((trigger, path),) = launch["webhook_paths"].items()
        run_id, frames = _watch_webhook_run(owner, path, launch["webhook_secrets"][trigger])

        types = [f["type"] for f in frames if f["run"] == run_id]
        assert types[0] == "run.queued" and types[-1] == "run.succeeded", types
        assert {f["universe"] for f in frames} == {universe_id}
        status, _, report = owner.call(f"/api/v1/runs/{run_id}")
        assert status == 200 and report["status"] == "succeeded", report
        [posted_by] = [
            o["bindings"]["announce"]
            for o in report["outputs"].values()
            if "announce" in o.get("bindings", {})
        ]
        assert posted_by["account"] == "team" and posted_by["status"] == 200, (
            posted_by
        )  # the launch's override
        status, _, posts = call(sim + "/_sim/log?route=slack.postMessage")
        assert status == 200, posts
        assert [p["body"]["text"] for p in posts["entries"]] == [ANNOUNCED], posts
        sent_with = posts["entries"][0]["credential"]  # the access token the callback stored

        assert _metric(owner, "cosmogen_runs_finished_total", {"status": "succeeded"}) >= 1
        assert _metric(owner, "cosmogen_external_calls_total", {
            "provider": "slack", "capability": "slack.post_message", "status": "2xx"}) == 1  # fmt: skip

        archive = tmp_path / "backup.tar.gz"
        key = tmp_path / "vault.key"
        made = _cosmogen("backup", str(archive), "--data-dir", str(first / "cosmogen-data"),
                         "--export-key", str(key))  # fmt: skip
        assert made.returncode == 0, made.stderr

    restored = _cosmogen(
        "restore", str(archive), "--data-dir", str(second / "cosmogen-data"), "--key", str(key)
    )
    assert restored.returncode == 0, restored.stderr
    with serving(second, "--no-sandbox") as (url, _):
        again = login(url, *OWNER)
        status, _, report = again.call(f"/api/v1/runs/{run_id}")
        assert status == 200 and report["status"] == "succeeded", report
        status, _, runs = again.call(f"/api/v1/runs?universe_id={universe_id}")
        assert status == 200 and run_id in [r["id"] for r in runs["items"]], runs
        status, _, kept = again.call(f"/api/v1/accounts/{account['id']}")
        assert status == 200 and kept["status"] == "connected", kept
    assert asyncio.run(_access_token(second / "cosmogen-data", account["id"])) == sent_with


async def _access_token(data_dir: Path, account_id: str) -> str:
    """The account's sealed access token, opened with the restored data directory's key."""
    runtime = await Runtime.open(RuntimeSettings(data_dir=data_dir), vault_at_start=True)
    try:
        with runtime.db.engine.connect() as conn:
            found = credentials.reveal_credentials(conn, runtime.open_vault(), account_id, ["access_token"])
        return found["access_token"].reveal()
    finally:
        await runtime.close()
