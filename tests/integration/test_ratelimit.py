"""The shared rate limiter on both dialects: real databases, real OS processes, a real HTTP server.

The invariant checked on grant times t_1 <= ... <= t_n (GCRA's, see domain/ratelimit.py) is

    for all i <= j:  j - i + 1 <= burst + rate * (t_j - t_i)

i.e. a window of T seconds holds at most burst + rate*T grants: at 10/s with burst 10, at most 20 in
any 1 s window, 10 of them the burst, and no more than 10 per second beyond it. On the limiter's own
decision times it holds exactly; on times seen elsewhere (when acquire returned, when a request reached
the server) only up to scheduling and network jitter, so those checks carry an explicit slack. Timing
goals are generous bounds here; the precise figures belong in a benchmark (W3).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest
from aiohttp import web

from cosmogen.domain.bindings import RenderedRequest
from cosmogen.domain.ratelimit import Policy
from cosmogen.integrations.egress import EgressPolicy
from cosmogen.integrations.http import HttpCallError, HttpClient, HttpResponse
from cosmogen.integrations.ratelimit import RateLimiter, Throttle, Wait
from cosmogen.integrations.retry import RetryPolicy
from cosmogen.store import Database, migrate
from cosmogen.testing.echo import Answer, EchoServer
from tests.conftest import DIALECTS

ROOT = Path(__file__).resolve().parents[2]
LOCAL = EgressPolicy.from_strings(networks="127.0.0.1/32")
T0 = 1_800_000_000.0
TEN_PER_SECOND = Policy(10, 1.0, burst=10)
EPS = 1e-4  # seconds of float rounding in epoch-sized sums


@pytest.fixture(params=DIALECTS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated, empty database other processes can open: a SQLite file, or the session's PostgreSQL."""
    if request.param == "postgresql":
        return str(request.getfixturevalue("clean_pg_url"))
    url = f"sqlite:///{tmp_path / 'cosmogen.db'}"
    with Database.open(url=url) as db:
        migrate.upgrade(db)
    return url


def assert_within_bucket(times: list[float], policy: Policy, slack_s: float = 0.0) -> None:
    """No window [t_i, t_j] holds more than burst + rate * (t_j - t_i + slack) of `times`."""
    ordered = sorted(times)
    for i in range(len(ordered)):
        for j in range(i, len(ordered)):
            allowed = policy.burst + policy.rate * (ordered[j] - ordered[i] + slack_s + EPS)
            assert j - i + 1 <= allowed, (
                f"{j - i + 1} grants within {ordered[j] - ordered[i]:.3f} s (allowed {allowed:.2f}): "
                f"{[round(t - ordered[0], 3) for t in ordered]}"
            )


def most_in_any_window(times: list[float], width_s: float = 1.0) -> int:
    """The most of `times` in any closed window [t, t + width] (it suffices to start at each time)."""
    ordered = sorted(times)
    return max(sum(1 for u in ordered if t <= u <= t + width_s + EPS) for t in ordered)


