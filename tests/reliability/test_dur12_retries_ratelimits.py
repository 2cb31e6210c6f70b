"""DUR-12: retries, rate limits and 429, on both dialects, on a virtual clock.

The provider simulator enforces a token bucket of 10 requests/s (burst 1) on OpenAI chat and answers
429 with `Retry-After: 7`, 5xx and slow answers where the test scripts them. 100 runs, each making one
provider call through a saved account whose limit is the same 10/s, start at once; then single runs go
through every retry rule in turn. Everything is real (runtime, executor, journal on SQLite or
PostgreSQL, the shared RateLimiter, HttpClient, the simulator over TCP) except time: the event loop is a
`VirtualTimeLoop`, so a 7 s Retry-After, 60 s timeout or 4 s backoff costs no real time, and the
simulator stamps arrivals on the same clock, exactly.

What is checked (reliability.md, DUR-12):
- at the provider, at most 10 chat requests in any 1 s window, and its bucket never had to refuse one;
- no request in the 7 s after a 429 with Retry-After: 7, from any run, and none before an unthrottled
  call's Retry-After even above the 60 s backoff cap;
- backoff exponential with equal jitter (retry n waits within [c/2, c] for caps c = 1, 2, 4 s),
  capped, at most 4 attempts (the matrix allows 5); a timeout is retried when repeating is safe;
- a POST with no idempotency key that timed out is sent once and its effect ends `ambiguous` (the run
  asks a person), although the provider did carry it out;
- 4xx answers (400, 401, 403, 404, 409, 422) are sent once;
- a run waiting for the limit shows `waiting` with the time its call then actually went.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, select
from tests.conftest import DIALECTS
from tests.integration.runtime.test_provider_calls import SLACK_TOKEN, connect

from cosmogen.domain.runs import RunStatus
from cosmogen.integrations.egress import EgressPolicy
from cosmogen.integrations.ratelimit import RateLimiter
from cosmogen.integrations.retry import RetryPolicy
from cosmogen.integrations.secret import Secret
from cosmogen.integrations.vault import new_key
from cosmogen.runtime import journal
from cosmogen.runtime.service import Runtime, RuntimeSettings
from cosmogen.store import repos
from cosmogen.store.tables import effects, runs
from cosmogen.testing import virtual_time
from cosmogen.testing.simulator import DEFAULT_API_KEY, Fault, Simulator
from cosmogen.testing.simulator.log import LoggedRequest

RUNS = 100
RATE = 10  # requests per second, at the provider and in the account's limit
RETRY_AFTER_S = 7.0
TIMEOUT_S = 60.0  # the executor's provider_timeout_s
SLOW_ANSWER_S = 65.0  # a provider that answers after the client gave up, and still acts
EPS = 1e-6  # float rounding of epoch-sized sums


@pytest.fixture(params=DIALECTS)
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> RuntimeSettings:
    base = RuntimeSettings(
        egress=EgressPolicy.from_strings(networks="127.0.0.1/32"),
        concurrency=RUNS,
        # The in-process worker's heartbeats run on the virtual clock while PostgreSQL judges them by
        # its own: a long limit keeps the sweeper from declaring this very worker dead.
        worker_dead_after_s=3600.0,
    )
    if request.param == "sqlite":
        return replace(base, data_dir=tmp_path / "data")
    keys = {"active": "k1", "keys": {"k1": base64.b64encode(new_key()).decode()}}
    return replace(
        base, database_url=request.getfixturevalue("clean_pg_url"), vault_keys=Secret(json.dumps(keys))
    )


@dataclass
class World:
    runtime: Runtime
    sim: Simulator
    loop: virtual_time.VirtualTimeLoop
    sleeps: list[tuple[float, float]] = field(default_factory=list)  # (virtual start, seconds) of retries


@asynccontextmanager
async def world(settings: RuntimeSettings) -> AsyncIterator[World]:
    loop = virtual_time.current()
    async with Simulator(api_keys=[DEFAULT_API_KEY, SLACK_TOKEN], clock=loop.time, wall=loop.epoch) as sim:
        runtime = await Runtime.open(settings)
        # The clocks the runtime reads itself, made virtual (its sleeps already are, through the loop).
        assert runtime.executor.limiter is not None
        runtime.executor.limiter.close()
        runtime.executor.limiter = RateLimiter(runtime.db, clock=loop.epoch)
        runtime.http.now = loop.utcnow
        here = World(runtime, sim, loop)

        async def recorded_sleep(seconds: float) -> None:
            here.sleeps.append((loop.time(), seconds))
            await asyncio.sleep(seconds)

        runtime.http.sleep = recorded_sleep
        try:
            if runtime.queued:
                await runtime.start_worker()
            yield here
        finally:
            await runtime.close()


def one_call(binding: dict[str, Any]) -> dict[str, Any]:
    return {
        "cosmogen": "universe/1",
        "name": f"dur12 {binding['id']}",
        "nodes": [
            {"id": "b", "type": "begin", "entity": "post:1", "properties": {"topic": "limits"}},
            {"id": "ask", "type": "become", "entity": "post:1", "transform": {"asked": "true"}},
        ],
        "edges": [{"source": "b", "target": "ask"}],
        "bindings": [{"node": "ask", "kind": "provider", **binding}],
    }


CHAT = {
    "id": "chat",
    "capability": "openai.chat",
    "account": "openai-main",
    "settings": {"prompt": "run {{ run.id }}", "max_tokens": 5},  # the run id names each request
}
POST = {
    "id": "post",
    "capability": "slack.post_message",
    "account": "team-slack",
    "settings": {"channel": "C0SIM00001", "text": "run {{ run.id }}"},
}


def fetch(path: str, method: str = "GET") -> dict[str, Any]:
    return {
        "id": "fetch",
        "capability": "http.request",
        "account": "api",
        "settings": {"method": method, "path": path},
    }


async def save(runtime: Runtime, document: dict[str, Any]) -> repos.SavedVersion:
    def write(conn: Connection) -> repos.SavedVersion:
        return repos.save_version(conn, workspace_id="default", name=document["name"], document=document)

    return await runtime.writer.write(write)


async def start(runtime: Runtime, saved: repos.SavedVersion) -> str:
    return await runtime.start_run(saved.universe_id, saved.version_id)


async def settle(runtime: Runtime, run_ids: list[str]) -> dict[str, RunStatus]:
    """Wait until every run stops moving; PostgreSQL: one query a (virtual) second for all of them."""
    if not runtime.queued:
        found = await asyncio.gather(*(runtime.wait(run_id) for run_id in run_ids))
        return dict(zip(run_ids, found, strict=True))
    while True:
        with runtime.db.engine.connect() as conn:
            rows = conn.execute(select(runs.c.id, runs.c.status).where(runs.c.id.in_(run_ids))).all()
        statuses = {row.id: RunStatus(row.status) for row in rows}
        if all(s not in (RunStatus.QUEUED, RunStatus.RUNNING) for s in statuses.values()):
            return statuses
        await asyncio.sleep(1.0)


async def one_run(here: World, binding: dict[str, Any]) -> tuple[RunStatus, dict[str, Any]]:
    submitted = await here.runtime.submit(one_call(binding))
    status = (await settle(here.runtime, [submitted.run_id]))[submitted.run_id]
    with here.runtime.db.engine.connect() as conn:
        [effect] = conn.execute(select(effects).where(effects.c.run_id == submitted.run_id)).all()
    return status, dict(effect._mapping)


def most_in_any_closed_window(times: list[float], width: float = 1.0) -> int:
    """Stricter than the simulator's half-open window: [t, t + width] with both ends counted."""
    ordered = sorted(times)
    return max(sum(1 for u in ordered if t <= u <= t + width + EPS) for t in ordered)


