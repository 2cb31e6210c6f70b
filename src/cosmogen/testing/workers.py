"""`cosmogen worker` processes for scale-out tests: start, wait until ready, kill or stop them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

READY = "taking runs"


class WorkerFailed(RuntimeError):
    """The worker process exited before it was ready; the message carries its log."""


class WorkerProcess:
    def __init__(
        self,
        database_url: str,
        log_path: Path,
        *,
        concurrency: int = 16,
        env: Mapping[str, str] | None = None,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.database_url = database_url
        self.log_path = log_path
        self.concurrency = concurrency
        self.env = {**os.environ, **(env or {})}
        self.extra_args = extra_args
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None, "not started"
        return self.process.pid

    def start(self, ready_timeout_s: float = 60.0) -> WorkerProcess:
        command = [
            sys.executable,
            "-m",
            "cosmogen",
            "worker",
            "--database-url",
            self.database_url,
            "--concurrency",
            str(self.concurrency),
            *self.extra_args,
        ]
        with self.log_path.open("ab") as sink:
            self.process = subprocess.Popen(command, env=self.env, stdout=sink, stderr=subprocess.STDOUT)  # noqa: S603
        deadline = time.monotonic() + ready_timeout_s
        while READY not in self.log():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise WorkerFailed(f"worker did not start:\n{self.log()}")
            time.sleep(0.05)
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        """SIGKILL: no drain, no unregistering; the others notice the missing heartbeats."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)

    def stop(self, timeout_s: float = 60.0) -> int:
        """SIGTERM and wait: runs park at their next node; returns the exit code."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.kill()
        return int(self.process.returncode)

    def __enter__(self) -> WorkerProcess:
        return self.start() if self.process is None else self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.process is not None and self.process.poll() is None:
            self.stop()
