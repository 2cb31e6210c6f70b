"""W4 `dashboard`: W2 load (durable 3-node runs calling the echo server, concurrency 16) in a process that
serves the API, while a dashboard client in another process is subscribed to the workspace's live event
stream over a WebSocket. Timed per event, on the same machine's clock, p50 and p99 per round:

- commit -> client (the goal's measure): from the journal's commit (the in-process commit hook,
  store/writer.py `subscribe_commits`, the moment the feed itself is woken) to the client's receipt:
  what the stream adds, i.e. reading the events back, fan-out, JSON, WebSocket, the client;
- write -> client: from the envelope's `at` (taken when the journal writes it, before the group commit)
  to receipt, so including the wait for the commit;
- the same-run baseline write -> commit: the commit alone, before any API work.

The client also checks the stream is whole: every event of the round, in id order, none missing.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import uvicorn
from sqlalchemy import func, select

from cosmogen.api.app import create_app
from cosmogen.bench.stats import summary
from cosmogen.bench.throughput import EchoProcess, document
from cosmogen.domain.roles import Role
from cosmogen.identity import tokens, users
from cosmogen.integrations.egress import EgressPolicy
from cosmogen.runtime import notify
from cosmogen.runtime.service import Runtime, RuntimeSettings
from cosmogen.store.tables import run_events


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, int(len(ordered) * q + 0.5) - 1))]


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _viewer_token(runtime: Runtime) -> str:
    with runtime.db.engine.begin() as conn:
        user_id = users.create_user("dashboard@bench.invalid", "dashboard")(conn)
        users.add_member(runtime.settings.workspace, user_id, Role.VIEWER)(conn)
        secret, write = tokens.create_token(
            user_id=user_id, workspace_id=runtime.settings.workspace, name="w4", role=Role.VIEWER
        )
        write(conn)
    return secret.reveal()


class _Client:
    """The dashboard: `python -m cosmogen.bench.dashboard <ws url>` in its own process (token on stdin)."""

    def __init__(self, uri: str, token: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "cosmogen.bench.dashboard", uri],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(token + "\n")
        self.process.stdin.flush()
        ready = self.process.stdout.readline().strip()
        if ready != "ready":
            self.process.kill()
            raise RuntimeError(f"the dashboard client did not connect: {ready!r}")

    def finish(self, last_id: int) -> dict[str, Any]:
        """Tell it the round's last event id; it answers once it has seen it."""
        out, _ = self.process.communicate(f"{last_id}\n", timeout=120)
        return dict(json.loads(out))


async def _round(url: str, data_dir: Path, runs: int, concurrency: int) -> dict[str, Any]:
    settings = RuntimeSettings(
        data_dir=data_dir, egress=EgressPolicy.from_strings(networks="127.0.0.1/32"), concurrency=concurrency
    )
    runtime = await Runtime.open(settings)
    hooked: list[tuple[float, list[str]]] = []

    def on_commit(signals: list[Any]) -> None:  # the baseline: the writer thread, right after COMMIT
        payloads = [
            s.payload
            for s in signals
            if isinstance(s, notify.Notification) and s.channel == notify.EVENTS_CHANNEL
        ]
        hooked.append((time.time(), payloads))

    runtime.writer.subscribe_commits(on_commit)

    async def opened() -> Runtime:
        return runtime

    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(opened), host="127.0.0.1", port=port, log_level="warning", ws_max_size=1 << 20
        )
    )
    serving = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if serving.done():
                serving.result()
            await asyncio.sleep(0.02)
        client = await asyncio.to_thread(
            _Client, f"ws://127.0.0.1:{port}/api/v1/events/ws", _viewer_token(runtime)
        )
        warm = await runtime.submit(document(url))
        await runtime.wait(warm.run_id)
        remaining = runs
        failed = 0

        async def worker() -> None:
            nonlocal remaining, failed
            while remaining > 0:
                remaining -= 1
                run_id = await runtime.start_run(warm.universe_id, warm.version_id)
                if (await runtime.wait(run_id)).value != "succeeded":
                    failed += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
        with runtime.db.engine.connect() as conn:
            last_id = int(conn.execute(select(func.max(run_events.c.id))).scalar() or 0)
            written = {
                (r.run_id, r.seq): r.created_at.timestamp()
                for r in conn.execute(
                    select(run_events.c.run_id, run_events.c.seq, run_events.c.created_at).where(
                        run_events.c.run_id.is_not(None)  # the runs' events (no account changes here)
                    )
                )
            }
        seen = await asyncio.to_thread(client.finish, last_id)
    finally:
        server.should_exit = True
        await serving  # the app's lifespan closes the runtime
    baseline = _hook_latencies(hooked, written)
    api = seen["latencies"]
    committed = _commit_times(hooked, written)
    stream = [received - committed[(run_id, seq)] for run_id, seq, received in seen["receipts"]]
    return {
        "runs": runs,
        "runs_per_s": round(runs / elapsed, 1),
        "failed_runs": failed,
        "events": len(written),
        "received": seen["received"],
        "missing": len(written) - seen["unique"],
        "out_of_order": seen["out_of_order"],
        "stream_p50_ms": round(_percentile(stream, 0.5) * 1000, 2),
        "stream_p99_ms": round(_percentile(stream, 0.99) * 1000, 2),
        "api_p50_ms": round(_percentile(api, 0.5) * 1000, 2),
        "api_p99_ms": round(_percentile(api, 0.99) * 1000, 2),
        "api_max_ms": round(max(api) * 1000, 2),
        "hook_p50_ms": round(_percentile(baseline, 0.5) * 1000, 3),
        "hook_p99_ms": round(_percentile(baseline, 0.99) * 1000, 3),
    }


