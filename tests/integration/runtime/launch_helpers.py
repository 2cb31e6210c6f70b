"""Shared pieces of the scheduler and webhook tests: a store, a virtual clock, a recording start_run."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, select, update

from cosmogen.domain.launches import LaunchConfig
from cosmogen.domain.runs import RunStatus
from cosmogen.domain.schedule import TriggerSpec
from cosmogen.runtime import journal
from cosmogen.runtime import launches as launch_store
from cosmogen.runtime.service import RuntimeSettings
from cosmogen.store import Database, GroupCommitWriter, migrate, new_id, repos
from cosmogen.store.tables import runs
from cosmogen.testing.builders import document

T0 = datetime(2030, 1, 1, tzinfo=UTC)


@contextmanager
def open_store(settings: RuntimeSettings) -> Iterator[tuple[Database, GroupCommitWriter]]:
    """A migrated database with its own writer: one per simulated process."""
    db = settings.open_database()
    migrate.upgrade(db)
    writer = GroupCommitWriter(db)
    try:
        yield db, writer
    finally:
        writer.close()
        db.close()


@dataclass
class VirtualClock:
    now: datetime = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


@dataclass(frozen=True)
class Call:
    universe_id: str
    version_id: str
    event: dict[str, Any]
    dry_run: bool
    launch_id: str | None
    trigger_id: str | None
    at: datetime  # virtual time of the call
    config: Mapping[str, Any] | None = None

    @property
    def tick(self) -> str:
        return str(self.event["data"]["tick"])


@dataclass
class RecordingStartRun:
    """The start_run seam, faked: records each call. With `writer`, it also queues a real `running` run
    row (as Runtime.start_run would), so the scheduler's in-flight count sees it."""

    clock: VirtualClock
    writer: GroupCommitWriter | None = None
    fail: bool = False
    calls: list[Call] = field(default_factory=list)
    run_ids: list[str] = field(default_factory=list)

    async def __call__(
        self,
        universe_id: str,
        version_id: str,
        *,
        event: dict[str, Any],
        dry_run: bool,
        launch_id: str | None,
        trigger_id: str | None,
        config: Mapping[str, Any] | None = None,
    ) -> str:
        if self.fail:
            raise RuntimeError("start_run is down")
        self.calls.append(
            Call(universe_id, version_id, event, dry_run, launch_id, trigger_id, self.clock(), config)
        )
        run_id = new_id()
        if self.writer is not None:
            await self.writer.write(
                journal.create_run(
                    run_id=run_id,
                    universe_id=universe_id,
                    version_id=version_id,
                    event=event,
                    dry_run=dry_run,
                    launch_id=launch_id,
                    trigger_id=trigger_id,
                    claimed_by="fake-worker",
                )
            )
        self.run_ids.append(run_id)
        return run_id


def save_universe(writer: GroupCommitWriter, name: str = "scheduled") -> tuple[str, str]:
    """A runnable one-node universe; returns (universe_id, version_id)."""
    doc = document(
        [{"id": "open", "type": "begin", "entity": "acct:1", "properties": {"balance": 1}}], name=name
    )
    saved = writer.submit(
        lambda conn: repos.save_version(conn, workspace_id="default", name=name, document=doc)
    ).result()
    return saved.universe_id, saved.version_id


async def live_launch(
    writer: GroupCommitWriter,
    clock: VirtualClock,
    specs: list[TriggerSpec],
    config: LaunchConfig | None = None,
    name: str = "scheduled",
) -> launch_store.CreatedLaunch:
    universe_id, version_id = save_universe(writer, name)
    created = await writer.write(
        launch_store.create_launch(universe_id, version_id, config or LaunchConfig(), specs, now=clock())
    )
    await writer.write(launch_store.go_live(created.launch.id, now=clock()))
    return created


async def finish_runs_older_than(
    writer: GroupCommitWriter, calls: list[Call], run_ids: list[str], cutoff: datetime
) -> None:
    """Mark the fake runs started before `cutoff` as succeeded (their virtual duration has passed)."""
    done = [run_id for call, run_id in zip(calls, run_ids, strict=True) if call.at <= cutoff]

    def write(conn: Connection) -> None:
        conn.execute(
            update(runs)
            .where(runs.c.id.in_(done), runs.c.status == RunStatus.RUNNING.value)
            .values(status=RunStatus.SUCCEEDED.value)
        )

    if done:
        await writer.write(write)


def in_flight(db: Database, trigger_id: str) -> int:
    with db.engine.connect() as conn:
        rows = conn.execute(
            select(runs.c.id).where(
                runs.c.trigger_id == trigger_id, runs.c.status.in_(launch_store.NON_TERMINAL_RUN_STATUSES)
            )
        ).all()
    return len(rows)
