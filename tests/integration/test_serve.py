"""`cosmogen serve`: health, running queued runs, one owner per data directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from cosmogen.domain.webhook_signature import header_value

from .conftest import CLI, EXAMPLES, free_port


def test_healthz_reports_the_database(served: tuple[str, subprocess.Popen[str]]) -> None:
    url, _ = served
    with urllib.request.urlopen(url + "/healthz", timeout=5) as response:  # noqa: S310 (our server)
        body = json.loads(response.read())
    assert body["status"] == "ok"
    assert body["database"] == "sqlite"


def test_serve_runs_what_the_cli_queued_and_the_cli_waits_for_it(
    served: tuple[str, subprocess.Popen[str]], cosmogen: CLI
) -> None:
    detached = json.loads(cosmogen("run", str(EXAMPLES / "banking.json"), "--detach", "--json").stdout)
    deadline = time.monotonic() + 30
    status = "queued"
    while status != "succeeded" and time.monotonic() < deadline:
        time.sleep(0.1)
        status = json.loads(cosmogen("runs", "show", detached["run_id"], "--json").stdout)["status"]
    assert status == "succeeded"
    # Without --detach, the CLI hands the run to the serving process and waits for its result.
    waited = json.loads(cosmogen("run", str(EXAMPLES / "vip.json"), "--json").stdout)
    assert waited["status"] == "succeeded"


def test_a_second_serve_on_the_same_data_dir_is_refused(
    served: tuple[str, subprocess.Popen[str]], tmp_path: Path
) -> None:
    env = {**os.environ, "COSMOGEN_DATA_DIR": str(tmp_path / "cosmogen-data")}
    second = subprocess.run(
        [sys.executable, "-m", "cosmogen", "serve", "--port", str(free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert second.returncode != 0
    assert "another cosmogen process owns" in second.stderr


def _runs(cosmogen: CLI) -> list[dict[str, object]]:
    return list(json.loads(cosmogen("runs", "list", "--json", "--limit", "100").stdout))


def test_interval_and_webhook_launches_run_under_serve(
    served: tuple[str, subprocess.Popen[str]], cosmogen: CLI
) -> None:
    url, _ = served
    created = cosmogen(
        "launch", str(EXAMPLES / "banking.json"), "--trigger", "interval:1", "--trigger", "webhook", "--json"
    )
    assert created.returncode == 0, created.stderr
    launch = json.loads(created.stdout)
    assert launch["status"] == "live"
    assert launch["dry_run"] is True
    (path,) = launch["webhook_paths"].values()
    (secret,) = launch["webhook_secrets"].values()  # a webhook trigger is signed by default
    deadline = time.monotonic() + 30
    while len(_runs(cosmogen)) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(_runs(cosmogen)) >= 2  # the interval trigger fired on its own

    body = json.dumps({"amount": 5}).encode()
    signature = header_value([secret.encode()], int(time.time()), body)
    request = urllib.request.Request(  # noqa: S310 (our server on 127.0.0.1)
        url + path,
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            "X-Cosmogen-Delivery": "d-1",
            "X-Cosmogen-Signature": signature,
        },
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 (our server)
        assert response.status == 202
        run_id = json.loads(response.read())["run_id"]
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 (our server)
        assert json.loads(response.read())["duplicate"] is True
    shown = json.loads(cosmogen("runs", "show", run_id, "--json").stdout)
    assert shown["dry_run"] is True

    stopped = json.loads(cosmogen("launches", "stop", launch["id"], "--json").stdout)
    assert stopped["status"] == "draft"
    settled = len(_runs(cosmogen))
    time.sleep(2.5)
    assert len(_runs(cosmogen)) == settled  # a stopped launch fires nothing
