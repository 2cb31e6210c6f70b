"""The live event feed of one process: reads newly committed run events once and fans them out to the
stream clients subscribed here (api/ws.py), each through a bounded buffer.

Woken by the journal's notifications (runtime/notify.py): on SQLite through the group-commit writer's
commit subscribers (only while someone here listens), on PostgreSQL by LISTEN, so runs executed by
`cosmogen worker` processes reach clients of `serve` too. A slow poll covers a lost notification.

Order and resume (domain/events.py): events are delivered in id order. On PostgreSQL two processes'
transactions may commit out of id order, so a hole below a newer id is waited for (`gap_wait_s`) before
the newer events pass; a hole still open after that is a rolled-back transaction's (a sequence never
reuses ids) and is skipped. SQLite has one writer and rolls its ids back with the transaction: no holes.

A client that cannot keep up never blocks the feed: when its buffer is full it is dropped (`overflowed`)
and told to resume from its cursor.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from sqlalchemy import Connection, func, select

from cosmogen.domain.events import Envelope, Subscription
from cosmogen.runtime import notify
from cosmogen.store import Database
from cosmogen.store.tables import run_events, runs, universes
from cosmogen.store.writer import GroupCommitWriter
from cosmogen.telemetry.hooks import Hooks

log = logging.getLogger(__name__)
T = TypeVar("T")

# A run's event takes its workspace from its universe; a workspace's own event (no run) names it.
_WORKSPACE = func.coalesce(universes.c.workspace_id, run_events.c.workspace_id)
_COLUMNS = (
    run_events.c.id,
    run_events.c.run_id,
    run_events.c.seq,
    run_events.c.type,
    run_events.c.payload,
    run_events.c.created_at,
    runs.c.universe_id,
    _WORKSPACE.label("workspace_id"),
)
_JOINED = run_events.outerjoin(runs, runs.c.id == run_events.c.run_id).outerjoin(
    universes, universes.c.id == runs.c.universe_id
)


def read_events(
    conn: Connection, after: int, *, upto: int | None = None, limit: int = 1000,
    subscription: Subscription | None = None,
) -> list[Envelope]:  # fmt: skip
    """Committed events with id > `after` (and <= `upto`), in id order, as envelopes."""
    query = select(*_COLUMNS).select_from(_JOINED).where(run_events.c.id > after)
    if upto is not None:
        query = query.where(run_events.c.id <= upto)
    if subscription is not None:
        query = query.where(_WORKSPACE == subscription.workspace)  # noqa: SIM300 (a SQL expression)
        if subscription.universe is not None:
            query = query.where(runs.c.universe_id == subscription.universe)
        if subscription.run is not None:
            query = query.where(run_events.c.run_id == subscription.run)
        if subscription.types is not None:
            query = query.where(run_events.c.type.in_(sorted(subscription.types)))
    rows = conn.execute(query.order_by(run_events.c.id).limit(limit))
    return [
        Envelope(r.id, r.type, r.workspace_id, r.universe_id, r.run_id, r.seq, r.created_at, r.payload)
        for r in rows
    ]


def run_workspace(conn: Connection, run_id: str) -> str | None:
    found = conn.execute(
        select(universes.c.workspace_id)
        .select_from(runs.join(universes, universes.c.id == runs.c.universe_id))
        .where(runs.c.id == run_id)
    ).scalar()
    return None if found is None else str(found)


def universe_workspace(conn: Connection, universe_id: str) -> str | None:
    found = conn.execute(select(universes.c.workspace_id).where(universes.c.id == universe_id)).scalar()
    return None if found is None else str(found)


class Subscriber:
    """One client's place in the feed: events with id > `live_from` arrive in `queue`."""

    def __init__(self, subscription: Subscription, live_from: int, buffer: int) -> None:
        self.subscription = subscription
        self.live_from = live_from
        self.queue: asyncio.Queue[Envelope] = asyncio.Queue(maxsize=buffer)
        self.overflowed = asyncio.Event()

    @property
    def crowded(self) -> bool:
        return self.queue.qsize() * 2 >= (self.queue.maxsize or 1)

    def offer(self, event: Envelope) -> bool:
        """False once the buffer is full (the client is to be dropped)."""
        if event.id <= self.live_from or not self.subscription.matches(event):
            return True
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self.overflowed.set()
            return False
        return True


