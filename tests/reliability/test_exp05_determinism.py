"""EXP-05: every corpus expression (escapes, bombs, unit-test samples, fuzz corpus) evaluated in two
fresh interpreters, with different hash seeds, gives identical JSON-serialised outcomes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

FUZZ_DIR = Path(__file__).resolve().parents[1] / "fuzz"
REPO = Path(__file__).resolve().parents[2]

SCRIPT = r"""
import importlib.util, json, sys
from pathlib import Path
fuzz_dir = Path(sys.argv[1])
spec = importlib.util.spec_from_file_location("expr_fuzz", fuzz_dir / "expr_fuzz.py")
harness = importlib.util.module_from_spec(spec)
sys.modules["expr_fuzz"] = harness
spec.loader.exec_module(harness)
outcomes = []
for i, state in enumerate(harness.STATES):
    for src in harness.ESCAPES + harness.BOMBS + harness.SAMPLES:
        outcomes.append([src, i, harness.run_one(0, state, src)])
    for src in harness.TEMPLATES:
        outcomes.append([src, i, harness.run_one(1, state, src)])
for path in sorted((fuzz_dir / "corpus" / "expr").iterdir()):
    mode, state, src = harness.decode(path.read_bytes())
    outcomes.append([path.name, mode, harness.run_one(mode, state, src)])
json.dump(outcomes, sys.stdout, sort_keys=True, allow_nan=True)
"""


def run_fresh(hash_seed: str) -> list[list[object]]:
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(FUZZ_DIR)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=REPO,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


@pytest.mark.slow
def test_outcomes_identical_in_fresh_processes() -> None:
    first = run_fresh("1")
    second = run_fresh("2")
    assert len(first) >= 1000
    assert len(first) == len(second)
    different = [(a, b) for a, b in zip(first, second, strict=True) if a != b]
    assert different == []
    kinds = {("error" if "error" in o[2] else "value") for o in first}  # type: ignore[operator]
    assert kinds == {"error", "value"}
