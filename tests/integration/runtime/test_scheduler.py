"""The scheduler and launches on a real database (both dialects), with a virtual clock.

`start_run` is the seam: most tests pass a recording fake (which may also write a real run row, so the
in-flight count sees it); one test passes the real Runtime.start_run.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any, TypeVar

import pytest
from sqlalchemy import select

from cosmogen.domain.launches import IllegalLaunchTransition, LaunchConfig, LaunchConfigError, LaunchStatus
from cosmogen.domain.runs import RunStatus
from cosmogen.domain.schedule import (
    Catchup,
    CronSpec,
    IntervalSpec,
    ManualSpec,
    Overlap,
    TriggerSpec,
    WebhookSpec,
)
from cosmogen.runtime import launches as launch_store
from cosmogen.runtime.scheduler import Scheduler, fires_of
from cosmogen.runtime.service import Runtime, RuntimeSettings
from cosmogen.store import Database
from cosmogen.store.tables import runs, triggers, universes
from tests.integration.runtime.launch_helpers import (
    T0,
    RecordingStartRun,
    VirtualClock,
    finish_runs_older_than,
    in_flight,
    live_launch,
    open_store,
    save_universe,
)

T = TypeVar("T")


def run(coro: Callable[[], Awaitable[T]]) -> T:
    async def main() -> T:
        return await coro()

    return asyncio.run(main())


def at(hh: int, mm: int, ss: float = 0) -> datetime:
    return T0 + timedelta(hours=hh, minutes=mm, seconds=ss)


def every5(
    catchup: Catchup = Catchup.ALL, catchup_window_s: int = 900, overlap: Overlap = Overlap.SKIP
) -> CronSpec:
    return CronSpec("*/5 * * * *", catchup=catchup, catchup_window_s=catchup_window_s, overlap=overlap)


def test_dur09_catch_up_fires_the_three_ticks_in_the_window_and_counts_nine_missed(
    settings: RuntimeSettings,
) -> None:
    clock = VirtualClock(at(0, 0) - timedelta(minutes=1))

    async def body() -> None:
        with open_store(settings) as (db, writer):
            # The workflow "completes at once" (DUR-09), so the catch-up fires do not overlap: `allow`.
            spec = every5(catchup=Catchup.ALL, catchup_window_s=900, overlap=Overlap.ALLOW)
            created = await live_launch(writer, clock, [spec])
            [trigger] = created.launch.triggers
            start_run = RecordingStartRun(clock)
            scheduler = Scheduler(db, writer, start_run, clock)
            clock.now = at(0, 0, 0.4)
            await scheduler.tick()
            # Down from just after the 00:00 tick until 01:00:30.
            clock.now = at(1, 0, 30)
            report = await scheduler.tick()
            assert [call.tick for call in start_run.calls] == [
                t.isoformat() for t in (at(0, 0), at(0, 50), at(0, 55), at(1, 0))
            ]
            assert report.missed == 9
            assert scheduler.missed == 9
            assert scheduler.fired == 4
            call = start_run.calls[-1]
            assert call.event == {
                "name": "schedule",
                "data": {"trigger": trigger.id, "tick": at(1, 0).isoformat()},
            }
            assert (call.launch_id, call.trigger_id, call.dry_run) == (created.launch.id, trigger.id, True)
            with db.engine.connect() as conn:
                fires = fires_of(conn, trigger.id)
                next_fire_at = conn.execute(
                    select(triggers.c.next_fire_at).where(triggers.c.id == trigger.id)
                ).scalar_one()
            assert [(f["tick"], f["status"], f["run_id"]) for f in fires] == [
                (c_tick, "started", run_id)
                for c_tick, run_id in zip(
                    (at(0, 0), at(0, 50), at(0, 55), at(1, 0)), start_run.run_ids, strict=True
                )
            ]
            assert next_fire_at == at(1, 5)
            # Nothing is due until 01:05: another tick fires nothing.
            assert (await scheduler.tick()).fired == []

    run(body)


def test_run_forever_ticks_until_cancelled_and_catch_up_fires_overlap_with_skip(
    settings: RuntimeSettings,
) -> None:
    clock = VirtualClock(at(0, 0) - timedelta(minutes=1))

    async def body() -> None:
        with open_store(settings) as (db, writer):
            await live_launch(writer, clock, [every5(catchup=Catchup.ALL, overlap=Overlap.SKIP)])
            fake = RecordingStartRun(clock, writer=writer)
            scheduler = Scheduler(db, writer, fake, clock)
            clock.now = at(0, 10, 30)  # 00:00, 00:05 and 00:10 are all inside the window
            loop = asyncio.create_task(scheduler.run_forever(interval_s=0.01))
            async with asyncio.timeout(10):
                while scheduler.fired + scheduler.skipped_overlap < 3:
                    await asyncio.sleep(0.01)
            loop.cancel()
            with pytest.raises(asyncio.CancelledError):
                await loop
            # Caught-up ticks start together, so with overlap `skip` only the oldest one runs.
            assert [c.tick for c in fake.calls] == [at(0, 0).isoformat()]
            assert (scheduler.fired, scheduler.skipped_overlap, scheduler.missed) == (1, 2, 0)

    run(body)


def test_two_schedulers_over_200_ticks_never_fire_a_tick_twice(settings: RuntimeSettings) -> None:
    clock = VirtualClock(at(0, 0) - timedelta(seconds=1))

    async def body() -> None:
        with open_store(settings) as (db_a, writer_a), open_store(settings) as (db_b, writer_b):
            specs: list[TriggerSpec] = [
                every5(overlap=Overlap.ALLOW),
                IntervalSpec(300, overlap=Overlap.ALLOW),
            ]
            created = await live_launch(writer_a, clock, specs)
            start_a, start_b = RecordingStartRun(clock), RecordingStartRun(clock)
            a = Scheduler(db_a, writer_a, start_a, clock)
            b = Scheduler(db_b, writer_b, start_b, clock)
            for _ in range(200):
                clock.advance(minutes=5)
                await asyncio.gather(a.tick(), b.tick())
            fired = Counter((c.trigger_id, c.tick) for c in start_a.calls + start_b.calls)
            assert max(fired.values()) == 1, "a tick fired twice"
            for trigger in created.launch.triggers:
                assert sum(1 for t_id, _ in fired if t_id == trigger.id) == 200
            assert a.fired + b.fired == 400
            assert a.lost_claims + b.lost_claims > 0, "both schedulers saw the ticks due: the race was real"
            assert a.missed + b.missed == 0
            with db_a.engine.connect() as conn:
                assert all(len(fires_of(conn, t.id)) == 200 for t in created.launch.triggers)

    run(body)


def test_overlap_skip_never_has_two_runs_in_flight_with_two_schedulers(settings: RuntimeSettings) -> None:
    """DUR-09: runs last 12 minutes, ticks come every 5, overlap `skip`."""
    clock = VirtualClock(at(0, 0) - timedelta(seconds=30))

    async def body() -> None:
        with open_store(settings) as (db_a, writer_a), open_store(settings) as (db_b, writer_b):
            created = await live_launch(writer_a, clock, [every5(overlap=Overlap.SKIP)])
            [trigger] = created.launch.triggers
            start_a = RecordingStartRun(clock, writer=writer_a)
            start_b = RecordingStartRun(clock, writer=writer_b)
            a = Scheduler(db_a, writer_a, start_a, clock)
            b = Scheduler(db_b, writer_b, start_b, clock)
            most = 0
            for _ in range(120):
                clock.advance(minutes=1)
                for fake in (start_a, start_b):
                    await finish_runs_older_than(
                        writer_a, fake.calls, fake.run_ids, clock.now - timedelta(minutes=12)
                    )
                await asyncio.gather(a.tick(), b.tick())
                most = max(most, in_flight(db_a, trigger.id))
            assert most == 1
            ticks = sorted(c.tick for c in start_a.calls + start_b.calls)
            # 00:00 runs until 00:12, so 00:05 and 00:10 are skipped; 00:15 starts the next one, and so on.
            assert ticks == [at(0, m).isoformat() for m in range(0, 120, 15)]
            assert a.skipped_overlap + b.skipped_overlap == 16

    run(body)


def test_a_claim_whose_run_is_not_created_yet_counts_as_in_flight(settings: RuntimeSettings) -> None:
    """Scheduler A has claimed 00:00 but its start_run has not committed the run when B sees 00:05."""
    clock = VirtualClock(at(0, 0) - timedelta(seconds=30))

    async def body() -> None:
        with open_store(settings) as (db_a, writer_a), open_store(settings) as (db_b, writer_b):
            created = await live_launch(writer_a, clock, [every5(overlap=Overlap.SKIP)])
            release = asyncio.Event()
            slow = RecordingStartRun(clock, writer=writer_a)

            async def slow_start_run(*args: Any, **kwargs: Any) -> str:
                await release.wait()
                return await slow(*args, **kwargs)

            fast = RecordingStartRun(clock, writer=writer_b)
            a = Scheduler(db_a, writer_a, slow_start_run, clock)
            b = Scheduler(db_b, writer_b, fast, clock)
            # A is late with 00:00 (catch-up fires it); B comes 31 s later, well inside the claim's TTL.
            clock.now = at(0, 4, 30)
            a_tick = asyncio.create_task(a.tick())
            async with asyncio.timeout(10):
                while not fires_of_all(db_b, created):
                    await asyncio.sleep(0.01)  # until A's claim is committed
            clock.now = at(0, 5, 1)
            report = await b.tick()
            assert (report.fired, report.skipped_overlap) == ([], 1)
            release.set()
            assert [tick for _, tick, _ in (await a_tick).fired] == [at(0, 0)]
            assert fast.calls == []

    run(body)


def fires_of_all(db: Database, created: launch_store.CreatedLaunch) -> list[dict[str, Any]]:
    with db.engine.connect() as conn:
        return [fire for t in created.launch.triggers for fire in fires_of(conn, t.id)]


def test_overlap_queue_starts_the_waiting_tick_when_the_run_ends(settings: RuntimeSettings) -> None:
    clock = VirtualClock(at(0, 0) - timedelta(seconds=30))

    async def body() -> None:
        with open_store(settings) as (db, writer):
            created = await live_launch(writer, clock, [every5(overlap=Overlap.QUEUE)])
            [trigger] = created.launch.triggers
            fake = RecordingStartRun(clock, writer=writer)
            scheduler = Scheduler(db, writer, fake, clock)
            for minute in range(14):
                clock.now = at(0, minute, 1)
                await finish_runs_older_than(
                    writer, fake.calls, fake.run_ids, clock.now - timedelta(minutes=12)
                )
                report = await scheduler.tick()
                if minute == 5:
                    assert report.deferred == 1
                if minute == 10:
                    assert report.skipped_overlap == 1  # one tick already waits
            # The 00:00 run lasted 00:00:01-00:12:01; the queued 00:05 tick started as soon as it ended.
            assert [(c.tick, c.at) for c in fake.calls] == [
                (at(0, 0).isoformat(), at(0, 0, 1)),
                (at(0, 5).isoformat(), at(0, 12, 1)),
            ]
            with db.engine.connect() as conn:
                statuses = {f["tick"]: f["status"] for f in fires_of(conn, trigger.id)}
            assert statuses == {at(0, 0): "started", at(0, 5): "started"}
            assert in_flight(db, trigger.id) == 1

    run(body)


def test_a_failing_start_run_is_recorded_and_the_tick_is_not_fired_again(settings: RuntimeSettings) -> None:
    clock = VirtualClock(at(0, 0) - timedelta(seconds=30))

    async def body() -> None:
        with open_store(settings) as (db, writer):
            created = await live_launch(writer, clock, [IntervalSpec(60)])
            [trigger] = created.launch.triggers
            fake = RecordingStartRun(clock, fail=True)
            scheduler = Scheduler(db, writer, fake, clock)
            clock.advance(seconds=60)  # the first tick, a minute after going live
            report = await scheduler.tick()
            assert (report.failed, report.fired) == (1, [])
            fake.fail = False
            assert (await scheduler.tick()).fired == []
            with db.engine.connect() as conn:
                [fire] = fires_of(conn, trigger.id)
            assert (fire["status"], fire["run_id"]) == ("failed", None)

    run(body)


def test_launch_lifecycle_drives_the_scheduler_and_the_universe_status(settings: RuntimeSettings) -> None:
    clock = VirtualClock(at(0, 0) - timedelta(seconds=30))

    def universe_status(db: Database, universe_id: str) -> str:
        with db.engine.connect() as conn:
            return str(
                conn.execute(
                    select(universes.c.deployment_status).where(universes.c.id == universe_id)
                ).scalar_one()
            )

    async def body() -> None:
        with open_store(settings) as (db, writer):
            universe_id, version_id = save_universe(writer)
            assert universe_status(db, universe_id) == "draft"
            created = await writer.write(
                launch_store.create_launch(
                    universe_id,
                    version_id,
                    LaunchConfig(dry_run=False),
                    [every5(overlap=Overlap.ALLOW), ManualSpec()],
                    now=clock(),
                )
            )
            launch_id = created.launch.id
            assert created.launch.status is LaunchStatus.DRAFT
            assert created.webhook_tokens == {}
            fake = RecordingStartRun(clock, writer=writer)
            scheduler = Scheduler(db, writer, fake, clock)
            clock.now = at(0, 5)
            assert (await scheduler.tick()).fired == [], "a draft launch fires nothing"

            live = await writer.write(launch_store.go_live(launch_id, now=clock()))
            assert live.status is LaunchStatus.LIVE
            assert universe_status(db, universe_id) == "live"
            scheduled = next(t for t in live.triggers if t.kind == "cron")
            assert scheduled.next_fire_at == at(0, 10)
            assert next(t for t in live.triggers if t.kind == "manual").next_fire_at is None
            clock.now = at(0, 10)
            assert len((await scheduler.tick()).fired) == 1
            assert fake.calls[0].dry_run is False

            await writer.write(launch_store.pause(launch_id, now=clock()))
            assert universe_status(db, universe_id) == "paused"
            clock.now = at(2, 0)
            assert (await scheduler.tick()).fired == [], "a paused launch fires nothing"
            resumed = await writer.write(launch_store.resume(launch_id, now=clock()))
            # Planned from the resume: the pause is not a backlog of missed ticks.
            assert next(t for t in resumed.triggers if t.kind == "cron").next_fire_at == at(2, 5)
            clock.now = at(2, 5)
            await scheduler.tick()
            assert scheduler.missed == 0
            assert len(fake.calls) == 2

            with pytest.raises(IllegalLaunchTransition, match="pause or stop it first"):
                await writer.write(launch_store.archive(launch_id, now=clock()))
            stopped = await writer.write(launch_store.stop(launch_id, now=clock()))
            assert stopped.launch.status is LaunchStatus.DRAFT
            assert stopped.launch.stopped_at == at(2, 5)
            assert sorted(stopped.unfinished_run_ids) == sorted(fake.run_ids)  # both fake runs still run
            assert universe_status(db, universe_id) == "draft"
            assert all(t.next_fire_at is None for t in stopped.launch.triggers)

            archived = await writer.write(launch_store.archive(launch_id, now=clock()))
            assert archived.status is LaunchStatus.ARCHIVED
            assert universe_status(db, universe_id) == "archived"
            with db.engine.connect() as conn:
                assert [
                    launch.id for launch in launch_store.list_launches(conn, universe_id=universe_id)
                ] == [launch_id]
                assert launch_store.list_launches(conn, status=LaunchStatus.LIVE) == []
                assert launch_store.get_launch(conn, launch_id) == archived

    run(body)


def test_create_launch_checks_the_version_and_the_config_against_it(settings: RuntimeSettings) -> None:
    async def body() -> None:
        with open_store(settings) as (db, writer):
            universe_id, version_id = save_universe(writer)
            other_universe, _ = save_universe(writer, name="other")
            with pytest.raises(LookupError, match="has no version"):
                await writer.write(launch_store.create_launch(other_universe, version_id, LaunchConfig()))
            with pytest.raises(LaunchConfigError, match="'entry_node' 'nope' is not a node of this version"):
                await writer.write(
                    launch_store.create_launch(universe_id, version_id, LaunchConfig(entry_node="nope"))
                )
            with pytest.raises(launch_store.LaunchNotFound):
                await writer.write(launch_store.go_live("no-such-launch"))
            created = await writer.write(
                launch_store.create_launch(
                    universe_id, version_id, LaunchConfig(entry_node="open"), [WebhookSpec(signed=False)]
                )
            )
            [token] = created.webhook_tokens.values()
            with db.engine.connect() as conn:
                stored = conn.execute(select(triggers.c.webhook_token_hash)).scalar_one()
                assert stored == launch_store.hash_token(token) != token
                target = launch_store.find_webhook(conn, token)
                assert target is not None and target.launch_status is LaunchStatus.DRAFT
                assert launch_store.find_webhook(conn, token + "x") is None

    run(body)


def test_a_cron_launch_creates_real_runs_through_the_runtime(settings: RuntimeSettings) -> None:
    clock = VirtualClock(at(0, 0) - timedelta(seconds=30))

    async def body() -> None:
        runtime = await Runtime.open(settings)
        try:
            if runtime.queued:
                await runtime.start_worker()
            created = await live_launch(
                runtime.writer, clock, [CronSpec("* * * * *")], LaunchConfig(dry_run=False)
            )
            [trigger] = created.launch.triggers
            scheduler = Scheduler(runtime.db, runtime.writer, runtime.start_run, clock)
            run_ids, statuses = [], []
            for minute in range(3):
                clock.now = at(0, minute, 0.5)
                fired = [run_id for _, _, run_id in (await scheduler.tick()).fired]
                # Each run ends before the next tick (the overlap policy would skip a tick otherwise).
                statuses += [await runtime.wait(run_id) for run_id in fired]
                run_ids += fired
            assert len(run_ids) == 3
            assert statuses == [RunStatus.SUCCEEDED] * 3
            with runtime.db.engine.connect() as conn:
                rows = conn.execute(
                    select(runs).where(runs.c.trigger_id == trigger.id).order_by(runs.c.id)
                ).all()
            assert [row.id for row in rows] == sorted(run_ids)
            assert all(row.launch_id == created.launch.id and row.dry_run is False for row in rows)
            assert sorted(row.event["data"]["tick"] for row in rows) == [
                at(0, m).isoformat() for m in range(3)
            ]
            stopped = await runtime.writer.write(launch_store.stop(created.launch.id, now=clock()))
            assert stopped.unfinished_run_ids == []
        finally:
            await runtime.close()

    run(body)
