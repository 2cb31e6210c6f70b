"""The scheduler: fires the cron and interval triggers of live launches.

Each `tick()` reads the triggers that are due, then for each one commits a *claim* and only then starts
runs through the `start_run` seam. The claim is one transaction:

1. compare-and-swap the trigger's `next_fire_at` from the value we read to the next planned tick
   (`UPDATE ... WHERE next_fire_at = :old`); a scheduler that loses the race fires nothing;
2. count the trigger's runs in flight: runs not in a terminal state, plus fires claimed moments ago whose
   run does not exist yet (another scheduler may be between its claim and its start_run);
3. apply the overlap policy to each tick the catch-up policy chose, and insert a `trigger_fires` row per
   tick started or queued. Its primary key (trigger, tick) makes a second fire of a tick impossible.

Step 1 takes the trigger's row lock (PostgreSQL) or the database write lock (SQLite), so steps 2-3 of two
schedulers never interleave: overlap `skip` holds across processes, not only within one.

Ticks fire at most once: a crash between the claim and start_run loses that tick (its row stays
`claimed`, without a run). Missed ticks are counted in `Scheduler.missed` and logged, not stored.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, func, insert, or_, select, update

from cosmogen.domain.launches import LaunchStatus, parse_launch_config
from cosmogen.domain.schedule import (
    CronSpec,
    IntervalSpec,
    Overlap,
    OverlapDecision,
    ScheduledSpec,
    TickPlan,
    overlap_decision,
    parse_trigger_spec,
    plan_ticks,
)
from cosmogen.runtime.launches import NON_TERMINAL_RUN_STATUSES, StartRun
from cosmogen.store import Database, GroupCommitWriter
from cosmogen.store.tables import launches, runs, trigger_fires, triggers
from cosmogen.store.writer import WriteFn

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]

# A claimed fire without a run counts as in flight for this long; after that its scheduler is presumed
# dead (it would have called start_run within milliseconds), so the trigger is not blocked forever.
CLAIM_TTL = timedelta(seconds=60)
DUE_BATCH = 100  # triggers handled per tick; the rest are due again on the next tick


@dataclass(frozen=True, slots=True)
class DueTrigger:
    id: str
    launch_id: str
    universe_id: str
    version_id: str
    spec: ScheduledSpec
    next_fire_at: datetime | None
    dry_run: bool
    config: dict[str, Any]  # the launch's config, for the run (LaunchConfig.to_dict())


@dataclass(frozen=True, slots=True)
class Claim:
    start: list[datetime]  # ticks to start now, oldest first (a queued tick first of all)
    skipped_overlap: list[datetime]
    deferred: datetime | None  # the tick now queued behind the runs in flight


@dataclass(slots=True)
class TickReport:
    """What one `tick()` did (for logs and tests)."""

    fired: list[tuple[str, datetime, str]] = field(default_factory=list)  # (trigger, tick, run id)
    missed: int = 0
    skipped_overlap: int = 0
    deferred: int = 0
    lost_claims: int = 0  # due triggers another scheduler claimed first
    failed: int = 0  # start_run raised


class Scheduler:
    def __init__(self, db: Database, writer: GroupCommitWriter, start_run: StartRun, clock: Clock) -> None:
        self._db = db
        self._writer = writer
        self._start_run = start_run
        self._clock = clock
        # Totals since this scheduler was made; `missed` is the missed-tick metric of DUR-09.
        self.fired = 0
        self.missed = 0
        self.skipped_overlap = 0
        self.lost_claims = 0
        self.failed = 0

    async def run_forever(self, interval_s: float = 1.0) -> None:
        """Tick every `interval_s` seconds until cancelled; a failing tick is logged and retried."""
        while True:
            try:
                await self.tick()
            except Exception:  # a database hiccup must not stop the schedule
                log.exception("scheduler tick failed; retrying in %.1fs", interval_s)
            await asyncio.sleep(interval_s)

    async def tick(self) -> TickReport:
        now = self._clock()
        report = TickReport()
        for trigger in await asyncio.to_thread(self._due, now):
            await self._fire(trigger, now, report)
        self.fired += len(report.fired)
        self.missed += report.missed
        self.skipped_overlap += report.skipped_overlap
        self.lost_claims += report.lost_claims
        self.failed += report.failed
        return report

    def _due(self, now: datetime) -> list[DueTrigger]:
        queued = select(trigger_fires.c.trigger_id).where(trigger_fires.c.status == "deferred")
        query = (
            select(
                triggers.c.id,
                triggers.c.spec,
                triggers.c.next_fire_at,
                launches.c.id.label("launch_id"),
                launches.c.universe_id,
                launches.c.version_id,
                launches.c.config,
            )
            .join(launches, launches.c.id == triggers.c.launch_id)
            .where(
                launches.c.status == LaunchStatus.LIVE.value,
                triggers.c.enabled.is_(True),
                triggers.c.kind.in_(("cron", "interval")),
                or_(triggers.c.next_fire_at <= now, triggers.c.id.in_(queued)),
            )
            .order_by(triggers.c.next_fire_at, triggers.c.id)
            .limit(DUE_BATCH)
        )
        with self._db.engine.connect() as conn:
            rows = conn.execute(query).all()
        due = []
        for row in rows:
            spec = parse_trigger_spec(row.spec)
            if not isinstance(spec, CronSpec | IntervalSpec):  # the query asked for scheduled kinds only
                continue
            config = parse_launch_config(row.config)
            due.append(
                DueTrigger(
                    id=row.id,
                    launch_id=row.launch_id,
                    universe_id=row.universe_id,
                    version_id=row.version_id,
                    spec=spec,
                    next_fire_at=row.next_fire_at,
                    dry_run=config.dry_run,
                    config=config.to_dict(),
                )
            )
        return due

    async def _fire(self, trigger: DueTrigger, now: datetime, report: TickReport) -> None:
        planned = trigger.next_fire_at
        # Not due (only a queued tick to look at): the plan is empty and next_fire_at stays as it is.
        plan = TickPlan([], [], now) if planned is None else plan_ticks(trigger.spec, planned, now)
        new_next = None if planned is None else plan.next_at
        claim = await self._writer.write(
            claim_ticks(trigger.id, planned, new_next, plan, trigger.spec.overlap, now)
        )
        if claim is None:
            report.lost_claims += 1
            return
        if plan.missed:
            report.missed += len(plan.missed)
            log.warning(
                "trigger %s missed %d tick(s) from %s to %s (catch-up %s, window %ss)%s",
                trigger.id,
                len(plan.missed),
                plan.missed[0].isoformat(),
                plan.missed[-1].isoformat(),
                trigger.spec.catchup.value,
                trigger.spec.catchup_window_s,
                "; more were missed than listed" if plan.missed_truncated else "",
            )
        if claim.skipped_overlap:
            report.skipped_overlap += len(claim.skipped_overlap)
            log.info(
                "trigger %s skipped %d tick(s): runs still in flight", trigger.id, len(claim.skipped_overlap)
            )
        if claim.deferred is not None:
            report.deferred += 1
        for tick in claim.start:
            await self._start(trigger, tick, report)

    async def _start(self, trigger: DueTrigger, tick: datetime, report: TickReport) -> None:
        event = {"name": "schedule", "data": {"trigger": trigger.id, "tick": tick.isoformat()}}
        try:
            run_id = await self._start_run(
                trigger.universe_id,
                trigger.version_id,
                event=event,
                dry_run=trigger.dry_run,
                launch_id=trigger.launch_id,
                trigger_id=trigger.id,
                config=trigger.config,
            )
        except Exception:
            # The tick stays claimed (never retried: at most once); its row says it failed.
            log.exception("trigger %s: starting the run for tick %s failed", trigger.id, tick.isoformat())
            report.failed += 1
            await self._writer.write(record_fire(trigger.id, tick, None))
            return
        report.fired.append((trigger.id, tick, run_id))
        await self._writer.write(record_fire(trigger.id, tick, run_id))


# --- write functions ------------------------------------------------------------------------------


def claim_ticks(
    trigger_id: str,
    expected_next: datetime | None,
    new_next: datetime | None,
    plan: TickPlan,
    overlap: Overlap,
    now: datetime,
) -> WriteFn[Claim | None]:
    """Claim `plan` for this trigger if its next_fire_at is still `expected_next`; None if another
    scheduler moved it first. Decides overlap for each tick and records the fires, in one transaction."""

    def write(conn: Connection) -> Claim | None:
        # The compare-and-swap. It also locks the row until commit, serialising the count below.
        swapped = conn.execute(
            update(triggers)
            .where(triggers.c.id == trigger_id, triggers.c.next_fire_at == expected_next)
            .values(next_fire_at=new_next)
        )
        if swapped.rowcount != 1:
            return None
        in_flight = _in_flight(conn, trigger_id, now)
        queued = conn.execute(
            select(trigger_fires.c.tick).where(
                trigger_fires.c.trigger_id == trigger_id, trigger_fires.c.status == "deferred"
            )
        ).scalar()
        start: list[datetime] = []
        skipped: list[datetime] = []
        deferred: datetime | None = None
        if (
            queued is not None
            and overlap_decision(overlap, in_flight, pending=False) is OverlapDecision.START
        ):
            # The queued tick has waited longest: it goes first.
            _set_fire(conn, trigger_id, queued, "claimed", now)
            start.append(queued)
            in_flight += 1
            queued = None
        for tick in plan.fire:
            decision = overlap_decision(
                overlap, in_flight, pending=queued is not None or deferred is not None
            )
            if decision is OverlapDecision.START:
                conn.execute(
                    insert(trigger_fires).values(
                        trigger_id=trigger_id, tick=tick, status="claimed", claimed_at=now
                    )
                )
                start.append(tick)
                in_flight += 1
            elif decision is OverlapDecision.DEFER:
                conn.execute(
                    insert(trigger_fires).values(
                        trigger_id=trigger_id, tick=tick, status="deferred", claimed_at=now
                    )
                )
                deferred = tick
            else:
                skipped.append(tick)
        if start:
            conn.execute(update(triggers).where(triggers.c.id == trigger_id).values(last_fired_at=now))
        return Claim(start, skipped, deferred)

    return write


def record_fire(trigger_id: str, tick: datetime, run_id: str | None) -> WriteFn[None]:
    """After start_run: the fire is `started` with its run, or `failed` (run_id None)."""

    def write(conn: Connection) -> None:
        conn.execute(
            update(trigger_fires)
            .where(trigger_fires.c.trigger_id == trigger_id, trigger_fires.c.tick == tick)
            .values(status="started" if run_id is not None else "failed", run_id=run_id)
        )

    return write


def _set_fire(conn: Connection, trigger_id: str, tick: datetime, status: str, now: datetime) -> None:
    conn.execute(
        update(trigger_fires)
        .where(trigger_fires.c.trigger_id == trigger_id, trigger_fires.c.tick == tick)
        .values(status=status, claimed_at=now)
    )


def _in_flight(conn: Connection, trigger_id: str, now: datetime) -> int:
    running = conn.execute(
        select(func.count())
        .select_from(runs)
        .where(runs.c.trigger_id == trigger_id, runs.c.status.in_(NON_TERMINAL_RUN_STATUSES))
    ).scalar_one()
    # Claimed but not started yet: a run is about to exist. A started fire's run is counted above.
    claimed = conn.execute(
        select(func.count())
        .select_from(trigger_fires)
        .where(
            trigger_fires.c.trigger_id == trigger_id,
            trigger_fires.c.status == "claimed",
            trigger_fires.c.claimed_at > now - CLAIM_TTL,
        )
    ).scalar_one()
    return int(running) + int(claimed)


def fires_of(conn: Connection, trigger_id: str) -> list[dict[str, Any]]:
    """The recorded fires of one trigger, oldest tick first (for the API and tests)."""
    rows = conn.execute(
        select(trigger_fires).where(trigger_fires.c.trigger_id == trigger_id).order_by(trigger_fires.c.tick)
    )
    return [dict(row._mapping) for row in rows]
