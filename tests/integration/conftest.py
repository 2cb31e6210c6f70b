import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"

CLI = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def cosmogen(tmp_path: Path) -> CLI:
    """Run the real `cosmogen` entry point in a fresh process, as a user would, with its own data dir."""

    def invoke(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "COLUMNS": "120", "COSMOGEN_DATA_DIR": str(tmp_path / "cosmogen-data")}
        return subprocess.run(
            [sys.executable, "-m", "cosmogen", *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
            cwd=ROOT,
        )

    return invoke


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serving(tmp_path: Path, *args: str) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """`cosmogen serve` in a fresh process on the test's data dir, healthy before it is handed over,
    stopped with SIGTERM afterwards. Its output goes to tmp_path/serve.log (appended across restarts)."""
    port = free_port()
    env = {**os.environ, "COSMOGEN_DATA_DIR": str(tmp_path / "cosmogen-data")}
    log = tmp_path / "serve.log"
    with log.open("a") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "cosmogen", "serve", "--port", str(port), *args],
            env=env,
            cwd=ROOT,
            stdout=sink,
            stderr=subprocess.STDOUT,
            text=True,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=2) as response:  # noqa: S310 (our server)
                if response.status == 200:
                    break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                process.wait()
                raise AssertionError(f"serve did not start: {log.read_text()}") from None
            time.sleep(0.1)
    try:
        yield url, process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    with serving(tmp_path) as running:
        yield running
