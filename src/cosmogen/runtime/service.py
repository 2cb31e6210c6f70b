"""The runtime: one process's writer, HTTP client and executor, running many runs on one event loop.

Two ways runs reach an executor:
- embedded (SQLite): this process owns the data directory and dispatches runs to itself, at once;
- queued (PostgreSQL): every queued run is a procrastinate job (runtime/queue.py) and any process that
  started a worker (`cosmogen serve`, `cosmogen worker`) may take it; pause and cancel reach the
  executing process through LISTEN/NOTIFY (runtime/notify.py).
`cosmogen serve`, `cosmogen worker` and the durable `cosmogen run` use it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from cosmogen.domain.runs import RunAction, RunStatus
from cosmogen.domain.tokens import RefreshPolicy
from cosmogen.integrations.accounts import DbAccountResolver, VaultOpener
from cosmogen.integrations.egress import EgressPolicy
from cosmogen.integrations.http import HttpClient
from cosmogen.integrations.ratelimit import RateLimiter
from cosmogen.integrations.secret import Secret
from cosmogen.integrations.tokens import TokenManager
from cosmogen.runtime import control, journal, notify
from cosmogen.runtime.executor import Executor, launch_state
from cosmogen.runtime.ownership import DataDirLock
from cosmogen.runtime.queue import WorkerOptions
from cosmogen.store import Database, GroupCommitWriter, migrate, new_id, repos
from cosmogen.store.tables import runs, utcnow
from cosmogen.telemetry.hooks import Hooks
from cosmogen.telemetry.tracing import Tracer, open_tracer

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
    # PostgreSQL workers: one silent this long is dead and its runs go to another (WorkerOptions).
    worker_dead_after_s: float = 10.0
    # The vault keyring (COSMOGEN_VAULT_KEYS); else the key file in the data directory.
    vault_keys: Secret | None = None
    # OAuth token refresh: the window before expiry, the cross-process lease, waits and backoff.
    token_refresh: RefreshPolicy = field(default_factory=RefreshPolicy)
    # Unfinished runs one workspace may have; the API answers 429 past it (COSMOGEN_RUN_QUOTA).
    run_quota: int = 200
    # OTLP/HTTP traces URL (COSMOGEN_OTEL_ENDPOINT): spans for runs, nodes and calls (telemetry/tracing.py).
    otel_endpoint: str | None = None

    def worker_options(self, **overrides: Any) -> WorkerOptions:
        beat = self.worker_dead_after_s / 5
        values: dict[str, Any] = {
            "concurrency": self.concurrency,
            "heartbeat_s": beat,
            "stalled_after_s": self.worker_dead_after_s,
            "sweep_every_s": beat,
        }
        return WorkerOptions(**{**values, **overrides})

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


class UnsafeDatabase(Exception):
    """The database is configured so that a commit is not durable (PostgreSQL fsync or synchronous_commit
    off): acknowledged runs could be lost in a crash, so the runtime refuses to start."""


class NeedsPostgres(Exception):
    """The operation needs the PostgreSQL runtime (e.g. a worker process)."""


class NoWorkers(Exception):
    """PostgreSQL: nothing would run the run (no worker process sends heartbeats)."""


class Runtime:
    """Start with `await Runtime.open(settings)`; end with `await runtime.close()`."""

    def __init__(
        self,
        settings: RuntimeSettings,
        db: Database,
        writer: GroupCommitWriter,
        http: HttpClient,
        lock: DataDirLock | None = None,
        telemetry: Hooks | None = None,
        tracer: Tracer | None = None,
    ) -> None:
        self.settings = settings
        # Metrics hooks (telemetry/): no-ops unless the composition root passes a `Metrics`.
        self.telemetry = telemetry or Hooks()
        self.tracer = tracer or Tracer()  # spans: none unless traces were asked for
        self._lock = lock
        self.db = db
        self.writer = writer
        self.http = http
        # Host and pid name the process that executes a run (runs.worker_id), for people and tests.
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        # PostgreSQL: runs go through the job queue, to whichever process has a worker running.
        self.queued = db.dialect == "postgresql"
        self._controls: set[str] = set()
        self._running: set[str] = set()
        self._worker: Any = None  # queue.RunWorker once start_worker ran (procrastinate loads lazily)
        self._listener: asyncio.Task[None] | None = None
        self._reconciler: asyncio.Task[None] | None = None
        self._draining = False
        self._closed = False
        self._closers: list[Callable[[], Awaitable[None]]] = []  # things started beside it (the sandbox)
        self._vault: Any = None  # the Vault, once opened (at start-up, or on first use)
        self._vault_lock = threading.Lock()
        self._housekeeping: asyncio.Task[None] | None = None
        self._revoker: asyncio.Task[None] | None = None  # OAuth revocations left in the outbox
        # OAuth access tokens: refreshed ahead of expiry, once across processes (integrations/tokens.py).
        vault = VaultOpener(self.open_vault)
        self.tokens = TokenManager(
            db, vault, http, policy=settings.token_refresh, on_refresh=self.telemetry.token_refresh
        )
        self.executor = Executor(
            db,
            writer,
            http,
            self.worker_id,
            crash_at=settings.crash_at,
            checkpoint_every=settings.checkpoint_every,
            control_pending=self._controls.__contains__,
            draining=lambda: self._draining,
            accounts=DbAccountResolver(db, vault, utcnow, tokens=self.tokens),
            limiter=RateLimiter(db),
            workspace=settings.workspace,
            telemetry=self.telemetry,
            tracer=self.tracer,
        )
        self.telemetry.watch(lambda: self.in_flight, self._runs_by_status)
        self._slots = asyncio.Semaphore(settings.concurrency)
        self._tasks: dict[str, asyncio.Task[RunStatus]] = {}
        self._poller: asyncio.Task[None] | None = None

    def open_vault(self) -> Any:
        """The credential vault (a `Vault`), opened once per process: at start-up (`open(...,
        vault_at_start=True)`) or here on first use (a provider call, a signed webhook)."""
        with self._vault_lock:
            if self._vault is None:
                from cosmogen.integrations import keystore

                self._vault = keystore.open_vault(self.db, _key_source(self.settings))
            return self._vault

    def _runs_by_status(self) -> dict[str, int]:
        """Every run in the database by status (one grouped count over the status index; /metrics)."""
        if self._closed:  # a scrape after close must not open a new pool on the disposed engine
            return {}
        with self.db.engine.connect() as conn:
            rows = conn.execute(select(runs.c.status, func.count()).group_by(runs.c.status))
            return {str(status): int(count) for status, count in rows}

    @classmethod
    async def open(
        cls, settings: RuntimeSettings, *, vault_at_start: bool = False, telemetry: Hooks | None = None,
        tracer: Tracer | None = None,
    ) -> Runtime:  # fmt: skip
        """Open the store (migrating it) and take ownership; raises DataDirBusy if another process has it.

        `vault_at_start` (serve, worker): when the database holds encrypted rows or vault keys, the keyring
        is checked before anything is written, even the migration, so a wrong or missing key stops start-up
        (VaultStartupError); an empty embedded store gets its key file now. Otherwise the vault opens on
        first use."""
        lock = None
        if settings.database_url is None and settings.data_dir is not None:
            lock = DataDirLock(settings.data_dir)
            lock.acquire()
        db: Database | None = None
        vault = None
        try:
            db = settings.open_database()
            if db.dialect == "postgresql":
                await asyncio.to_thread(_check_durable, db)
            checked = await asyncio.to_thread(_check_vault_keys, settings, db) if vault_at_start else None
            await asyncio.to_thread(migrate.upgrade, db)
            if checked is not None:
                vault = await asyncio.to_thread(checked.open, db)
        except BaseException:
            if db is not None:
                db.close()
            if lock is not None:
                lock.release()
            raise
        if tracer is None:
            try:
                tracer = open_tracer(settings.otel_endpoint)
            except BaseException:
                db.close()
                if lock is not None:
                    lock.release()
                raise
        writer = GroupCommitWriter(db, on_commit=telemetry.commit if telemetry is not None else None)
        http = HttpClient(settings.egress)
        await http.start()
        runtime = cls(settings, db, writer, http, lock, telemetry, tracer)
        runtime._vault = vault
        return runtime

    async def close(self, drain_s: float = 20.0) -> None:
        """Stop taking work, let in-flight runs reach their next node boundary (where they are parked as
        queued, checkpoint committed) for up to `drain_s`, then cancel what is left; a cancelled run
        stays `running` and is resumed by the next owner like after a crash."""
        self._draining = True
        if self._poller is not None:
            self._poller.cancel()
            await asyncio.gather(self._poller, return_exceptions=True)
        if self._worker is not None:
            await self._worker.stop()  # waits for its runs to park, like the tasks below
        for side in (self._listener, self._reconciler, self._housekeeping, self._revoker):
            if side is not None:
                side.cancel()
                await asyncio.gather(side, return_exceptions=True)
        tasks = [task for task in self._tasks.values() if not task.done()]
        if tasks:
            await asyncio.wait(tasks, timeout=drain_s)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        # What serves beside the runtime (the event feed, the sandbox) stops while the database is still
        # open: a reader holding a pooled connection at dispose time would leave it to the GC.
        for closer in reversed(self._closers):
            await closer()
        await self.tokens.close()
        await self.http.close()
        if self.executor.limiter is not None:
            self.executor.limiter.close()
        await asyncio.to_thread(self.writer.close)
        await asyncio.to_thread(self.tracer.close)  # exports the spans still buffered
        self._closed = True
        self.db.close()
        if self._lock is not None:
            self._lock.release()

    def on_close(self, closer: Callable[[], Awaitable[None]]) -> None:
        """Stop something that serves beside this runtime (the event feed, the sandbox simulator) when
        it closes: after its runs have drained, before its database closes."""
        self._closers.append(closer)

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
                claimed_by=self.worker_id if start and not self.queued else None,
            )(conn)
            return Submitted(run_id, saved.universe_id, saved.version_id, saved.number), record

        submitted, record = await self.writer.write(write)
        if start and not self.queued:
            self.dispatch(run_id, fresh=record)
        return submitted

    @property
    def draining(self) -> bool:
        """Shutting down: no new work is taken (readiness says so)."""
        return self._draining

    @property
    def in_flight(self) -> int:
        if self.queued:
            return len(self._running)
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
                claimed_by=None if self.queued else self.worker_id,
            )
        )
        if not self.queued:
            self.dispatch(run_id, fresh=record)
        return run_id

    def dispatch(self, run_id: str, *, fresh: journal.RunRecord | None = None) -> asyncio.Task[RunStatus]:
        """Execute the run in this process (embedded runtime)."""
        task = self._tasks.get(run_id)
        if task is None or task.done():
            task = asyncio.create_task(self._execute(run_id, fresh), name=f"run-{run_id}")
            self._tasks[run_id] = task
        return task

    def _hand_over(self, run_id: str) -> None:
        """A run was just queued: run it here (embedded); on PostgreSQL its job is already in the queue."""
        if not self.queued:
            self.dispatch(run_id)

    async def wait(self, run_id: str, poll_s: float = 0.05) -> RunStatus:
        """Until the run stops moving: an end, a pause or a question (or parked, embedded)."""
        if not self.queued:
            return await self.dispatch(run_id)
        while True:
            with self.db.engine.connect() as conn:
                status = journal.load_run(conn, run_id).status
            if status not in (RunStatus.QUEUED, RunStatus.RUNNING):
                return status
            await asyncio.sleep(poll_s)

    async def recover(self) -> list[str]:
        """Resume every run a previous process left unfinished; returns their ids.

        Embedded: this process owns the data directory, so every unfinished run is an orphan and runs
        here now. PostgreSQL: other workers may be running some, so only runs with no job get one
        (a dead worker's jobs come back through the stalled-job sweeper instead).
        """
        if self.queued:
            from cosmogen.runtime.queue import reconcile

            return await self.writer.write(reconcile)
        with self.db.engine.connect() as conn:
            pending = journal.runs_in(conn, [RunStatus.QUEUED, RunStatus.RUNNING])
        for run_id in pending:
            self.dispatch(run_id)
        return pending

    def start_polling(self) -> None:
        """Embedded: pick up runs queued by other processes (the CLI's --detach, resume, retry). On
        PostgreSQL the worker is woken by the queue instead."""
        if self._poller is None and not self.queued:
            self._poller = asyncio.create_task(self._poll(), name="run-poller")
        self.tokens.start_refresher()  # idle accounts' tokens stay fresh while this process serves
        self._start_housekeeping()
        self._start_revocations()

    def _start_housekeeping(self) -> None:
        """Serving processes drop expired Idempotency-Keys (runtime/idempotency.py) now and then."""
        if self._housekeeping is None:
            from cosmogen.runtime import idempotency

            self._housekeeping = asyncio.create_task(
                idempotency.purge_forever(self.writer, utcnow), name="idempotency-purge"
            )

    def _start_revocations(self) -> None:
        """Serving processes retry the OAuth revocations a disconnect could not deliver (oauth_flow.py);
        the vault opens only when one is due."""
        if self._revoker is None:
            from cosmogen.domain.capabilities import default_registry
            from cosmogen.integrations.oauth_flow import revocation_loop

            loop = revocation_loop(
                self.db, self.writer, self.open_vault, self.http, default_registry(), now=utcnow
            )
            self._revoker = asyncio.create_task(loop, name="oauth-revocations")

    async def start_worker(self, options: WorkerOptions | None = None) -> None:
        """Take runs from the PostgreSQL job queue in this process, and obey pause/cancel requests."""
        if not self.queued or self.settings.database_url is None:
            raise NeedsPostgres(
                "workers share runs through PostgreSQL; set COSMOGEN_DATABASE_URL (or --database-url). "
                "The embedded SQLite runtime runs its runs inside `cosmogen serve`."
            )
        from cosmogen.runtime.queue import conninfo
        from cosmogen.runtime.worker import RunWorker

        options = options or self.settings.worker_options()
        ready = asyncio.Event()
        self._listener = asyncio.create_task(
            self._obey_control(conninfo(self.settings.database_url), ready), name="control-listener"
        )
        await asyncio.wait_for(ready.wait(), timeout=30)
        self._worker = RunWorker(self.settings.database_url, self._execute_job, options, self.worker_id)
        await self._worker.start()
        self._reconciler = asyncio.create_task(self._reconcile_forever(), name="run-reconciler")
        self.tokens.start_refresher()
        self._start_housekeeping()
        self._start_revocations()

    async def _reconcile_forever(self, every_s: float = 60.0) -> None:
        """Now and then, give a job to unfinished runs that lost theirs (a job aborted at a worker's
        shutdown timeout, or one that failed on an internal error)."""
        while True:
            try:
                found = await self.recover()
            except Exception:  # a database hiccup: try again next round
                log.exception("reconciling runs without a job failed")
            else:
                if found:
                    log.warning("gave a job to %d unfinished run(s) that had none: %s", len(found), found)
            await asyncio.sleep(every_s)

    def live_workers(self, within_s: float = 30.0) -> int:
        """PostgreSQL: worker processes that sent a heartbeat within `within_s` (0 when embedded)."""
        if not self.queued:
            return 0
        with self.db.engine.connect() as conn:
            count = conn.exec_driver_sql(
                "SELECT count(*) FROM procrastinate_workers "
                "WHERE last_heartbeat > now() - make_interval(secs => %(s)s)",
                {"s": within_s},
            ).scalar()
        return int(count or 0)

    def require_workers(self) -> None:
        if self.queued and self.live_workers() == 0:
            raise NoWorkers(
                "no cosmogen worker is running for this database, so nothing would run the run: start "
                "`cosmogen worker` (or `cosmogen serve`) with the same --database-url, or pass --detach "
                "to queue it for later"
            )

    async def _obey_control(self, info: str, ready: asyncio.Event) -> None:
        async for note in notify.listen(info, [notify.CONTROL_CHANNEL], ready=ready):
            if note.payload in self._running:
                self._controls.add(note.payload)  # the executor checkpoints at its next node

    async def _execute_job(self, run_id: str, job_id: int) -> None:
        status = await self._execute(run_id, None, job_id=job_id)
        log.debug("job for run %s ended with the run %s", run_id, status.value)

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

    async def _execute(
        self, run_id: str, fresh: journal.RunRecord | None, *, job_id: int | None = None
    ) -> RunStatus:
        async with self._slots:
            self._running.add(run_id)
            try:
                return await self.executor.execute(run_id, fresh=fresh, job_id=job_id)
            except (journal.StaleRun, IntegrityError) as exc:
                # Another executor took the run over (a newer attempt, or the same intent or event
                # already written): this one is a zombie and stops without writing anything more.
                log.warning("run %s superseded, this executor stops: %s", run_id, exc)
                with self.db.engine.connect() as conn:
                    return journal.load_run(conn, run_id).status
            finally:
                self._running.discard(run_id)
                self._controls.discard(run_id)

    # --- control ----------------------------------------------------------------------------------

    async def act(self, run_id: str, action: RunAction) -> RunStatus:
        status = await self.writer.write(control.act(run_id, action))
        if status is RunStatus.RUNNING:
            self._controls.add(run_id)  # make the local executor checkpoint at the next node
        elif status is RunStatus.QUEUED:
            self._hand_over(run_id)
        return status

    async def retry(self, run_id: str) -> str:
        child = await self.writer.write(control.retry(run_id))
        self._hand_over(child)
        return child

    async def rerun(self, run_id: str) -> str:
        child = await self.writer.write(control.rerun(run_id))
        self._hand_over(child)
        return child


def _key_source(settings: RuntimeSettings) -> Any:
    from cosmogen.integrations.vault import KeyringError, KeySource

    if settings.data_dir is None and settings.vault_keys is None:
        raise KeyringError("no vault key: set COSMOGEN_VAULT_KEYS (the same keyring for every worker)")
    if settings.data_dir is not None:
        return KeySource.for_data_dir(settings.data_dir, settings.vault_keys)
    # No data directory (PostgreSQL): only the keyring from the environment counts, and a keyring from the
    # environment is never written to a file, so this path is never touched.
    return KeySource(Path("/nonexistent/vault.keys"), settings.vault_keys)


def check_vault_keys(settings: RuntimeSettings) -> None:
    """The start-up key check alone (reads only; raises VaultStartupError): `serve` runs it before its HTTP
    server starts, so a wrong or missing key is one clear line and exit 2 (Runtime.open checks again)."""
    db = settings.open_database()
    try:
        _check_vault_keys(settings, db)
    finally:
        db.close()


def _check_vault_keys(settings: RuntimeSettings, db: Database) -> Any:
    """The start-up check (reads only; raises VaultStartupError), or None when the vault is left for later:
    a PostgreSQL database with no key yet and no COSMOGEN_VAULT_KEYS, where a key file made by this process
    would be this machine's alone while other machines share the database."""
    from cosmogen.integrations import keystore

    if settings.data_dir is None and settings.vault_keys is None:
        with db.engine.connect() as conn:
            if not keystore.read_key_records(conn) and not any(keystore.key_usage(conn).values()):
                return None
    checked = keystore.check_keys(db, _key_source(settings))
    if checked.plan.create_keyring and settings.database_url is not None:
        return None
    return checked


def _check_durable(db: Database) -> None:
    """Refuse a PostgreSQL server that acknowledges commits it may lose (DUR-05's start-up probe)."""
    with db.engine.connect() as conn:
        fsync = conn.exec_driver_sql("SHOW fsync").scalar()
        synchronous = conn.exec_driver_sql("SHOW synchronous_commit").scalar()
    if fsync != "on" or synchronous == "off":
        raise UnsafeDatabase(
            f"PostgreSQL has fsync={fsync} and synchronous_commit={synchronous}: a committed run could "
            "be lost in a crash. Set fsync = on and synchronous_commit = on (or remote_write/local) in "
            "postgresql.conf and reload the server."
        )
