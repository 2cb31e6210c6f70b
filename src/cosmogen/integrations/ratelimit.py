"""The shared rate limiter: GCRA state in the database, so every process (serve, workers, the CLI) draws
from the same tokens of a key, and a 429 seen by one blocks the key for all.

`acquire(key, policy)` takes one token in one short transaction and, when the token is only valid later,
sleeps (asyncio, no transaction open) until then. The arithmetic is `domain.ratelimit.decide`, which
*reserves*: the stored tat already counts the waiting caller, so N waiters cost N transactions, not N
per freed token, and no waiter can be starved by later ones. After sleeping, a caller reads the key's
`blocked_until` once: a 429 recorded meanwhile by any process voids a token that falls inside the block,
and the caller takes a new one after it.

How a token is taken (the same three statements on both dialects):

    SELECT tat, blocked_until FROM rate_limits WHERE key = :key FOR UPDATE   (INSERT ... ON CONFLICT
    DO NOTHING first if the key is new), then decide() in Python, then UPDATE the row, COMMIT.

- PostgreSQL: the row lock serialises takers of one key only, for the three round trips (~1 ms); other
  keys and the journal are not blocked. One `INSERT ... ON CONFLICT DO UPDATE ... RETURNING` doing the
  arithmetic in SQL would save two round trips but write GCRA a second time, in two SQL dialects
  (GREATEST vs max(), NULL rules), away from the property-tested function; at provider rates (at most
  hundreds of tokens a second per key) the round trips do not matter.
- SQLite: `FOR UPDATE` does not exist (SQLAlchemy drops it); the transaction begins IMMEDIATE, taking
  the database's write lock up front, which serialises every taker in every process. It is held for
  three statements.

Token commits do not wait for the disk (PostgreSQL `SET LOCAL synchronous_commit = off`, SQLite
`synchronous=NORMAL` on the limiter's connection, WAL either way). A token granted "now" goes out only
after its commit, while the bucket's schedule runs from the moment of the decision: an fsync of tens of
milliseconds on a busy disk made a burst's calls reach the provider later than the calls reserved after
them and broke an exact provider bucket (W3: 1 refusal in 2 of 3 rounds on PostgreSQL with 2 workers).
What that gives up is only the last tokens' state in a power loss (a crash of the process or of the
server loses nothing committed): afterwards a key may grant up to a burst early once, which a provider
answers with a 429 that blocks the key, as it would for any other process's excess. The journal keeps
its full durability: only this connection and these transactions are relaxed.

Why a connection and thread of its own rather than the group-commit writer: a token is latency-critical
and tiny, and the writer resolves a write only after its whole batch (journal rows of many runs) has
committed, so tokens would wait behind other work; the writer may also re-run a function after a failed
batch, which for a token needs more care than "run again" (see `_transaction`). One worker thread per
limiter owns the connection, so the event loop never blocks on the database.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import Connection, bindparam, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError

from cosmogen.domain.ratelimit import Decision, Limit, Policy, blocked_until, decide, reservation_voided
from cosmogen.store.database import SQLITE_BEGIN, Database
from cosmogen.store.tables import rate_limits, utcnow

T = TypeVar("T")

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Wait:
    """A caller is about to wait for a token, or for a 429's block to end (for the runtime's `waiting:
    rate limit`)."""

    key: str
    until: float  # epoch seconds at which its token is valid
    seconds: float  # how long that is from now
    blocked: bool  # waiting out a 429's Retry-After, not only the rate


@dataclass(frozen=True, slots=True)
class Grant:
    """A token taken: valid from `at` (epoch seconds); `acquire` returns at or after it."""

    key: str
    at: float
    waited_s: float


@dataclass(frozen=True, slots=True)
class KeyState:
    """A key's row: GCRA's theoretical arrival time and a 429's block, both epoch seconds."""

    tat: float
    blocked_until: float | None


OnWait = Callable[[Wait], None]

