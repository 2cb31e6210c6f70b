import os
import subprocess
import sys
from collections.abc import Callable
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
