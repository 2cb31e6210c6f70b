"""An asyncio event loop on a virtual clock, for tests whose criteria are in seconds (Retry-After: 7,
backoff 1/2/4 s, a 60 s timeout, 10 requests per second) but which must not take that long.

`loop.time()` is virtual. It stands still while anything can still happen without waiting: ready
callbacks, sockets with data, work in an executor thread (`run_in_executor`, `asyncio.to_thread`), and
for `grace_s` of real time after the loop went idle (for what the loop cannot see: a commit by the
group-commit writer thread, a PostgreSQL round trip). Only then does it jump to the next timer. So
every `asyncio.sleep`, `wait_for` and aiohttp timeout of the code under test takes no real time, and
two things that happen in the same real instant happen at the same virtual time. Unseen work that
takes longer than the grace lets time jump meanwhile, as if the database were that slow: a test should
wait for an event (a request seen, a status reached), not for a virtual duration, before it looks at
what runs have committed.

Code that reads a clock of its own must read this one: pass `VirtualTimeLoop.epoch` (seconds since the
epoch) or `loop.time` (monotonic) where it takes a clock (RateLimiter, Simulator, HttpClient.now).

Use it with `asyncio.Runner(loop_factory=VirtualTimeLoop)` or `run(main())` below.
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Callable, Coroutine, Mapping
from concurrent.futures import Executor
from datetime import UTC, datetime
from typing import Any, TypeVar

T = TypeVar("T")

# Where virtual epoch time starts: a fixed moment, so runs of a test see the same times.
EPOCH_START = 1_800_000_000.0
GRACE_S = 0.003  # real seconds of idleness before time jumps (see the module docstring)
BUSY_POLL_S = 0.05  # real seconds between looks while an executor thread works


class _VirtualSelector(selectors.BaseSelector):
    """The loop's selector: real I/O from the wrapped selector, the waiting done on the virtual clock."""

    def __init__(self, loop: VirtualTimeLoop, inner: selectors.BaseSelector) -> None:
        self._loop = loop
        self._inner = inner

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._inner.register(fileobj, events, data)

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._inner.unregister(fileobj)

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._inner.modify(fileobj, events, data)

    def get_key(self, fileobj: Any) -> selectors.SelectorKey:
        return self._inner.get_key(fileobj)

    def get_map(self) -> Mapping[Any, selectors.SelectorKey]:
        return self._inner.get_map()

    def close(self) -> None:
        self._inner.close()

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = self._inner.select(0)
        if ready or timeout == 0:
            return ready
        while self._loop.executor_jobs > 0:
            # A thread is working for the loop: its answer comes through the loop's self-pipe.
            ready = self._inner.select(BUSY_POLL_S)
            if ready:
                return ready
        ready = self._inner.select(self._loop.grace_s if timeout is not None else None)
        if ready or timeout is None:
            return ready
        self._loop.advance(timeout)
        return []


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    def __init__(self, *, start: float = 0.0, grace_s: float = GRACE_S) -> None:
        self._now = start
        self.grace_s = grace_s
        self.executor_jobs = 0
        super().__init__(_VirtualSelector(self, selectors.DefaultSelector()))

    def time(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += max(seconds, 0.0)

    def epoch(self) -> float:
        """Virtual seconds since the epoch (EPOCH_START when the loop was made)."""
        return EPOCH_START + self._now

    def utcnow(self) -> datetime:
        return datetime.fromtimestamp(self.epoch(), UTC)

    def run_in_executor(  # type: ignore[override]  # same call, typeshed's variadic generics aside
        self, executor: Executor | None, func: Callable[..., T], *args: Any
    ) -> asyncio.Future[T]:
        future = super().run_in_executor(executor, func, *args)
        self.executor_jobs += 1
        future.add_done_callback(self._executor_job_done)
        return future

    def _executor_job_done(self, _: object) -> None:
        self.executor_jobs -= 1


def run(main: Coroutine[Any, Any, T], *, grace_s: float = GRACE_S) -> T:
    """`asyncio.run` on a VirtualTimeLoop."""
    with asyncio.Runner(loop_factory=lambda: VirtualTimeLoop(grace_s=grace_s)) as runner:
        return runner.run(main)


def current() -> VirtualTimeLoop:
    """The running loop, which must be a VirtualTimeLoop."""
    loop = asyncio.get_running_loop()
    if not isinstance(loop, VirtualTimeLoop):
        raise RuntimeError("not running on a VirtualTimeLoop: use cosmogen.testing.virtual_time.run")
    return loop
