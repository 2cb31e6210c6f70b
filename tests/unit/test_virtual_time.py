"""The virtual-time event loop that DUR-12 runs on: sleeps and timeouts cost no real time, time stands
still while a thread works for the loop, and real I/O is still served."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import pytest

from cosmogen.testing import virtual_time


def test_sleeps_and_timeouts_take_virtual_time_only() -> None:
    async def main() -> tuple[float, list[str]]:
        loop = virtual_time.current()
        order: list[str] = []

        async def sleeper(name: str, seconds: float) -> None:
            await asyncio.sleep(seconds)
            order.append(f"{name}@{loop.time():g}")

        await asyncio.gather(sleeper("b", 7.0), sleeper("a", 1.0), sleeper("c", 3600.0))
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(asyncio.Event().wait(), timeout=60.0)
        return loop.time(), order

    started = time.perf_counter()
    now, order = virtual_time.run(main())
    assert order == ["a@1", "b@7", "c@3600"]
    assert now == pytest.approx(3660.0)
    assert time.perf_counter() - started < 5.0  # an hour of sleeping took no hour


def test_time_stands_still_while_a_thread_works_for_the_loop() -> None:
    async def main() -> tuple[float, float, float]:
        loop = virtual_time.current()
        ticker = asyncio.create_task(asyncio.sleep(0.001))  # a timer that would let time jump
        before = loop.time()
        await asyncio.to_thread(time.sleep, 0.2)  # 200 real ms in an executor thread
        during = loop.time()
        await ticker
        return before, during, loop.epoch() - virtual_time.EPOCH_START

    before, during, epoch_offset = virtual_time.run(main())
    assert during == before  # the 1 ms timer did not fire during the thread's 200 ms
    assert epoch_offset == pytest.approx(0.001, abs=1e-6)


def test_real_io_from_another_thread_is_served() -> None:
    async def main() -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"ping")
        await writer.drain()
        answer = await reader.read(4)
        writer.close()
        await writer.wait_closed()
        return answer

    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def echo_once() -> None:
        conn, _ = server.accept()
        with conn:
            conn.sendall(conn.recv(4)[::-1])

    thread = threading.Thread(target=echo_once, daemon=True)
    thread.start()
    try:
        assert virtual_time.run(main()) == b"gnip"
    finally:
        thread.join(5)
        server.close()


def test_current_refuses_an_ordinary_loop() -> None:
    async def main() -> None:
        virtual_time.current()

    with pytest.raises(RuntimeError, match="not running on a VirtualTimeLoop"):
        asyncio.run(main())