def gaps(entries: list[LoggedRequest]) -> list[float]:
    return [b.time - a.time for a, b in itertools.pairwise(entries)]


def epoch_of(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


# --- 100 concurrent runs through one limited account ----------------------------------------------------


def test_100_runs_share_the_limit_obey_retry_after_and_never_resend_an_unkeyed_post(
    settings: RuntimeSettings,
) -> None:
    async def main() -> dict[str, Any]:
        async with world(settings) as here:
            runtime, sim = here.runtime, here.sim
            sim.limit("openai.chat", rate=RATE, burst=1)
            limit = {"rate_limit": {"requests": RATE, "per": "1s", "burst": 1}}
            await connect(
                runtime, "openai-main", "openai", sim.url, "api_key", DEFAULT_API_KEY, settings=limit
            )
            await connect(
                runtime, "team-slack", "slack", sim.url, "access_token", SLACK_TOKEN,
                auth_kind="oauth2", scopes=["chat:write"],
            )  # fmt: skip
            # Two 429s (the 16th and 61st chat requests), three 503s in a row (31st-33rd): whichever runs
            # they fall on. The Slack post is answered only after 65 s, past the client's 60 s timeout.
            sim.inject(Fault.rate_limited(retry_after=RETRY_AFTER_S), "openai.chat", after=15)
            sim.inject(Fault.rate_limited(retry_after=RETRY_AFTER_S), "openai.chat", after=60)
            sim.inject(Fault.server_error(503), "openai.chat", times=3, after=30)
            sim.inject(Fault.timeout(SLOW_ANSWER_S), "slack.postMessage")
            chat = await save(runtime, one_call(CHAT))
            post = await save(runtime, one_call(POST))
            chats = await asyncio.gather(*(start(runtime, chat) for _ in range(RUNS - 1)))
            unkeyed = await start(runtime, post)

            # Mid-way (20 calls in, past the first 429): what the waiting runs say about themselves. Waited
            # for by event, not for a virtual duration: the loop cannot see the writer thread, so virtual
            # time may jump while runs wait for a commit. Every write queued so far is committed once a
            # write queued after them is (FIFO batches).
            while len(sim.log.select("openai.chat")) < 20:
                await asyncio.sleep(0.05)
            await runtime.writer.write(lambda _conn: None)
            with runtime.db.engine.connect() as conn:
                rows = conn.execute(select(runs.c.id, runs.c.waiting).where(runs.c.id.in_(chats))).all()
            waiting_mid = [row.waiting for row in rows if row.waiting]

            statuses = await settle(runtime, [*chats, unkeyed])
            while [e.outcome for e in sim.log.select("slack.postMessage")] != ["ok"]:
                await asyncio.sleep(1.0)  # until the slow provider has answered (to nobody) and acted
            with runtime.db.engine.connect() as conn:
                effect_rows = conn.execute(select(effects).where(effects.c.run_id.in_([*chats, unkeyed])))
                by_run = {row.run_id: dict(row._mapping) for row in effect_rows}
                events = {run_id: journal.events_of(conn, run_id) for run_id in chats}
                final_waiting = conn.execute(
                    select(runs.c.waiting).where(
                        runs.c.id.in_([*chats, unkeyed]), runs.c.waiting.is_not(None)
                    )
                ).all()
                unkeyed_error = conn.execute(select(runs.c.error).where(runs.c.id == unkeyed)).scalar_one()
            return {
                "chats": chats,
                "unkeyed": unkeyed,
                "statuses": statuses,
                "effects": by_run,
                "events": events,
                "waiting_mid": waiting_mid,
                "final_waiting": final_waiting,
                "unkeyed_error": unkeyed_error,
                "log": list(sim.log.entries),
                "posted": [e for e in sim.effects if e.route == "slack.postMessage"],
                "sleeps": list(here.sleeps),
            }

    got = virtual_time.run(main())
    chats, unkeyed, log = got["chats"], got["unkeyed"], got["log"]

    # Every chat run succeeded; nothing the bucket had to refuse, only the two scripted 429s.
    assert Counter(got["statuses"][r] for r in chats) == {RunStatus.SUCCEEDED: RUNS - 1}
    chat_log = [e for e in log if e.route == "openai.chat"]
    assert [e.outcome for e in chat_log].count("rate_limited") == 0
    scripted_429 = [e for e in chat_log if e.status == 429]
    assert len(scripted_429) == 2 and all(e.fault == "rate_limit" for e in scripted_429)
    assert sum(1 for e in chat_log if e.status == 503) == 3
    assert sum(1 for e in chat_log if e.status == 200) == RUNS - 1

    # At most 10 requests in any 1 s window, both ends counted.
    times = [e.time for e in chat_log]
    assert most_in_any_closed_window(times) <= RATE

    # Nothing at all reached the provider in the 7 s after each 429 (every run waited, not only the one
    # that got it), and the provider was used again once the 7 s were over.
    for refused in scripted_429:
        inside = [
            round(t - refused.time, 3) for t in times if refused.time < t < refused.time + RETRY_AFTER_S
        ]
        assert inside == [], f"requests {inside} s after a 429 with Retry-After: 7"
        assert any(refused.time + RETRY_AFTER_S - EPS <= t < refused.time + RETRY_AFTER_S + 1 for t in times)

    # Each refused call was retried once, after the wait its answer called for: Retry-After for a 429,
    # the first backoff (0.5-1 s, equal jitter under the 1 s cap) for a 503; the token it then needed
    # may add to that, never subtract.
    per_run: dict[str, list[LoggedRequest]] = defaultdict(list)
    for entry in chat_log:
        per_run[entry.body["messages"][0]["content"]].append(entry)
    assert len(per_run) == RUNS - 1
    retried = {prompt: tries for prompt, tries in per_run.items() if len(tries) > 1}
    assert len(retried) == 5 and all(len(tries) == 2 for tries in retried.values())
    for tries in retried.values():
        first, second = tries
        floor = RETRY_AFTER_S if first.status == 429 else 0.5
        assert second.time - first.time >= floor - EPS and second.status == 200
    assert sorted(round(s, 6) for _, s in got["sleeps"] if s == RETRY_AFTER_S) == [RETRY_AFTER_S] * 2
    backoffs = [s for _, s in got["sleeps"] if s != RETRY_AFTER_S]
    assert len(backoffs) == 3 and all(0.5 <= s <= 1.0 for s in backoffs), backoffs
    assert max(effect["response"]["attempts"] for effect in got["effects"].values()) <= 4

    # The POST without a key that timed out: sent once, not retried, recorded as ambiguous, the run asks
    # a person. The provider did carry it out (its answer came after 65 s): resending would post twice.
    assert got["statuses"][unkeyed] is RunStatus.NEEDS_ATTENTION
    unkeyed_effect = got["effects"][unkeyed]
    assert unkeyed_effect["status"] == "ambiguous"
    assert unkeyed_effect["response"]["error"]["kind"] == "timeout"
    assert unkeyed_effect["response"]["attempts"] == 1
    assert got["unkeyed_error"]["code"] == "ambiguous-effect"
    assert "retry_anyway" in got["unkeyed_error"]["actions"]
    [slack_request] = [e for e in log if e.route == "slack.postMessage"]
    assert slack_request.fault == "delay"
    assert [p.data["text"] for p in got["posted"]] == [f"run {unkeyed}"]

    # Waiting runs said so while they waited (here 3 s in), and the time each named was when its request
    # then went (the limiter reserves exact times), unless a 429 changed the plan: a 429 blocks the key
    # for everyone, which voids reservations inside the block and makes the runs wait again.
    assert len(got["waiting_mid"]) >= RUNS // 2
    assert {w["reason"] for w in got["waiting_mid"]} <= {"rate_limit", "rate_limit_retry_after"}
    assert all((w["node"], w["binding"]) == ("ask", "chat") for w in got["waiting_mid"])
    first_429 = min(e.time for e in scripted_429)
    shown_runs = 0
    for run_id in chats:
        untils = [
            epoch_of(e["payload"]["until"]) - virtual_time.EPOCH_START
            for e in got["events"][run_id]
            if e["type"] == "effect.waiting"
        ]
        went = [e.time for e in per_run[f"run {run_id}"]]
        for until in untils:
            assert any(abs(until - t) < 1e-3 for t in went) or until > first_429, (run_id, until, went)
        if untils:
            assert abs(untils[-1] - went[-1]) < 1e-3, (run_id, untils, went)  # the last wait: exact
            shown_runs += 1
    assert shown_runs >= RUNS // 2
    reasons = Counter(
        e["payload"]["reason"]
        for run_id in chats
        for e in got["events"][run_id]
        if e["type"] == "effect.waiting"
    )
    assert reasons["rate_limit"] >= RUNS // 2 and reasons["rate_limit_retry_after"] >= 2
    assert got["final_waiting"] == []  # cleared with each call's outcome


# --- one run at a time: each retry rule on its own ------------------------------------------------------


def test_backoff_caps_attempts_timeouts_and_terminal_4xx(settings: RuntimeSettings) -> None:
    policy = RetryPolicy()

    async def main() -> dict[str, Any]:
        async with world(settings) as here:
            runtime, sim = here.runtime, here.sim
            # An HTTP API with no rate limit: what is measured is the retry policy alone.
            await connect(runtime, "api", "http", f"{sim.url}/webhook", "api_key", "sim-any-key")
            found: dict[str, Any] = {}

            async def case(name: str, binding: dict[str, Any], *faults: tuple[Fault, int]) -> None:
                sim.reset()
                here.sleeps.clear()
                for fault, times in faults:
                    sim.inject(fault, "webhook", times=times)
                status, effect = await one_run(here, binding)
                found[name] = (status, effect, sim.log.select("webhook"), list(here.sleeps))

            await case("three 500s", fetch("/a"), (Fault.server_error(500), 3))
            await case("four 500s", fetch("/b"), (Fault.server_error(500), 4))
            await case("a timeout", fetch("/c"), (Fault.timeout(SLOW_ANSWER_S), 1))
            await case("Retry-After 120", fetch("/d"), (Fault.rate_limited(retry_after=120), 1))
            # 401 last: it puts the account in error ("reconnect it"), so later runs would not call at all.
            for status in (400, 403, 404, 409, 422, 401):
                await case(f"{status}", fetch("/e", "POST"), (Fault.server_error(status), 1))
            return found

    found = virtual_time.run(main())

    # Three 500s, then success: 4 attempts, each wait within [c/2, c] of caps 1, 2, 4 s, and the gaps
    # the provider saw are those waits (no limiter here).
    status, effect, seen, sleeps = found["three 500s"]
    assert status is RunStatus.SUCCEEDED and effect["response"]["attempts"] == 4
    assert [e.status for e in seen] == [500, 500, 500, 200]
    waits = [s for _, s in sleeps]
    assert len(waits) == 3
    for n, wait in enumerate(waits, start=1):
        assert policy.cap(n) / 2 <= wait <= policy.cap(n) == 2.0 ** (n - 1)
    assert gaps(seen) == pytest.approx(waits, abs=0.05)
    assert all(gap >= wait - EPS for gap, wait in zip(gaps(seen), waits, strict=True))

    # Four 500s: given up after 4 attempts (at most 5 allowed), the run fails.
    status, effect, seen, sleeps = found["four 500s"]
    assert status is RunStatus.FAILED and effect["status"] == "failed"
    assert effect["response"]["attempts"] == 4 and len(seen) == 4 and len(sleeps) == 3

    # A GET that timed out is safe to repeat: retried after the first backoff, the answer then used.
    status, effect, seen, sleeps = found["a timeout"]
    assert status is RunStatus.SUCCEEDED and effect["response"]["attempts"] == 2
    assert [e.fault for e in seen] == ["delay", None]
    [(_, wait)] = sleeps
    assert 0.5 <= wait <= 1.0
    # (aiohttp rounds a timeout's deadline up to a whole second of the loop's clock.)
    assert TIMEOUT_S + wait - EPS <= gaps(seen)[0] <= TIMEOUT_S + 1 + wait + 0.05

    # Retry-After above the 60 s backoff cap is still obeyed: nothing before it expires.
    status, effect, seen, sleeps = found["Retry-After 120"]
    assert status is RunStatus.SUCCEEDED and [e.status for e in seen] == [429, 200]
    assert [s for _, s in sleeps] == [120.0]
    assert gaps(seen)[0] >= 120.0 - EPS

    # 4xx: sent once, never retried, the run fails with the provider's status.
    for code in (400, 401, 403, 404, 409, 422):
        status, effect, seen, sleeps = found[str(code)]
        assert status is RunStatus.FAILED, code
        assert [e.status for e in seen] == [code] and sleeps == [], code
        assert effect["response"]["attempts"] == 1 and effect["response"]["status"] == code
