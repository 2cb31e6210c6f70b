"""The embedded runtime: one process owns the database's writer, the HTTP client and the executor,
and runs many runs at once on one event loop. `cosmogen serve` and the durable `cosmogen run` use it.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.exc import IntegrityError

from cosmogen.domain.runs import RunAction, RunStatus
from cosmogen.integrations.egress import EgressPolicy
from cosmogen.integrations.http import HttpClient
from cosmogen.runtime import control, journal
from cosmogen.runtime.executor import Executor, launch_state
from cosmogen.runtime.ownership import DataDirLock
from cosmogen.store import Database, GroupCommitWriter, migrate, new_id, repos

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RuntimeSettings:
    data_dir: Path | None = None
    database_url: str | None = None
    concurrency: int = 64
    egress: EgressPolicy = field(default_factory=EgressPolicy)
    crash_at: frozenset[str] = frozenset()
    workspace: str = "default"
    poll_interval_s: float = 0.5
    # Nodes between checkpoints at most: bounds recomputation after a crash, and how long a pause or
    # cancel from another process waits when no call is recorded in between.
    checkpoint_every: int = 64

    def open_database(self) -> Database:
        """PostgreSQL when a URL is set, else the embedded SQLite database in the data directory."""
        if self.database_url:
            return Database.open(url=self.database_url)
        return Database.open(data_dir=self.data_dir)


@dataclass(frozen=True, slots=True)
class Submitted:
    run_id: str
    universe_id: str
    version_id: str
    version_number: int


class Runtime:
    """Start with `await Runtime.open(settings)`; end with `await runtime.close()`."""

    def __init__(
        self,
        settings: RuntimeSettings,
        db: Database,
        writer: GroupCommitWriter,
        http: HttpClient,
        lock: DataDirLock | None = None,
    ) -> None:
        self.settings = settings
        self._lock = lock
        self.db = db
        self.writer = writer
        self.http = http
        self.worker_id = f"{socket.gethostname()}:{id(self):x}"
        self._controls: set[str] = set()
        self._draining = False
        self.executor = Executor(
            db,
            writer,
            http,
            self.worker_id,
            crash_at=settings.crash_at,
            checkpoint_every=settings.checkpoint_every,
            control_pending=self._controls.__contains__,
            draining=lambda: self._draining,
        )
        self._slots = asyncio.Semaphore(settings.concurrency)
        self._tasks: dict[str, asyncio.Task[RunStatus]] = {}
        self._poller: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, settings: RuntimeSettings) -> Runtime:
        """Open the store (migrating it) and take ownership; raises DataDirBusy if another process has it."""
        lock = None
        if settings.database_url is None and settings.data_dir is not None:
            lock = DataDirLock(settings.data_dir)
            lock.acquire()
        try:
            db = settings.open_database()
            await asyncio.to_thread(migrate.upgrade, db)
        except BaseException:
            if lock is not None:
                lock.release()
            raise
        writer = GroupCommitWriter(db)
        http = HttpClient(settings.egress)
        await http.start()
        return cls(settings, db, writer, http, lock)

    async def close(self, drain_s: float = 20.0) -> None:
        """Stop taking work, let in-flight runs reach their next node boundary (where they are parked as
        queued, checkpoint committed) for up to `drain_s`, then cancel what is left; a cancelled run
        stays `running` and is resumed by the next owner like after a crash."""
        self._draining = True
        if self._poller is not None:
            self._poller.cancel()
            await asyncio.gather(self._poller, return_exceptions=True)
        tasks = [task for task in self._tasks.values() if not task.done()]
        if tasks:
            await asyncio.wait(tasks, timeout=drain_s)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.http.close()
        await asyncio.to_thread(self.writer.close)
        self.db.close()
        if self._lock is not None:
            self._lock.release()

    # --- submitting and dispatching ---------------------------------------------------------------

    async def submit(
        self,
        document: dict[str, Any],
        *,
        event: dict[str, Any] | None = None,
        dry_run: bool = False,
        start: bool = True,
    ) -> Submitted:
        """Save the document as a version (or reuse an identical one) and queue a run of it."""
        name = str(document.get("name") or "untitled")
        run_id = new_id()
        event = {"name": "manual", "data": {}, **(event or {})}

        def write(conn: Any) -> tuple[Submitted, journal.RunRecord]:
            saved = repos.save_version(
                conn, workspace_id=self.settings.workspace, name=name, document=document
            )
            record = journal.create_run(
                run_id=run_id,
                universe_id=saved.universe_id,
                version_id=saved.version_id,
                event=event,
                dry_run=dry_run,
                claimed_by=self.worker_id if start else None,
            )(conn)
            return Submitted(run_id, saved.universe_id, saved.version_id, saved.number), record

        submitted, record = await self.writer.write(write)
        if start:
            self.dispatch(run_id, fresh=record)
        return submitted

    @property
    def in_flight(self) -> int:
        return sum(1 for task in self._tasks.values() if not task.done())

    async def start_run(
        self,
        universe_id: str,
        version_id: str,
        *,
        event: dict[str, Any] | None = None,
        dry_run: bool = False,
        launch_id: str | None = None,
        trigger_id: str | None = None,
        config: Mapping[str, Any] | None = None,
    ) -> str:
        """Queue and dispatch a run of a saved version (what triggers and launches do). `config`: the
        launch's config (entry_node, telemetry_level); raises LaunchConfigError for a bad one."""
        run_id = new_id()
        state = launch_state(config)
        record = await self.writer.write(
            journal.create_run(
                run_id=run_id,
                universe_id=universe_id,
                version_id=version_id,
                event={"name": "manual", "data": {}, **(event or {})},
                dry_run=dry_run,
                state=state,
                launch_id=launch_id,
                trigger_id=trigger_id,
                claimed_by=self.worker_id,
            )
        )
        self.dispatch(run_id, fresh=record)
        return run_id

    def dispatch(self, run_id: str, *, fresh: journal.RunRecord | None = None) -> asyncio.Task[RunStatus]:
        task = self._tasks.get(run_id)
        if task is None or task.done():
            task = asyncio.create_task(self._execute(run_id, fresh), name=f"run-{run_id}")
            self._tasks[run_id] = task
        return task

    async def wait(self, run_id: str) -> RunStatus:
        return await self.dispatch(run_id)

    async def recover(self) -> list[str]:
        """Queue every run a previous process left unfinished; returns their ids."""
        with self.db.engine.connect() as conn:
            pending = journal.runs_in(conn, [RunStatus.QUEUED, RunStatus.RUNNING])
        for run_id in pending:
            self.dispatch(run_id)
        return pending

    def start_polling(self) -> None:
        """Pick up runs queued by other processes (the CLI's --detach, resume, retry)."""
        if self._poller is None:
            self._poller = asyncio.create_task(self._poll(), name="run-poller")

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.settings.poll_interval_s)
            try:
                with self.db.engine.connect() as conn:
                    queued = journal.runs_in(conn, [RunStatus.QUEUED])
            except Exception:  # a transient database error must not kill the poller
                log.exception("polling for queued runs failed")
                continue
            for run_id in queued:
                if run_id not in self._tasks or self._tasks[run_id].done():
                    self.dispatch(run_id)

    async def _execute(self, run_id: str, fresh: journal.RunRecord | None) -> RunStatus:
        async with self._slots:
            try:
                return await self.executor.execute(run_id, fresh=fresh)
            except (journal.StaleRun, IntegrityError) as exc:
                # Another executor took the run over (a newer attempt, or the same intent or event
                # already written): this one is a zombie and stops without writing anything more.
                log.warning("run %s superseded, this executor stops: %s", run_id, exc)
                with self.db.engine.connect() as conn:
                    return journal.load_run(conn, run_id).status
            finally:
                self._controls.discard(run_id)

    # --- control ----------------------------------------------------------------------------------

    async def act(self, run_id: str, action: RunAction) -> RunStatus:
        status = await self.writer.write(control.act(run_id, action))
        if status is RunStatus.RUNNING:
            self._controls.add(run_id)  # make the local executor checkpoint at the next node
        elif status is RunStatus.QUEUED:
            self.dispatch(run_id)
        return status

    async def retry(self, run_id: str) -> str:
        child = await self.writer.write(control.retry(run_id))
        self.dispatch(child)
        return child

    async def rerun(self, run_id: str) -> str:
        child = await self.writer.write(control.rerun(run_id))
        self.dispatch(child)
        return child