def _commit_times(
    hooked: list[tuple[float, list[str]]], written: dict[tuple[str, int], float]
) -> dict[tuple[str, int], float]:
    """Per event (run, seq): when the hook saw its commit (a notification `run:last` covers the run's new
    events since the previous one)."""
    committed: dict[tuple[str, int], float] = {}
    last_of: dict[str, int] = {}
    for at, payloads in hooked:
        for payload in payloads:
            run_id, _, last = payload.rpartition(":")
            for seq in range(last_of.get(run_id, -1) + 1, int(last) + 1):
                committed[(run_id, seq)] = at
            last_of[run_id] = int(last)
    return committed


def _hook_latencies(
    hooked: list[tuple[float, list[str]]], written: dict[tuple[str, int], float]
) -> list[float]:
    """Per event: hook time minus the event's `at`: the commit alone."""
    return [at - written[key] for key, at in _commit_times(hooked, written).items()]


def run(runs: int = 1000, concurrency: int = 16, rounds: int = 3) -> dict[str, Any]:
    results: list[dict[str, Any]] = []
    with EchoProcess() as url:
        for _ in range(rounds):
            with tempfile.TemporaryDirectory() as tmp:
                results.append(asyncio.run(_round(url, Path(tmp), runs, concurrency)))
    ratios = [r["stream_p99_ms"] / max(r["hook_p99_ms"], 1e-3) for r in results]
    return {
        "workload": "W4 dashboard",
        "setting": f"W2 ({runs} runs, concurrency {concurrency}, SQLite FULL) with one WebSocket client "
        "(its own process) subscribed to the workspace",
        "rounds": rounds,
        "stream_p50_ms": summary([r["stream_p50_ms"] for r in results]),
        "stream_p99_ms": summary([r["stream_p99_ms"] for r in results]),
        "api_p50_ms": summary([r["api_p50_ms"] for r in results]),
        "api_p99_ms": summary([r["api_p99_ms"] for r in results]),
        "hook_p50_ms": summary([r["hook_p50_ms"] for r in results]),
        "hook_p99_ms": summary([r["hook_p99_ms"] for r in results]),
        "p99_ratio_to_hook": round(statistics.median(ratios), 1),
        "runs_per_s": summary([r["runs_per_s"] for r in results]),
        "missing_events": sum(r["missing"] for r in results),
        "out_of_order_events": sum(r["out_of_order"] for r in results),
        "failed_runs": sum(r["failed_runs"] for r in results),
        "rounds_detail": results,
    }


def describe(figures: dict[str, Any]) -> str:
    def spread(name: str) -> str:
        s = figures[name]
        return f"{s['median']} ms (min {s['min']}, max {s['max']})"

    return "\n".join(
        [
            f"W4 dashboard: {figures['setting']}; {figures['rounds']} rounds, median (spread)",
            f"  commit -> WebSocket client p50: {spread('stream_p50_ms')}",
            f"  commit -> WebSocket client p99: {spread('stream_p99_ms')}   (goal <= 50 ms)",
            f"  write (before the group commit) -> WebSocket client p50: {spread('api_p50_ms')}",
            f"  write (before the group commit) -> WebSocket client p99: {spread('api_p99_ms')}",
            f"  baseline, write -> commit (in-process hook) p50: {spread('hook_p50_ms')}",
            f"  baseline, write -> commit (in-process hook) p99: {spread('hook_p99_ms')}",
            f"  p99 ratio commit->client / write->commit: {figures['p99_ratio_to_hook']}x",
            f"  W2 under the stream: {figures['runs_per_s']['median']} runs/s; failed runs "
            f"{figures['failed_runs']}; events missing {figures['missing_events']}, "
            f"out of order {figures['out_of_order_events']}",
        ]
    )


# --- the client process ------------------------------------------------------------------------------


async def _client(uri: str, token: str) -> dict[str, Any]:
    import aiohttp

    latencies: list[float] = []
    receipts: list[tuple[str, int, float]] = []
    ids: list[int] = []
    loop = asyncio.get_running_loop()
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(uri, headers={"Authorization": f"Bearer {token}"}, max_msg_size=0) as ws,
    ):
        print("ready", flush=True)
        told = loop.run_in_executor(None, sys.stdin.readline)
        last: int | None = None
        while last is None or not ids or ids[-1] < last:
            if last is None and told.done():
                last = int(told.result())
                continue
            try:
                message = await asyncio.wait_for(ws.receive(), 0.2)
            except TimeoutError:
                continue
            now = time.time()
            if message.type != aiohttp.WSMsgType.TEXT:
                raise RuntimeError(f"the stream ended: {message.type.name} {message.data!r}")
            event = json.loads(message.data)
            latencies.append(now - datetime.fromisoformat(event["at"]).timestamp())
            receipts.append((event["run"], int(event["seq"]), now))
            ids.append(int(event["id"]))
    return {
        "latencies": latencies,
        "receipts": receipts,
        "received": len(ids),
        "unique": len(set(ids)),
        "out_of_order": sum(1 for a, b in itertools.pairwise(ids) if b <= a),
    }


if __name__ == "__main__":
    _token = sys.stdin.readline().strip()
    print(json.dumps(asyncio.run(_client(sys.argv[1], _token))), flush=True)