_SELECT = (
    select(rate_limits.c.tat, rate_limits.c.blocked_until)
    .where(rate_limits.c.key == bindparam("key"))
    .with_for_update()
)
_READ = select(rate_limits.c.tat, rate_limits.c.blocked_until).where(rate_limits.c.key == bindparam("key"))
_UPDATE = (
    update(rate_limits)
    .where(rate_limits.c.key == bindparam("row_key"))
    .values(
        tat=bindparam("new_tat"),
        blocked_until=bindparam("new_blocked_until"),
        updated_at=bindparam("now_utc"),
    )
)
_NO_SYNC_COMMIT = text("SET LOCAL synchronous_commit = off")
_SQLITE_SYNCHRONOUS = "NORMAL"  # SQLite: WAL commits without fsync

# A new key starts at tat 0 ("never used": decide() treats any tat before now as a full bucket).
_NEW_ROW = {"tat": 0.0, "blocked_until": None}
_INSERT = {
    "postgresql": postgresql.insert(rate_limits).values(_NEW_ROW).on_conflict_do_nothing(),
    "sqlite": sqlite.insert(rate_limits).values(_NEW_ROW).on_conflict_do_nothing(),
}


class RateLimiter:
    """Tokens of GCRA keys kept in `rate_limits`, shared by every process using the same database.

    `clock` gives epoch seconds (the stored tat and blocked_until are epoch seconds, so every process
    must use the same wall clock: on PostgreSQL with workers on several machines, keep them NTP-synced;
    a skew of d seconds lets up to rate·d extra calls through). `sleep` is asyncio.sleep unless a test
    drives a virtual clock. Call `close()` when done.
    """

    def __init__(
        self,
        db: Database,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._db = db
        self._clock = clock
        self._sleep = sleep
        self._insert = _INSERT[db.dialect]
        # Opened here so that an unreachable database fails the constructor, not the first call.
        self._conn = db.engine.connect()
        if db.dialect == "sqlite":
            # Take the write lock at BEGIN: every taker of every key, in every process, goes one by one.
            self._conn.execution_options(**{SQLITE_BEGIN: "IMMEDIATE"})
            # No fsync per token (see the module docstring); a PRAGMA SQLite refuses inside a transaction,
            # so on the driver's connection, which this limiter holds until close() restores FULL.
            self._conn.connection.driver_connection.execute(f"PRAGMA synchronous={_SQLITE_SYNCHRONOUS}")  # type: ignore[union-attr]
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cosmogen-ratelimit")
        self._closed = False

    @property
    def clock(self) -> Callable[[], float]:
        return self._clock

    async def acquire(self, key: str, policy: Policy, *, on_wait: OnWait | None = None) -> Grant:
        """Wait until one token of `key` is granted; `on_wait` hears of each wait before it starts."""
        started = self._clock()
        while True:
            decision = await self._run(functools.partial(self._transaction, self._take, key, policy))
            if decision.allowed_now:
                return Grant(key, decision.at, max(decision.now - started, 0.0))
            if on_wait is not None:
                on_wait(Wait(key, decision.at, decision.wait_s, decision.blocked))
            await self._sleep_until(decision.at)
            state = await self._run(functools.partial(self._read_state, key))
            if not reservation_voided(decision.at, state.blocked_until if state else None):
                return Grant(key, decision.at, max(self._clock() - started, 0.0))
            # A 429 recorded while we slept (by any process) blocks the key past our token: take a new one,
            # which decide() places after the block. The voided token stays spent (never over the limit).

    async def block(self, key: str, until: float) -> None:
        """Record a 429's blocked-until time for every process: nobody's token of `key` is valid before it.

        A later block never shortens an earlier, longer one.
        """
        await self._run(functools.partial(self._transaction, self._block, key, until))

    async def peek(self, key: str) -> KeyState | None:
        """The key's stored state (for display and tests), None for a key never used."""
        return await self._run(functools.partial(self._read_state, key))

    def close(self) -> None:
        """Close the connection and stop the thread. Idempotent; call it outside pending acquires."""
        if self._closed:
            return
        self._closed = True
        self._thread.submit(self._close_connection).result()
        self._thread.shutdown(wait=True)

    def __enter__(self) -> RateLimiter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- in the limiter's thread ------------------------------------------------------------------------

    async def _run(self, work: Callable[[], T]) -> T:
        if self._closed:
            raise RuntimeError("the rate limiter is closed")
        return await asyncio.get_running_loop().run_in_executor(self._thread, work)

    async def _sleep_until(self, at: float) -> None:
        # Loop: asyncio's timer runs on the monotonic clock and may wake a hair before `at` on ours.
        while (left := at - self._clock()) > 0:
            await self._sleep(left)

    def _close_connection(self) -> None:
        if self._db.dialect == "sqlite" and not self._conn.closed and not self._conn.invalidated:
            # The connection goes back to the pool, where a writer may get it: durable commits again.
            self._conn.connection.driver_connection.execute("PRAGMA synchronous=FULL")  # type: ignore[union-attr]
        self._conn.close()

    def _transaction(self, work: Callable[..., T], *args: Any) -> T:
        """`work(conn, *args)` in one transaction of the limiter's connection."""
        for attempt in (1, 2):
            try:
                with self._conn.begin():
                    if self._db.dialect == "postgresql":
                        self._conn.execute(_NO_SYNC_COMMIT)  # this transaction only (module docstring)
                    return work(self._conn, *args)
            except DBAPIError as exc:
                # A dropped connection (server restart, idle timeout) gets one more try on a new one. If it
                # dropped during COMMIT, a token may have been taken twice: one slot wasted, never one too
                # many, so no need to find out which.
                if attempt == 2 or not exc.connection_invalidated:
                    raise
                log.warning("rate limiter lost its database connection; trying once more: %s", exc)
        raise AssertionError("unreachable")

    def _locked_row(self, conn: Connection, key: str) -> KeyState:
        row = conn.execute(_SELECT, {"key": key}).first()
        if row is None:
            # ON CONFLICT DO NOTHING: a racing process may create the key first; we then lock its row.
            conn.execute(self._insert, {"key": key, "updated_at": utcnow()})
            row = conn.execute(_SELECT, {"key": key}).one()
        return KeyState(row.tat, row.blocked_until)

    def _take(self, conn: Connection, key: str, policy: Policy) -> Decision:
        row = self._locked_row(conn, key)
        # The clock is read with the row locked, so decisions on one key see time in commit order.
        decision = decide(row.tat, row.blocked_until, self._clock(), policy)
        conn.execute(
            _UPDATE,
            {
                "row_key": key,
                "new_tat": decision.tat,
                "new_blocked_until": row.blocked_until,
                "now_utc": utcnow(),
            },
        )
        return decision

    def _block(self, conn: Connection, key: str, until: float) -> None:
        row = self._locked_row(conn, key)
        current = row.blocked_until
        conn.execute(
            _UPDATE,
            {
                "row_key": key,
                "new_tat": row.tat,
                "new_blocked_until": until if current is None else max(current, until),
                "now_utc": utcnow(),
            },
        )

    def _read_state(self, key: str) -> KeyState | None:
        # Not through the locking connection: on SQLite its IMMEDIATE begin would take the write lock
        # for a read. A pooled connection reads the latest committed row without locking anything.
        with self._db.engine.connect() as reader:
            row = reader.execute(_READ, {"key": key}).first()
        return None if row is None else KeyState(row.tat, row.blocked_until)


@dataclass(frozen=True, slots=True)
class Throttle:
    """What `HttpClient.send` needs to charge each attempt to a key and pass a 429 on to everyone."""

    limiter: RateLimiter
    key: str
    policy: Policy
    on_wait: OnWait | None = None

    @classmethod
    def for_limit(cls, limiter: RateLimiter, limit: Limit, on_wait: OnWait | None = None) -> Throttle:
        return cls(limiter, limit.key, limit.policy, on_wait)

    async def acquire(self) -> Grant:
        return await self.limiter.acquire(self.key, self.policy, on_wait=self.on_wait)

    async def block_from(self, headers: Mapping[str, str]) -> float | None:
        """Block the key until the time a 429's headers give (Retry-After, x-ratelimit-reset, ...), if any.

        Returns that time (epoch seconds), or None when the headers name none. `on_wait` hears of it: the
        caller that got the 429 waits for the block too, in its retry's backoff rather than in `acquire`,
        and would otherwise still show the wait for the token the 429 answered.
        """
        now = self.limiter.clock()
        until = blocked_until(headers, now)
        if until is not None and until > now:
            await self.limiter.block(self.key, until)
            if self.on_wait is not None:
                self.on_wait(Wait(self.key, until, until - now, blocked=True))
        return until
