"""The live event stream over real connections to `cosmogen serve`: a run submitted while a client
listens arrives event by event, in order, with no gap (the frames are exactly the run's journal); a
client that disconnects and resumes with its cursor misses nothing and gets nothing twice; SSE the same
(resuming with Last-Event-ID); on PostgreSQL, events committed by other processes (a `cosmogen worker`
executing runs, a second writer) reach the stream of `serve`."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from cosmogen.runtime import journal
from cosmogen.store.writer import GroupCommitWriter
from cosmogen.testing.workers import WorkerProcess
from tests.integration.api import stream_client as sc
from tests.integration.conftest import EXAMPLES, serving

Served = tuple[str, Any]


def _banking() -> dict[str, Any]:
    return dict(json.loads((EXAMPLES / "banking.json").read_text()))


async def _runs_while_listening(url: str, token: str, universe_id: str, query: str, count: int) -> sc.Frames:
    async with connect(sc.ws_url(url, query), additional_headers=sc.bearer(token)) as ws:
        run_ids = {await asyncio.to_thread(sc.start_run, url, token, universe_id) for _ in range(count)}
        return await sc.receive_until(ws, [], sc.ended(run_ids))


def test_runs_stream_in_order_and_a_cursor_resumes_exactly(served: Served, tmp_path: Path) -> None:
    url, _ = served
    token = sc.member(tmp_path / "cosmogen-data", "ada@example.com")
    universe_id = sc.save_universe(url, token, _banking())

    first = asyncio.run(_runs_while_listening(url, token, universe_id, "", 2))
    runs = {f["run"] for f in first}
    assert len(runs) == 2 and {f["universe"] for f in first} == {universe_id}
    sc.assert_complete(first, {r: sc.journal_of(url, token, r) for r in runs})
    assert {"run.queued", "run.started", "run.succeeded"} <= {f["type"] for f in first}

    # Disconnected: two more runs happen. Resuming after the last id seen gets exactly those.
    cursor = first[-1]["id"]
    missed = {sc.start_run(url, token, universe_id) for _ in range(2)}

    async def resume() -> sc.Frames:
        async with connect(sc.ws_url(url, f"after={cursor}"), additional_headers=sc.bearer(token)) as ws:
            frames = await sc.receive_until(ws, [], sc.ended(missed))
            third = await asyncio.to_thread(sc.start_run, url, token, universe_id)  # live after the backlog
            return await sc.receive_until(ws, frames, sc.ended(missed | {third}))

    second = asyncio.run(resume())
    assert all(f["id"] > cursor for f in second)
    sc.assert_complete(second, {r: sc.journal_of(url, token, r) for r in {f["run"] for f in second}})
    assert {f["run"] for f in second} >= missed and not runs & {f["run"] for f in second}

    # From the start (after=0): everything kept, once, in order; narrowed to one run: only that run. The
    # workspace's own events (the sandbox accounts' status at start-up) come first on the whole stream.
    async def first_of_all() -> dict[str, Any]:
        async with connect(sc.ws_url(url, "after=0"), additional_headers=sc.bearer(token)) as ws:
            return (await sc.receive_until(ws, [], lambda f: len(f) >= 1))[0]

    oldest = asyncio.run(first_of_all())
    assert (oldest["type"], oldest["run"]) == ("account.status", None) and oldest["id"] < first[0]["id"]
    everything = asyncio.run(
        _backlog(url, token, f"universe={universe_id}&after=0", len(first) + len(second))
    )
    assert [f["id"] for f in everything] == [f["id"] for f in first + second]
    one = sorted(runs)[0]
    only = asyncio.run(_backlog(url, token, f"run={one}&after=0", len(sc.journal_of(url, token, one))))
    assert [f["seq"] for f in only] == list(range(len(only))) and {f["run"] for f in only} == {one}


async def _backlog(url: str, token: str, query: str, count: int) -> sc.Frames:
    async with connect(sc.ws_url(url, query), additional_headers=sc.bearer(token)) as ws:
        frames = await sc.receive_until(ws, [], lambda f: len(f) >= count)
        try:  # and nothing more
            extra = await asyncio.wait_for(ws.recv(), 0.5)
        except TimeoutError:
            return frames
        raise AssertionError(f"an extra frame: {extra!r}")


def test_sse_streams_and_resumes_with_last_event_id(served: Served, tmp_path: Path) -> None:
    url, _ = served
    token = sc.member(tmp_path / "cosmogen-data", "bob@example.com")
    universe_id = sc.save_universe(url, token, _banking())
    sse = url + f"/api/v1/events/sse?universe={universe_id}"

    async def listen_then_run() -> sc.Frames:
        started = asyncio.Event()
        box: dict[str, str] = {}

        def done(frames: sc.Frames) -> bool:
            return "run" in box and sc.ended({box["run"]})(frames)

        reading = asyncio.create_task(sc.sse_until(sse, sc.bearer(token), done, started=started))
        await started.wait()
        box["run"] = await asyncio.to_thread(sc.start_run, url, token, universe_id)
        return await reading

    first = asyncio.run(listen_then_run())
    run_id = first[0]["run"]
    sc.assert_complete(first, {run_id: sc.journal_of(url, token, run_id)})

    later = sc.start_run(url, token, universe_id)
    resumed = asyncio.run(
        sc.sse_until(sse, {**sc.bearer(token), "Last-Event-ID": str(first[-1]["id"])}, sc.ended({later}))
    )
    sc.assert_complete(resumed, {later: sc.journal_of(url, token, later)})
    assert [f["run"] for f in resumed] == [later] * len(resumed)


def test_postgresql_streams_what_other_processes_commit(tmp_path: Path, clean_pg_url: str) -> None:
    """Runs executed by a `cosmogen worker` (and events a third process writes) reach serve's stream."""
    with (
        WorkerProcess(clean_pg_url, tmp_path / "worker.log", concurrency=4).start() as worker,
        serving(tmp_path, "--database-url", clean_pg_url, "--no-sandbox") as (url, _),
    ):
        token = sc.member(clean_pg_url, "carol@example.com")
        universe_id = sc.save_universe(url, token, _banking())

        async def scenario() -> tuple[sc.Frames, str]:
            async with connect(sc.ws_url(url), additional_headers=sc.bearer(token)) as ws:
                run_ids = {await asyncio.to_thread(sc.start_run, url, token, universe_id) for _ in range(6)}
                frames = await sc.receive_until(ws, [], sc.ended(run_ids))
                # A process that is neither serve nor a worker appends to one of those runs' logs.
                target = sorted(run_ids)[0]
                await asyncio.to_thread(_append_elsewhere, clean_pg_url, target)
                frames = await sc.receive_until(ws, frames, lambda f: f[-1]["type"] == "test.appended")
                return frames, target

        frames, target = asyncio.run(scenario())
        runs = {f["run"] for f in frames}
        sc.assert_complete(frames, {r: sc.journal_of(url, token, r) for r in runs})
        assert frames[-1]["run"] == target and frames[-1]["data"] == {"by": "another process"}
        executors = _executors(clean_pg_url, runs)
        assert len(runs) == 6
    assert worker.process is not None
    print(f"runs executed by: {sorted(executors.values())} (worker pid {worker.pid})")


