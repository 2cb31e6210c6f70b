"""API-01: Schemathesis over the whole of /openapi.json, against a real `cosmogen serve` (SQLite, sandbox).

`st run <url>/openapi.json --checks all --phases examples,coverage,fuzzing,stateful -n 100` as the
owner's admin API token. Passes when its JSON report holds 0 failures of any check (no 5xx, no schema or
content-type mismatch, no undocumented status, no ignored_auth or use_after_free...), no `missing_auth`
warning, every phase ran, and the stateful phase reached every operation (see below).

What the harness sets, and why (schemathesis_config() below):
- `positive_data_acceptance` also accepts, for the operations listed in ALSO_REFUSED, the statuses named
  there: schema-valid requests that the server refuses on rules JSON Schema cannot state (a cursor it did
  not hand out, a universe document whose graph has errors, a provider's own settings, the password
  policy's common-password list). Every other operation keeps the check's defaults.
- `negative_data_rejection` also accepts 410 from a closed setup (ALSO_FOR_INVALID).
- The event stream (SSE) never ends by design; Schemathesis reads each answer for 1 s, then cuts it.
- Two operations do not count towards the missing_auth warning, whose 403 is by design whatever the
  run's auth (QUIET_AUTH): a password change with an API token, an invite with a made-up invite token.

The harness seeds a universe with two versions, a failed run and a live launch (api_walk.seed), and a
hook (api01_hooks.py) keeps Schemathesis from revoking its own token or removing its owner.

The stateful phase chains the links of /openapi.json (api/links.py, and the ones Schemathesis infers).
Every operation that takes an object's id must be the target of a link, and every operation but those of
NOT_STATEFUL must be called by the stateful phase: one suite follows the links its seed favours, so up to
EXTRA_STATEFUL_SUITES more stateful-only suites, each with a fresh seed, run until one has called it.
NOT_STATEFUL's take no object of the API and give none (health, metrics, signing out a token, marking
every notification read, a stream ticket: a credential the stream takes as its security scheme `ticket`),
or their input comes from outside the API: the setup token from the server's log (and setup is closed
before the run), the OAuth callback's `state` from the provider's redirect, a password change from a
signed-in browser. Schemathesis never starts a scenario at POST /api/v1/accounts/oauth/start (its
dependency analysis takes `client_id` for the id of a resource nothing produces, and no link can lead
there: its input is the OAuth client an operator registered at the provider). The other phases call
them all. The webhook ingress `/hooks/{token}` is not in the spec (its
path token is the credential: API-05; API-13 tests it).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from tests.integration.api.sessions_support import OWNER, create_owner
from tests.integration.conftest import ROOT, serving
from tests.reliability.api_walk import seed

EXAMPLES_PER_OPERATION = 100  # the CI size of API-01 (the soak runs 1,000)
PHASES = "examples,coverage,fuzzing,stateful"
# Scenarios of up to 30 steps the stateful phase may run: enough that it calls every operation a link leads
# to (it stops earlier when Hypothesis finds no new scenario).
STATEFUL_SCENARIOS = 300
EXTRA_STATEFUL_SUITES = 5  # at most, after the full run's own (about 30 s each)

# Operation -> statuses positive_data_acceptance also accepts there (see the module docstring).
ALSO_REFUSED: dict[str, tuple[int, ...]] = {
    # A cursor or `before` this server did not hand out.
    "GET /api/v1/universes": (400,),
    "GET /api/v1/runs": (400,),
    "GET /api/v1/launches": (400,),
    "GET /api/v1/audit": (400,),
    # The provider's redirect must carry a state this session started.
    "GET /oauth/callback/{provider}": (400,),
    # `universe` and `run` together, or an id that is not printable.
    "GET /api/v1/events/sse": (422,),
    # The owner exists (410); the password policy's list of common passwords (422).
    "POST /api/v1/setup": (410, 422),
    "POST /api/v1/invite": (422,),
    # An email address needs an @.
    "POST /api/v1/members": (422,),
    # A provider's own settings and secret fields; an action the account's kind has not.
    "POST /api/v1/accounts": (422,),
    "PATCH /api/v1/accounts/{account_id}": (422,),
    "POST /api/v1/accounts/oauth/start": (422,),
    "POST /api/v1/accounts/{account_id}/test": (422,),
    "POST /api/v1/accounts/{account_id}/refresh": (422,),
    "POST /api/v1/accounts/{account_id}/disconnect": (422,),
    # An alert rule kind's own params, a channel kind's own config; a cursor (the inbox).
    "POST /api/v1/alerts/rules": (422,),
    "PUT /api/v1/alerts/rules/{rule_id}": (422,),
    "POST /api/v1/alerts/channels": (422,),
    "PATCH /api/v1/alerts/channels/{channel_id}": (422,),
    "GET /api/v1/notifications": (400,),
    # A universe document's graph, expressions and size limits.
    "POST /api/v1/universes": (422,),
    "POST /api/v1/universes/import": (422,),
    "POST /api/v1/universes/{universe_id}/versions": (422,),
    # Exactly one of universe_id and version_id; a config that must fit the universe.
    "POST /api/v1/runs": (422,),
    "POST /api/v1/launches": (422,),
    "POST /api/v1/launches/{launch_id}/runs": (422,),
}
NOT_STATEFUL = {
    "POST /api/v1/setup",
    "GET /oauth/callback/{provider}",
    "PUT /api/v1/password",
    "GET /healthz",
    "GET /readyz",
    "GET /metrics",
    "DELETE /api/v1/session",
    "POST /api/v1/events/ticket",
    "POST /api/v1/notifications/read-all",
    "POST /api/v1/accounts/oauth/start",
}
# Operation -> statuses negative_data_rejection also accepts there: setup answers 410 to anything once the
# owner exists (it validates nothing for a closed setup).
ALSO_FOR_INVALID: dict[str, tuple[int, ...]] = {"POST /api/v1/setup": (410,)}
# Operations left out of the missing_auth warning: a token gets 403 from a password change by design (a
# signed-in browser changes passwords; API-06), and POST /api/v1/invite is public, its credential the
# one-time token in the body, so a made-up token answers 403 whatever the run's auth.
QUIET_AUTH = ("PUT /api/v1/password", "POST /api/v1/invite")
# The checks' own defaults, which the lists above extend.
VALID_ACCEPTED = ["2xx", "3xx", 401, 403, 404, 409, 429, "5xx"]
INVALID_ACCEPTED = [400, 401, 403, 404, 405, 406, 409, 415, 422, 428, 429, "5xx"]


def schemathesis_config() -> str:
    blocks: dict[str, list[str]] = {
        "GET /api/v1/events/sse": ["request-timeout = 1  # the stream never ends; read it for 1 s"],
    }
    for operation in QUIET_AUTH:
        shown = '["missing_test_data", "validation_mismatch"]'
        blocks.setdefault(operation, []).append(f"warnings = {{ display = {shown} }}")
    for operation, statuses in ALSO_REFUSED.items():
        accepted = json.dumps([*VALID_ACCEPTED, *statuses])
        blocks.setdefault(operation, []).append(
            f"checks.positive_data_acceptance.expected-statuses = {accepted}"
        )
    for operation, statuses in ALSO_FOR_INVALID.items():
        accepted = json.dumps([*INVALID_ACCEPTED, *statuses])
        blocks.setdefault(operation, []).append(
            f"checks.negative_data_rejection.expected-statuses = {accepted}"
        )
    lines = [
        "[cache]",
        "enabled = false  # it would keep state in the work tree (.schemathesis/) from run to run",
        "",
        "[phases.examples]",
        "fill-missing = true  # operations without an example get generated ones",
        "",
        "[phases.stateful]",
        "max-steps = 30  # long enough to chain a save, its version, a run of it and that run's actions",
        "",
        "[phases.stateful.generation]",
        'mode = "positive"  # chains that go on; the other phases send the invalid requests',
        f"max-examples = {STATEFUL_SCENARIOS}",
        "",
    ]
    for operation, settings in blocks.items():
        lines += ["[[operations]]", f"include-name = {json.dumps(operation)}", *settings, ""]
    return "\n".join(lines)


def stateful_calls(ndjson: Path) -> set[str]:
    """The operations the stateful phase called."""
    called: set[str] = set()
    for line in ndjson.read_text().splitlines():
        finished = json.loads(line).get("ScenarioFinished")
        if finished and finished["phase"] == "stateful":
            for case in (finished["recorder"].get("cases") or {}).values():
                called.add(f"{case['value']['method']} {case['value']['path']}")
    return called


def operations(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    methods = {"get", "put", "post", "delete", "patch"}
    return {
        f"{m.upper()} {path}": op
        for path, item in spec["paths"].items()
        for m, op in item.items()
        if m in methods
    }


def link_targets(spec: dict[str, Any]) -> set[str]:
    """The operations some link of the spec points to (its operationRef must name one of the spec's)."""
    found = set()
    for op in operations(spec).values():
        for answer in op["responses"].values():
            for link in answer.get("links", {}).values():
                path, method = link["operationRef"].removeprefix("#/paths/").rsplit("/", 1)
                target = f"{method.upper()} {path.replace('~1', '/').replace('~0', '~')}"
                assert target in operations(spec), f"a link points to no operation: {link}"
                found.add(target)
    return found


@dataclass(frozen=True)
class Run:
    report: dict[str, Any]
    stateful_calls: set[str]
    output: str
    exit_code: int
    seconds: float


def schemathesis(url: str, token: str, keep: list[str], config: Path, reports: Path, phases: str) -> Run:
    env = {
        **os.environ,
        "SCHEMATHESIS_HOOKS": "tests.reliability.api01_hooks",
        "COSMOGEN_API01_KEEP": ",".join(keep),
    }
    started = time.monotonic()
    # The token is on the command line of a local, short-lived process of the test's own server.
    done = subprocess.run(
        [
            sys.executable, "-m", "schemathesis.cli", "--config-file", str(config), "run",
            f"{url}/openapi.json", "--checks", "all", "--phases", phases,
            "--max-examples", str(EXAMPLES_PER_OPERATION), "--header", f"Authorization: Bearer {token}",
            "--report", "json,ndjson", "--report-dir", str(reports), "--no-color",
        ],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=1200,
    )  # fmt: skip
    seconds = time.monotonic() - started
    report = json.loads(next(reports.glob("json-*.json")).read_text())
    calls = stateful_calls(next(reports.glob("ndjson-*.ndjson")))
    return Run(report, calls, done.stdout[-20000:] + done.stderr[-5000:], done.returncode, seconds)


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_schemathesis_finds_nothing(tmp_path: Path) -> None:
    config = tmp_path / "schemathesis.toml"
    config.write_text(schemathesis_config())
    with serving(tmp_path) as (url, _):
        owner = create_owner(url, tmp_path / "serve.log", *OWNER)
        status, _, made = owner.call("/api/v1/tokens", "POST", body={"name": "schemathesis", "role": "admin"})
        assert status == 201, made
        seed(url + "/api/v1", made["token"])
        spec = owner.call("/openapi.json")[2]
        every = set(operations(spec))
        keep = [made["id"], made["user_id"]]
        run = schemathesis(url, made["token"], keep, config, tmp_path / "run", PHASES)
        print(f"schemathesis: {run.seconds:.0f} s, exit {run.exit_code}")  # the figure docs/api.md records
        assert run.report["failures"] == [], run.output
        assert run.report["test_cases"]["errored"] == 0, run.output
        assert run.report["warnings"]["missing_auth"] == [], run.output
        assert run.report["operations"]["tested"] == run.report["operations"]["selected"] == len(every)
        assert {name: p["status"] for name, p in run.report["phases"].items()} == {
            "examples": "success", "coverage": "success", "fuzzing": "success", "stateful": "success",
        }, run.output  # fmt: skip
        assert run.exit_code == 0, run.output

        # One stateful suite follows the links its seed favours; more suites, each with a fresh seed, until
        # every operation has been called by one (each must find nothing either).
        called = set(run.stateful_calls)
        for again in range(1, 1 + EXTRA_STATEFUL_SUITES):
            if every - NOT_STATEFUL <= called:
                break
            more = schemathesis(url, made["token"], keep, config, tmp_path / f"stateful-{again}", "stateful")
            print(f"stateful suite {again + 1}: {more.seconds:.0f} s")
            assert more.report["failures"] == [] and more.exit_code == 0, more.output
            called |= more.stateful_calls

    assert every >= NOT_STATEFUL, "NOT_STATEFUL names an operation the spec no longer has"
    with_ids = {
        name
        for name, op in operations(spec).items()
        if any(p["in"] == "path" for p in op.get("parameters", []))
    }
    unlinked = sorted(with_ids - NOT_STATEFUL - link_targets(spec))
    assert unlinked == [], f"operations that take an id no link leads to: {unlinked}"
    missed = sorted(every - NOT_STATEFUL - called)
    assert missed == [], f"the stateful phase never called: {missed}"
