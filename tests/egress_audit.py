"""SSRF-05 at run time: every outbound TCP connection this test process makes is audited.

`socket.socket.connect` and `connect_ex` are wrapped for the whole session (asyncio, aiohttp, urllib and
socket.create_connection all end there). A connection is fine when either
- it is made by the guarded client: integrations/http.py marks its requests with THROUGH_GUARD, so the
  address was checked by check_url or by the guard's resolver; or
- it goes to a test destination: a loopback address. The tests start their servers there (the provider
  simulator, echo servers, `cosmogen serve` in child processes) and PostgreSQL is reached by libpq in C,
  not through Python sockets, so it never shows up here.
Anything else is an unguarded egress: the test that made it fails (and the session, if it happened
outside a test). UDP, Unix sockets and child processes are out of scope; the SSRF-01..06 scenarios run
in their own network namespace, with nowhere else to go.

The cost is one context-variable read and an address parse per connect.
"""

from __future__ import annotations

import ipaddress
import socket
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from cosmogen.integrations.http import THROUGH_GUARD

_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex
_violations: list[str] = []


def _is_test_destination(host: str) -> bool:
    if host.startswith("127.") or host == "::1":  # the common case, without parsing
        return True
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False  # a name: socket.connect would resolve it outside the guard
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def _audit(sock: socket.socket, address: Any) -> None:
    if sock.family not in (socket.AF_INET, socket.AF_INET6) or sock.type != socket.SOCK_STREAM:
        return
    if THROUGH_GUARD.get() or _is_test_destination(str(address[0])):
        return
    caller = "".join(traceback.format_stack(limit=12)[:-2])
    _violations.append(f"unguarded connection to {address[0]}:{address[1]}\n{caller}")


def _connect(self: socket.socket, address: Any) -> None:
    _audit(self, address)
    _real_connect(self, address)


def _connect_ex(self: socket.socket, address: Any) -> int:
    _audit(self, address)
    return _real_connect_ex(self, address)


@contextmanager
def expect_violations() -> Iterator[list[str]]:
    """For the auditor's own test: what is recorded inside is handed over instead of failing."""
    start = len(_violations)
    seen: list[str] = []
    try:
        yield seen
    finally:
        seen.extend(_violations[start:])
        del _violations[start:]


def pytest_configure(config: pytest.Config) -> None:
    socket.socket.connect = _connect  # type: ignore[method-assign]
    socket.socket.connect_ex = _connect_ex  # type: ignore[method-assign]


def pytest_unconfigure(config: pytest.Config) -> None:
    socket.socket.connect = _real_connect  # type: ignore[method-assign]
    socket.socket.connect_ex = _real_connect_ex  # type: ignore[method-assign]


@pytest.fixture(autouse=True)
def _no_unguarded_egress() -> Iterator[None]:
    start = len(_violations)
    yield
    made = _violations[start:]
    if made:
        del _violations[start:]
        pytest.fail(
            "egress audit (SSRF-05): outbound connections not made through integrations/http.py:\n"
            + "\n".join(made),
            pytrace=False,
        )


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _violations:  # made outside any test (session fixtures)
        print("\negress audit (SSRF-05): unguarded outbound connections:\n" + "\n".join(_violations))
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
