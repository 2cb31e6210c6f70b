"""The live event feed (runtime/feed.py) on real databases: a subscriber that does not read is dropped
when its bounded buffer fills, while runs go on and a reading subscriber gets everything; nobody
listening costs the writer nothing; on PostgreSQL, a transaction that commits after a newer one is
waited for, so events are handed over in id order with no gap, and a hole that never fills (a
rolled-back transaction's ids) is passed after `gap_wait_s`."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import replace
from pathlib import Path

from sqlalchemy import Connection

from cosmogen.domain.events import LEVELS, Envelope, Subscription
from cosmogen.integrations.egress import EgressPolicy
from cosmogen.runtime import journal
from cosmogen.runtime.feed import EventFeed, Subscriber, read_events
from cosmogen.runtime.service import Runtime, RuntimeSettings
from tests.integration.conftest import EXAMPLES

DOCUMENT = (EXAMPLES / "banking.json").read_text()


def _settings(tmp_path: Path) -> RuntimeSettings:
    return RuntimeSettings(
        data_dir=tmp_path / "data", egress=EgressPolicy.from_strings(networks="127.0.0.1/32")
    )


async def _drain(subscriber: Subscriber, count: int, timeout_s: float = 10.0) -> list[Envelope]:
    got = []
    for _ in range(count):
        got.append(await asyncio.wait_for(subscriber.queue.get(), timeout_s))
    return got


def test_a_subscriber_that_cannot_keep_up_is_dropped_and_nobody_waits(tmp_path: Path) -> None:
    async def main() -> None:
        runtime = await Runtime.open(_settings(tmp_path))
        feed = EventFeed(runtime.db, runtime.writer, buffer=16, poll_s=0.2)
        await feed.start()
        try:
            assert runtime.writer._subscribers == []  # nobody listens: the writer signals nobody
            slow = await feed.subscribe(Subscription("default"))
            fast = await feed.subscribe(Subscription("default"))
            assert len(runtime.writer._subscribers) == 1
            taken: list[Envelope] = []

            async def read() -> None:
                while True:
                    taken.append(await fast.queue.get())

            reading = asyncio.create_task(read())
            submitted = [await runtime.submit(json.loads(DOCUMENT)) for _ in range(5)]
            statuses = [await runtime.wait(s.run_id) for s in submitted]
            assert {s.value for s in statuses} == {"succeeded"}
            await asyncio.sleep(0.5)
            assert slow.overflowed.is_set() and slow.queue.qsize() == 16
            assert not fast.overflowed.is_set()
            with runtime.db.engine.connect() as conn:
                logged = sum(len(journal.events_of(conn, s.run_id)) for s in submitted)
            assert len(taken) == logged > 16 and [e.id for e in taken] == sorted({e.id for e in taken})
            reading.cancel()
            feed.unsubscribe(slow)
            feed.unsubscribe(fast)
            assert runtime.writer._subscribers == []
        finally:
            await feed.close()
            await runtime.close()

    asyncio.run(main())


def _append(conn: Connection, run_id: str, type_: str) -> None:
    log = journal.EventLog(run_id)
    log.add(type_)
    journal.append_events(conn, log)


def test_postgresql_events_pass_in_id_order_across_transactions(tmp_path: Path, clean_pg_url: str) -> None:
    async def main() -> None:
        runtime = await Runtime.open(replace(_settings(tmp_path), data_dir=None, database_url=clean_pg_url))
        feed = EventFeed(runtime.db, runtime.writer, database_url=clean_pg_url, gap_wait_s=1.0, poll_s=5.0)
        await feed.start()
        try:
            runs = [(await runtime.submit(json.loads(DOCUMENT), start=False)).run_id for _ in range(2)]
            await asyncio.sleep(0.3)
            watcher = await feed.subscribe(Subscription("default"))
            first, second = runtime.db.engine.connect(), runtime.db.engine.connect()
            try:
                # `first` takes the lower id but commits after `second`.
                first.begin()
                await asyncio.to_thread(_append, first, runs[0], "test.first")
                second.begin()
                await asyncio.to_thread(_append, second, runs[1], "test.second")
                await asyncio.to_thread(second.commit)
                await asyncio.sleep(0.5)  # notified, but the hole below it is still open
                assert watcher.queue.empty()
                await asyncio.to_thread(first.commit)
                got = await _drain(watcher, 2, timeout_s=2)
                assert [e.type for e in got] == ["test.first", "test.second"]
                assert got[1].id == got[0].id + 1

                # A hole that never fills: a rolled-back transaction's id. The next event waits for it
                # about gap_wait_s, then passes.
                first.begin()
                await asyncio.to_thread(_append, first, runs[0], "test.rolled_back")
                await asyncio.to_thread(first.rollback)
                second.begin()
                await asyncio.to_thread(_append, second, runs[1], "test.after_hole")
                committed = time.monotonic()
                await asyncio.to_thread(second.commit)
                [late] = await _drain(watcher, 1, timeout_s=5)
                waited = time.monotonic() - committed
                assert late.type == "test.after_hole" and late.id == got[1].id + 2
                assert waited >= 0.8, waited
            finally:
                first.close()
                second.close()
        finally:
            await feed.close()
            await runtime.close()

    asyncio.run(main())


def test_a_level_keeps_that_level_and_worse_when_read_from_the_store(settings: RuntimeSettings) -> None:
    """`level=warning` (or `error`) narrows the stored backlog in the query itself, on both dialects."""

    async def main() -> dict[str, list[str]]:
        runtime = await Runtime.open(settings)
        try:
            run_id = (await runtime.submit(json.loads(DOCUMENT), start=False)).run_id
            with runtime.db.engine.begin() as conn:
                for type_ in ("node.finished", "effect.waiting", "effect.failed", "run.needs_attention"):
                    _append(conn, run_id, type_)
            with runtime.db.engine.connect() as conn:
                return {
                    level: [
                        e.type
                        for e in read_events(conn, 0, subscription=Subscription("default", level=level))
                    ]
                    for level in LEVELS
                }
        finally:
            await runtime.close()

    found = asyncio.run(main())
    assert found["error"] == ["effect.failed"]
    assert found["warning"] == ["effect.waiting", "effect.failed", "run.needs_attention"]
    assert found["info"][-4:] == ["node.finished", "effect.waiting", "effect.failed", "run.needs_attention"]
    assert "run.queued" in found["info"]