class EventFeed:
    def __init__(
        self, db: Database, writer: GroupCommitWriter, *, database_url: str | None = None,
        buffer: int = 1024, gap_wait_s: float = 2.0, poll_s: float = 1.0, page: int = 1000,
        telemetry: Hooks | None = None,
    ) -> None:  # fmt: skip
        self._db = db
        self._telemetry = telemetry or Hooks()
        self._writer = writer
        self._database_url = database_url
        self.buffer = buffer
        self._gap_wait_s = gap_wait_s
        self._poll_s = poll_s
        self._page = page
        self._subscribers: set[Subscriber] = set()
        self._position = 0  # every event with id <= this has been dispatched (or was before anyone listened)
        self._fresh = False  # whether _position is current (SQLite: only while someone listens)
        self._hole: tuple[int, float] | None = None  # (first missing id, when first seen)
        self._wake = asyncio.Event()
        self._timeout: float | None = None  # the pump's next wait at most (None: poll_s)
        # Its own thread for reads: the default pool is shared with the runtime and may queue them.
        self._reader = ThreadPoolExecutor(1, thread_name_prefix="event-feed")
        self._tasks: list[asyncio.Task[None]] = []
        self._unsubscribe_writer: Callable[[], None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def listens_across_processes(self) -> bool:
        return self._db.dialect == "postgresql"

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        if self.listens_across_processes:
            self._position = await asyncio.to_thread(self._max_id)
            self._fresh = True
            assert self._database_url is not None, "PostgreSQL needs its URL to LISTEN"
            ready = asyncio.Event()
            self._tasks.append(asyncio.create_task(self._listen(ready), name="event-feed-listener"))
            await asyncio.wait_for(ready.wait(), timeout=30)
        self._tasks.append(asyncio.create_task(self._pump(), name="event-feed"))

    async def close(self) -> None:
        self._detach_writer()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        self._reader.shutdown(wait=False, cancel_futures=True)

    async def subscribe(self, subscription: Subscription) -> Subscriber:
        if not self._fresh:
            # SQLite: nobody listened, so the feed neither heard nor read commits; catch up its position.
            # A commit racing this read is picked up by the poll, at the latest.
            self._attach_writer()
            position = await asyncio.to_thread(self._max_id)
            if not self._fresh:
                self._position, self._fresh = position, True
        subscriber = Subscriber(subscription, self._position, self.buffer)
        self._subscribers.add(subscriber)
        self._telemetry.stream_subscribed(1)
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self._drop(subscriber)
        if not self._subscribers and not self.listens_across_processes:
            self._detach_writer()
            self._fresh = False

    async def backlog(self, subscriber: Subscriber, after: int) -> list[Envelope]:
        """One page of the subscriber's events with id in (after, live_from], read from the store."""
        return await self._in_thread(self._read, after, subscriber.live_from, subscriber.subscription)

    # --- inside ----------------------------------------------------------------------------------------

    def _drop(self, subscriber: Subscriber) -> None:
        # Counted once: a client dropped for overflow is unsubscribed again when its stream closes.
        if subscriber in self._subscribers:
            self._subscribers.discard(subscriber)
            self._telemetry.stream_subscribed(-1)

    def _attach_writer(self) -> None:
        if self._unsubscribe_writer is None and not self.listens_across_processes:
            self._unsubscribe_writer = self._writer.subscribe_commits(self._on_commit)

    def _detach_writer(self) -> None:
        if self._unsubscribe_writer is not None:
            self._unsubscribe_writer()
            self._unsubscribe_writer = None

    def _on_commit(self, signals: list[Any]) -> None:
        # The writer thread: hand over to the loop at once, do nothing else here.
        if self._loop is not None and any(
            isinstance(s, notify.Notification) and s.channel == notify.EVENTS_CHANNEL for s in signals
        ):
            self._loop.call_soon_threadsafe(self._wake.set)

    async def _listen(self, ready: asyncio.Event) -> None:
        from cosmogen.runtime.queue import conninfo

        assert self._database_url is not None
        async for _ in notify.listen(conninfo(self._database_url), [notify.EVENTS_CHANNEL], ready=ready):
            self._wake.set()

    async def _pump(self) -> None:
        assert self._loop is not None
        while True:
            # A timer instead of wait_for: a notification then wakes the pump in one loop step, which
            # matters on a loop busy running runs.
            timer = self._loop.call_later(self._poll_s if self._timeout is None else self._timeout,
                                          self._wake.set)  # fmt: skip
            await self._wake.wait()
            timer.cancel()
            self._wake.clear()
            try:
                self._timeout = await self._advance()
            except Exception:  # a database hiccup: the next wake or poll tries again
                log.exception("reading new run events for the live stream failed")
                self._timeout = None

    async def _advance(self) -> float:
        """Dispatch what was committed since the last round; returns how long to wait at most."""
        listening = bool(self._subscribers)
        if not listening and not self.listens_across_processes:
            return self._poll_s
        while True:
            if self.listens_across_processes:
                events = await self._in_thread(self._read, self._position, None, None)
            else:
                # SQLite: a WAL read of the few rows a commit added takes well under a millisecond, less
                # than the hand-offs to a thread and back cost under load (W4: p50 -10 ms); so inline.
                events = self._read(self._position, None, None)
            passed = self._contiguous(events)
            now = time.time()
            for event in passed:
                crowded = False
                if self._subscribers:
                    self._telemetry.stream_lag(max(0.0, now - event.at.timestamp()))
                for subscriber in list(self._subscribers):
                    if not subscriber.offer(event):
                        self._drop(subscriber)
                    crowded = crowded or subscriber.crowded
                # Moved per event: one who subscribes during the yield below starts right after it.
                self._position = event.id
                if crowded:  # let readers catch up, so a page need not fit in one client's buffer
                    await asyncio.sleep(0)
            if len(passed) < len(events):  # stopped at a hole: look again soon
                assert self._hole is not None
                return max(0.005, min(self._poll_s, self._hole[1] + self._gap_wait_s - time.monotonic()))
            if len(events) < self._page:
                return self._poll_s

    def _contiguous(self, events: Sequence[Envelope]) -> list[Envelope]:
        passed: list[Envelope] = []
        expected = self._position + 1
        for event in events:
            if event.id > expected and self.listens_across_processes:
                now = time.monotonic()
                if self._hole is None or self._hole[0] != expected:
                    self._hole = (expected, now)
                if now - self._hole[1] < self._gap_wait_s:
                    break
                log.info("skipping run event ids %d..%d: no commit filled them", expected, event.id - 1)
            passed.append(event)
            expected = event.id + 1
        if len(passed) == len(events):
            self._hole = None
        return passed

    async def _in_thread(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._reader, fn, *args)

    def _read(self, after: int, upto: int | None, subscription: Subscription | None) -> list[Envelope]:
        with self._db.engine.connect() as conn:
            return read_events(conn, after, upto=upto, limit=self._page, subscription=subscription)

    def _max_id(self) -> int:
        with self._db.engine.connect() as conn:
            return int(conn.execute(select(func.max(run_events.c.id))).scalar() or 0)