def _append_elsewhere(url: str, run_id: str) -> None:
    db = sc.open_store(url)
    try:
        with db.engine.connect() as conn:
            log = journal.EventLog(run_id, journal.next_event_seq(conn, run_id))
        log.add("test.appended", by="another process")
        with GroupCommitWriter(db) as writer:
            writer.submit(lambda conn: journal.append_events(conn, log)).result(timeout=30)
    finally:
        db.close()


def _executors(url: str, run_ids: set[str]) -> dict[str, str]:
    from sqlalchemy import select

    from cosmogen.store.tables import runs

    db = sc.open_store(url)
    try:
        with db.engine.connect() as conn:
            rows = conn.execute(select(runs.c.id, runs.c.worker_id).where(runs.c.id.in_(run_ids)))
            return {r.id: str(r.worker_id) for r in rows}
    finally:
        db.close()


def test_serve_stops_with_a_stream_still_open(tmp_path: Path) -> None:
    """An SSE response never ends by itself; serve cuts it after its 5 s grace instead of waiting forever.
    An open WebSocket is told 1012 (restarting) at once."""
    with serving(tmp_path) as (url, process):
        token = sc.member(tmp_path / "cosmogen-data", "dan@example.com")

        async def scenario() -> tuple[float, int | None]:
            async with (
                aiohttp.ClientSession() as session,
                session.get(url + "/api/v1/events/sse", headers=sc.bearer(token)) as sse,
                connect(sc.ws_url(url), additional_headers=sc.bearer(token)) as ws,
            ):
                assert (await sse.content.readline()).startswith(b"retry:")
                started = time.monotonic()
                process.send_signal(signal.SIGTERM)
                with pytest.raises(ConnectionClosed) as closed:
                    await asyncio.wait_for(ws.recv(), 10)
                code = closed.value.rcvd.code if closed.value.rcvd is not None else None
                while process.poll() is None:
                    assert time.monotonic() - started < 20, "serve did not stop"
                    await asyncio.sleep(0.1)
                return time.monotonic() - started, code

        stopped_after, code = asyncio.run(scenario())
    assert code == 1012 and stopped_after < 20
