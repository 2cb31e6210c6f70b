"""Killing a process at a random moment of its work, for crash tests and the crash benchmark."""

from __future__ import annotations

import random
import signal
import subprocess
import threading
from collections.abc import Callable, Sequence


def run_and_kill(
    command: Sequence[str],
    on_line: Callable[[str], None],
    *,
    kill_after: int | None,
    rng: random.Random,
    marker: str = "ACK ",
    jitter_s: float = 0.05,
) -> tuple[bool, bool]:
    """Run `command`, passing each stdout line to `on_line`; with `kill_after`, SIGKILL it a random
    moment (up to `jitter_s`) after its `kill_after`-th `marker` line, or at once if it exits its loop
    earlier. Stops reading at a line `DONE`. Returns (finished cleanly, was killed)."""
    process = subprocess.Popen(list(command), stdout=subprocess.PIPE, text=True)  # noqa: S603 (our own processes)
    assert process.stdout is not None
    seen = 0
    timer: threading.Timer | None = None
    try:
        for line in process.stdout:
            on_line(line)
            if line.startswith(marker):
                seen += 1
                if kill_after is not None and seen == kill_after and timer is None:
                    timer = threading.Timer(rng.uniform(0.0, jitter_s), process.send_signal, [signal.SIGKILL])
                    timer.start()
            elif line.startswith("DONE"):
                break
        if kill_after is not None and timer is None:
            process.send_signal(signal.SIGKILL)
        process.wait(timeout=300)
    finally:
        if timer is not None:
            timer.cancel()
        process.stdout.close()
        if process.poll() is None:
            process.kill()
            process.wait()
    killed = process.returncode == -signal.SIGKILL
    return (not killed and process.returncode == 0), killed
