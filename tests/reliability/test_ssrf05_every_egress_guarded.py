"""SSRF-05: every egress goes through the guard.

Two checks:
- a lint over src/ (the syntax tree, so comments and docstrings do not count): no HTTP client library
  (requests, httpx, urllib3, urllib.request, http.client), no aiohttp ClientSession/TCPConnector/request,
  no raw socket connections (socket.socket, socket.create_connection, asyncio.open_connection,
  loop.create_connection/sock_connect) outside integrations/http.py, except the explicit list below;
- at run time, tests/egress_audit.py (loaded for the whole suite from tests/conftest.py) fails any test
  that opens a TCP connection neither made by the guarded client nor to a loopback test server. The tests
  here check that the audit sees what it should.
"""

from __future__ import annotations

import ast
import asyncio
import socket
from pathlib import Path

import aiohttp
import pytest
from tests.egress_audit import expect_violations

from cosmogen.domain.bindings import RenderedRequest
from cosmogen.integrations.egress import EgressPolicy
from cosmogen.integrations.http import HttpCallError, HttpClient
from cosmogen.integrations.retry import RetryPolicy

SRC = Path(__file__).resolve().parents[2] / "src" / "cosmogen"

FORBIDDEN_MODULES = ("requests", "httpx", "urllib3", "urllib.request", "http.client", "pycurl")
FORBIDDEN_NAMES = (
    "aiohttp.ClientSession",
    "aiohttp.TCPConnector",
    "aiohttp.request",
    "socket.socket",
    "socket.create_connection",
    "asyncio.open_connection",
)
MODULE_PREFIXES = tuple(f"{m}." for m in FORBIDDEN_MODULES)
FORBIDDEN_METHODS = ("create_connection", "open_connection", "sock_connect", "urlopen")

# (file under src/cosmogen, finding) -> why it may connect without the guard
EXCEPTIONS = {
    ("integrations/http.py", "aiohttp.ClientSession"): "the guarded client itself",
    ("integrations/http.py", "aiohttp.TCPConnector"): "the guarded client's connector (GuardedResolver)",
    ("testing/simulator/admin.py", "import urllib.request"): (
        "AdminClient drives the provider simulator's admin API, which it refuses to call off loopback"
    ),
    ("testing/simulator/admin.py", "urllib.request.Request"): "same AdminClient",
    ("testing/simulator/admin.py", "urllib.request.urlopen"): "same AdminClient",
    ("testing/simulator/admin.py", ".urlopen()"): "same AdminClient",
    ("bench/throughput.py", "aiohttp.ClientSession"): (
        "the benchmark's raw-aiohttp baseline against the server it started on 127.0.0.1"
    ),
    ("bench/dashboard.py", "aiohttp.ClientSession"): (
        "W4's WebSocket client of the app the benchmark itself serves on 127.0.0.1"
    ),
    ("bench/dashboard.py", "socket.socket"): "W4 binds a socket only to pick a free local port (no connect)",
}


def dotted(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        inner = dotted(node.value)
        return f"{inner}.{node.attr}" if inner else None
    return None


def findings(source: str) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith(FORBIDDEN_MODULES):
                    found.add(f"import {alias.name}")
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = {f"{node.module}.{alias.name}" for alias in node.names}
            for name in {node.module, *names}:
                if name.startswith(FORBIDDEN_MODULES) or name in FORBIDDEN_NAMES:
                    found.add(f"from {name}")
        elif isinstance(node, ast.Attribute):
            name = dotted(node)
            if name and (name in FORBIDDEN_NAMES or name.startswith(MODULE_PREFIXES)):
                found.add(name)
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in FORBIDDEN_METHODS
        ):
            found.add(f".{node.func.attr}()")
    return found