class VirtualClock:
    """Epoch seconds that move only when someone sleeps: waits are exact and take no time."""

    def __init__(self, start: float = T0) -> None:
        self.now = start

    def time(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        await asyncio.sleep(0)


# --- one process, virtual clock ------------------------------------------------------------------------


def test_tokens_follow_gcra_on_the_shared_row(database_url: str) -> None:
    async def main() -> tuple[list[float], list[Wait]]:
        clock = VirtualClock()
        waits: list[Wait] = []
        with (
            Database.open(url=database_url) as db,
            RateLimiter(db, clock=clock.time, sleep=clock.sleep) as rl,
        ):
            grants = [await rl.acquire("openai:a", TEN_PER_SECOND, on_wait=waits.append) for _ in range(13)]
            assert [g.waited_s for g in grants[-4:]] == pytest.approx([0.1, 0.1, 0.1, 0.1], abs=EPS)
            # Another key has its own bucket.
            other = await rl.acquire("openai:b", TEN_PER_SECOND)
            assert other.at == clock.now and other.waited_s == 0
            state = await rl.peek("openai:a")
            assert state is not None and state.tat == pytest.approx(T0 + 1.5, abs=EPS)
            assert await rl.peek("openai:never") is None
        return [g.at for g in grants], waits

    ats, waits = asyncio.run(main())
    # 8 at once, then one per 100 ms from 100 ms on: the steady rate starts after the 200 ms arrival
    # allowance, 9.0 -> 9.2 s for 100 tokens.
    assert ats == pytest.approx([T0] * 8 + [T0 + 0.1, T0 + 0.2, T0 + 0.3, T0 + 0.4, T0 + 0.5], abs=EPS)
    assert [(w.key, w.blocked) for w in waits] == [("openai:a", False)] * 5
    assert [w.seconds for w in waits] == pytest.approx([0.1] * 5, abs=EPS)


def test_a_block_recorded_while_waiting_voids_the_token_and_only_grows(database_url: str) -> None:
    async def main() -> None:
        clock = VirtualClock()
        with Database.open(url=database_url) as db:
            rl = RateLimiter(db, clock=clock.time, sleep=clock.sleep)
            policy = Policy(1, 1.0)

            async def sleep_while_another_process_gets_a_429(seconds: float) -> None:
                # Another process records a 429 (blocked until T0 + 5) while this caller sleeps.
                if clock.now < T0 + 1:
                    await rl.block("slack:a", T0 + 5)
                await clock.sleep(seconds)

            waiting = RateLimiter(db, clock=clock.time, sleep=sleep_while_another_process_gets_a_429)
            try:
                waits: list[Wait] = []
                first = await waiting.acquire("slack:a", policy, on_wait=waits.append)
                second = await waiting.acquire("slack:a", policy, on_wait=waits.append)
            finally:
                waiting.close()
            assert first.at == T0
            # Reserved for T0 + 1.05 (1/s plus the arrival allowance), voided by the block, granted at its
            # end (and not before).
            assert second.at == T0 + 5 and clock.now == T0 + 5
            assert [(w.until, w.blocked) for w in waits] == [(T0 + 1.05, False), (T0 + 5, True)]
            # A shorter block never shortens a longer one.
            await rl.block("slack:a", T0 + 2)
            state = await rl.peek("slack:a")
            assert state is not None and state.blocked_until == T0 + 5
            # A new key can be blocked before it was ever used.
            await rl.block("slack:new", T0 + 9)
            blocked = await rl.acquire("slack:new", policy)
            assert blocked.at == T0 + 9
            rl.close()

    asyncio.run(main())


def test_tokens_skip_the_fsync_but_nothing_else_does(tmp_path: Path) -> None:
    """The limiter's own SQLite connection commits without fsync (synchronous=NORMAL) and gives the
    connection back to the pool with FULL again, so no other writer inherits the relaxed setting."""
    with Database.open(data_dir=tmp_path) as db:
        migrate.upgrade(db)
        limiter = RateLimiter(db)
        raw = limiter._conn.connection.driver_connection
        assert raw is not None
        assert raw.execute("PRAGMA synchronous").fetchone() == (1,)  # NORMAL
        with db.engine.connect() as other:
            assert other.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL elsewhere meanwhile
        asyncio.run(limiter.acquire("openai:a", TEN_PER_SECOND))
        limiter.close()
        assert raw.execute("PRAGMA synchronous").fetchone() == (2,)  # FULL, back in the pool


def test_every_attempt_costs_a_token_and_a_429_blocks_the_key(database_url: str) -> None:
    async def main() -> None:
        server = EchoServer()
        await server.start()
        clock = VirtualClock()
        retry_sleeps: list[float] = []

        async def retry_sleep(seconds: float) -> None:
            retry_sleeps.append(seconds)

        client = HttpClient(LOCAL, sleep=retry_sleep, random_unit=lambda: 0.5)
        await client.start()
        try:
            with (
                Database.open(url=database_url) as db,
                RateLimiter(db, clock=clock.time, sleep=clock.sleep) as rl,
            ):
                waits: list[Wait] = []
                throttle = Throttle(rl, "openai:a", TEN_PER_SECOND, on_wait=waits.append)
                reset = int(T0) + 30  # an epoch time, as GitHub and X send it
                server.script = [
                    Answer(503),
                    Answer(429, {}, {"x-ratelimit-reset": str(reset)}),
                    Answer(200, {}),
                ]
                request = RenderedRequest("PUT", server.url + "/v1/things/1", {}, {"a": 1}, 5.0)
                response = await client.send(request, throttle=throttle)
                state = await rl.peek("openai:a")
        finally:
            await client.close()
            await server.close()
        assert response.attempts == 3 and len(server.requests) == 3
        # The retry policy is unchanged: equal jitter under the 1 s and 2 s caps (random_unit 0.5), the
        # x-ratelimit-reset block being the limiter's business, not the backoff's.
        assert retry_sleeps == [0.75, 1.5]
        assert state is not None and state.blocked_until == reset
        # Three attempts, three tokens: two at once, the third at the block's end, restarting without a burst.
        # Heard twice: when the 429 blocks the key (this caller then waits in its backoff), and when its
        # retry's token waits for the block's end.
        assert [(w.until, w.blocked) for w in waits] == [(reset, True), (reset, True)]
        assert state.tat == pytest.approx(reset + TEN_PER_SECOND.tolerance_s + 0.1, abs=EPS)

    asyncio.run(main())


# --- several processes -------------------------------------------------------------------------------


class TokenTaker:
    """`python -m cosmogen.testing.ratelimit_client` in a fresh process; grants arrive as it prints them."""

    def __init__(self, url: str, key: str, count: int, concurrency: int, policy: Policy, log: Path) -> None:
        self.log = log
        self._stderr: IO[str] = log.open("w")
        args = [url, key, count, concurrency, policy.requests, policy.period_s, policy.burst]
        self.process = subprocess.Popen(
            [sys.executable, "-m", "cosmogen.testing.ratelimit_client", *map(str, args)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            cwd=ROOT,
        )
        self.grants: list[dict[str, Any]] = []
        self.ready = threading.Event()
        self.done = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.startswith("READY"):
                self.ready.set()
            elif line.startswith("DONE"):
                self.done.set()
            elif line.startswith("{"):
                self.grants.append(json.loads(line))

    def wait(self, event: threading.Event, timeout_s: float = 60.0) -> None:
        if not event.wait(timeout_s):
            raise AssertionError(f"token taker {self.process.pid} stuck; stderr: {self.log.read_text()}")

    def go(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write("go\n")
        self.process.stdin.flush()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        self._reader.join(timeout=10)  # it ends at the pipe's end of file
        for pipe in (self.process.stdin, self.process.stdout, self._stderr):
            if pipe is not None:
                pipe.close()


@pytest.fixture
def takers() -> Iterator[list[TokenTaker]]:
    started: list[TokenTaker] = []
    try:
        yield started
    finally:
        for taker in started:
            taker.stop()


@pytest.mark.slow
def test_three_processes_share_one_bucket(
    database_url: str, tmp_path: Path, takers: list[TokenTaker]
) -> None:
    """60 tokens at 10/s, burst 10, asked for at once by 3 processes x 20 tasks on one new key."""
    key = "openai:shared"
    for n in range(3):
        takers.append(TokenTaker(database_url, key, 20, 20, TEN_PER_SECOND, tmp_path / f"taker{n}.log"))
    for taker in takers:
        taker.wait(taker.ready)
    for taker in takers:
        taker.go()
    for taker in takers:
        taker.wait(taker.done)
    grants = [grant for taker in takers for grant in taker.grants]
    assert len(grants) == 60
    assert {g["pid"] for g in grants} == {t.process.pid for t in takers}  # every process got some
    at = sorted(g["at"] for g in grants)
    assert_within_bucket(at, TEN_PER_SECOND)  # exact on the decision times
    assert most_in_any_window(at) <= 20
    assert all(g["returned"] >= g["at"] for g in grants)  # never used before its time
    # Ideal: (60 - 10) / 10 = 5.0 s from first to last grant, plus the 200 ms arrival allowance.
    assert 5.2 - EPS <= at[-1] - at[0] <= 6.5
    returned = sorted(g["returned"] for g in grants)
    assert returned[-1] - returned[0] <= 8.0
    assert_within_bucket(returned, TEN_PER_SECOND, slack_s=0.5)  # seen by the callers, late by scheduling


async def _send_into_a_429(url: str, key: str, policy: Policy) -> tuple[float, float]:
    """One throttled call that gets `429, Retry-After: 2`; returns (when send gave up, blocked_until)."""
    server = EchoServer()
    await server.start()
    server.script = [Answer(429, {"error": "slow down"}, {"Retry-After": "2"})]
    client = HttpClient(LOCAL, retry=RetryPolicy(max_retries=0))
    await client.start()
    try:
        with Database.open(url=url) as db, RateLimiter(db) as limiter:
            request = RenderedRequest("POST", server.url + "/api/chat.postMessage", {}, {"text": "hi"}, 5.0)
            with pytest.raises(HttpCallError) as info:
                await client.send(request, throttle=Throttle(limiter, key, policy))
            gave_up = time.time()
            state = await limiter.peek(key)
    finally:
        await client.close()
        await server.close()
    assert info.value.status == 429
    assert state is not None and state.blocked_until is not None
    assert gave_up + 1.0 <= state.blocked_until <= gave_up + 2.0
    return gave_up, state.blocked_until


@pytest.mark.slow
def test_a_429_in_one_process_blocks_the_key_in_another(
    database_url: str, tmp_path: Path, takers: list[TokenTaker]
) -> None:
    key, policy = "slack:blocked", Policy(5, 1.0)
    other = TokenTaker(database_url, key, 15, 5, policy, tmp_path / "other.log")
    takers.append(other)
    other.wait(other.ready)
    other.go()
    deadline = time.monotonic() + 30
    while len(other.grants) < 2:  # the other process is mid-stream, holding tokens reserved ahead
        assert time.monotonic() < deadline, "the other process took no tokens"
        time.sleep(0.01)
    gave_up, until = asyncio.run(_send_into_a_429(database_url, key, policy))
    other.wait(other.done)
    at = sorted(g["at"] for g in other.grants)
    # Once the block is committed (before send gave up), nothing of the key is granted until it ends:
    # tokens the other process had reserved inside it were voided and taken again after it.
    assert [t for t in at if gave_up <= t < until] == []
    after = [t for t in at if t >= until]
    assert after and after[0] - until <= 1.0  # and it resumes
    assert all(g["returned"] >= g["at"] for g in other.grants)
    assert_within_bucket(at, policy)


# --- DUR-12 subset: through HttpClient against a provider enforcing the same bucket -------------------

JITTER_S = 0.1


class BucketServer:
    """A provider with its own token bucket (written apart from our GCRA): `policy`, forgiving a request
    up to JITTER_S early, since our limiter decides when a request leaves and the server sees when it
    arrives. Over the limit (or at request numbers in `refuse`) it answers 429 with Retry-After."""

    def __init__(self, policy: Policy, refuse: frozenset[int] = frozenset(), retry_after: str = "1") -> None:
        self.policy = policy
        self.refuse = refuse
        self.retry_after = retry_after
        self.tokens = float(policy.burst)
        self.last: float | None = None
        self.arrivals: list[tuple[float, int]] = []  # (time.time(), status)
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        now = time.time()
        number = len(self.arrivals) + 1
        if self.last is not None:
            self.tokens = min(float(self.policy.burst), self.tokens + (now - self.last) * self.policy.rate)
        self.last = now
        if number in self.refuse or self.tokens < 1 - self.policy.rate * JITTER_S:
            self.arrivals.append((now, 429))
            return web.json_response(
                {"error": "rate_limited"}, status=429, headers={"Retry-After": self.retry_after}
            )
        self.tokens -= 1
        self.arrivals.append((now, 200))
        return web.json_response({"ok": True, "n": number})


async def _fifty_sends(url: str, server: BucketServer, key: str) -> tuple[list[HttpResponse], float | None]:
    """50 concurrent throttled sends; also watches the key and returns when a block first appeared."""
    await server.start()
    client = HttpClient(LOCAL)
    await client.start()
    seen_blocked: float | None = None
    try:
        with Database.open(url=url) as db, RateLimiter(db) as limiter:
            throttle = Throttle(limiter, key, server.policy)

            async def watch() -> None:
                # A limiter of its own (own thread and connection) only reads, so the senders' wait nothing.
                nonlocal seen_blocked
                with RateLimiter(db) as watcher:
                    while True:
                        state = await watcher.peek(key)
                        if state is not None and state.blocked_until is not None:
                            seen_blocked = time.time()
                            return
                        await asyncio.sleep(0.01)

            watcher = asyncio.create_task(watch())
            requests = [
                RenderedRequest("POST", f"{server.url}/v1/chat/{n}", {}, {"n": n}, 10.0) for n in range(50)
            ]
            responses = await asyncio.gather(
                *(
                    client.send(r, idempotency_key=f"k{n}", key_header="Idempotency-Key", throttle=throttle)
                    for n, r in enumerate(requests)
                )
            )
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher  # its limiter closes before the database does
    finally:
        await client.close()
        await server.close()
    return list(responses), seen_blocked


@pytest.mark.slow
def test_dur12_concurrent_sends_never_exceed_the_providers_bucket(database_url: str) -> None:
    server = BucketServer(TEN_PER_SECOND)
    responses, _ = asyncio.run(_fifty_sends(database_url, server, "openai:dur12"))
    statuses = [status for _, status in server.arrivals]
    assert statuses.count(429) == 0
    assert len(statuses) == 50 and all(r.status == 200 and r.attempts == 1 for r in responses)
    arrived = sorted(t for t, _ in server.arrivals)
    assert_within_bucket(arrived, TEN_PER_SECOND, slack_s=JITTER_S)
    assert most_in_any_window(arrived) <= 20  # the burst of 10 plus 10 more in the same second
    # Ideal: (50 - 10) / 10 = 4.0 s from first to last arrival, plus the 200 ms arrival allowance.
    assert 4.2 - JITTER_S <= arrived[-1] - arrived[0] <= 6.0


@pytest.mark.slow
def test_dur12_a_providers_429_stops_every_sender_until_retry_after(database_url: str) -> None:
    """The provider refuses request 15 with Retry-After: 1 (as if its limit were lower than ours)."""
    server = BucketServer(TEN_PER_SECOND, refuse=frozenset({15}))
    responses, seen_blocked = asyncio.run(_fifty_sends(database_url, server, "openai:dur12-429"))
    assert all(r.status == 200 for r in responses)
    assert sorted(r.attempts for r in responses) == [1] * 49 + [2]  # the refused one, retried once
    assert [status for _, status in server.arrivals].count(429) == 1
    refused_at = next(t for t, status in server.arrivals if status == 429)
    assert seen_blocked is not None and seen_blocked >= refused_at
    until = refused_at + 1.0  # Retry-After: 1, counted from the client's receipt (later, never earlier)
    # Requests granted before the block was committed may still arrive just after it; nothing later.
    late = [t - refused_at for t, _ in server.arrivals if seen_blocked + JITTER_S <= t < until]
    assert late == [], f"arrivals during Retry-After at +{late} s"
    resumed = [t for t, _ in server.arrivals if t >= until]
    assert resumed and resumed[0] - until <= 0.5