def test_no_unguarded_http_or_socket_client_in_src() -> None:
    hits = {
        (str(path.relative_to(SRC)), finding)
        for path in SRC.rglob("*.py")
        for finding in findings(path.read_text(encoding="utf-8"))
    }
    assert hits - EXCEPTIONS.keys() == set()
    assert EXCEPTIONS.keys() - hits == set(), "an exception no longer matches anything: remove it"


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import requests\nrequests.get('http://x')", {"import requests", "requests.get"}),
        ("import httpx\nhttpx.Client()", {"import httpx", "httpx.Client"}),
        ("from urllib.request import urlopen\nurlopen('http://x')", {"from urllib.request"}),
        ("import aiohttp\naiohttp.ClientSession()", {"aiohttp.ClientSession"}),
        ("from aiohttp import ClientSession", {"from aiohttp.ClientSession"}),
        ("import socket\nsocket.create_connection(('h', 1))", {"socket.create_connection"}),
        ("import http.client as h", {"import http.client"}),
        ("async def f(loop):\n    await loop.create_connection(p, 'h', 1)", {".create_connection()"}),
        ("x = 'requests.get aiohttp.ClientSession('  # httpx.Client(", set()),
    ],
)
def test_the_lint_sees_each_way_of_connecting(source: str, expected: set[str]) -> None:
    assert findings(source) >= expected and (expected or not findings(source))


def test_the_audit_records_an_unguarded_connection_and_not_a_guarded_one() -> None:
    """192.0.2.1 (TEST-NET, never answers) stands for an outside address; the connects are
    non-blocking or time out fast, and nothing is sent."""

    async def guarded() -> None:
        client = HttpClient(EgressPolicy.from_strings("192.0.2.0/24"), retry=RetryPolicy(max_retries=0))
        await client.start()
        try:
            with pytest.raises(HttpCallError):
                await client.send(RenderedRequest("GET", "http://192.0.2.1:9/", {}, None, 0.3))
        finally:
            await client.close()

    async def unguarded() -> None:
        async with aiohttp.ClientSession() as session:
            with pytest.raises((aiohttp.ClientError, TimeoutError)):
                await session.get("http://192.0.2.1:9/", timeout=aiohttp.ClientTimeout(total=0.3))

    with expect_violations() as seen:
        asyncio.run(guarded())
    assert seen == []
    with expect_violations() as seen:
        asyncio.run(unguarded())
        raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        raw.setblocking(False)
        raw.connect_ex(("192.0.2.1", 9))
        raw.close()
    assert len(seen) == 2 and all("unguarded connection to 192.0.2.1:9" in v for v in seen)


def test_the_audit_lets_loopback_test_servers_through() -> None:
    server = socket.create_server(("127.0.0.1", 0))
    try:
        with expect_violations() as seen:
            socket.create_connection(server.getsockname(), timeout=2).close()
        assert seen == []
    finally:
        server.close()


def test_a_test_that_connects_unguarded_fails_the_run(tmp_path: Path) -> None:
    """The audit end to end: pytest, with the plugin as tests/conftest.py loads it, on a test that opens a
    connection to an outside address without the guard."""
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[2]
    (tmp_path / "test_leak.py").write_text(
        "import socket\n"
        "def test_leaks():\n"
        "    s = socket.socket()\n"
        "    s.setblocking(False)\n"
        "    s.connect_ex(('192.0.2.1', 9))\n"
        "    s.close()\n"
        "def test_stays_home():\n"
        "    pass\n"
    )
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "tests.egress_audit", "-p", "no:cacheprovider",
         "--rootdir", str(tmp_path), str(tmp_path / "test_leak.py")],
        cwd=repo, capture_output=True, text=True, timeout=120, check=False,
        env={**__import__("os").environ, "PYTHONPATH": str(repo)},
    )  # fmt: skip
    assert run.returncode == 1, run.stdout + run.stderr
    assert "2 passed, 1 error" in run.stdout, run.stdout  # the audit fails it at teardown
    assert "ERROR" in run.stdout and "test_leak.py::test_leaks" in run.stdout
    assert "unguarded connection to 192.0.2.1:9" in run.stdout
