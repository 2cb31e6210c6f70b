"""EXP-04: the atheris harness (tests/fuzz/expr_fuzz.py): (a) replay of the in-repo corpus through the
same TestOneInput, in-process; (b) a short, bounded coverage-guided run in a subprocess."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

FUZZ_DIR = Path(__file__).resolve().parents[1] / "fuzz"
CORPUS = FUZZ_DIR / "corpus" / "expr"
HARNESS_PATH = FUZZ_DIR / "expr_fuzz.py"


def load_harness() -> ModuleType:
    if "expr_fuzz" in sys.modules:
        return sys.modules["expr_fuzz"]
    spec = importlib.util.spec_from_file_location("expr_fuzz", HARNESS_PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["expr_fuzz"] = module
    spec.loader.exec_module(module)
    return module


HARNESS = load_harness()
CORPUS_FILES = sorted(CORPUS.iterdir())


def test_corpus_is_seeded_and_small() -> None:
    assert len(CORPUS_FILES) >= 300
    assert sum(p.stat().st_size for p in CORPUS_FILES) < 2 << 20
    assert any(p.name.startswith("fuzz-") for p in CORPUS_FILES), "no entries from a fuzzing run"


def test_corpus_replay_is_green() -> None:
    HARNESS.install_audit_hook()
    failures = []
    for path in CORPUS_FILES:
        try:
            HARNESS.TestOneInput(path.read_bytes())
        except Exception as exc:  # collect every failure, not just the first
            failures.append(f"{path.name}: {type(exc).__name__}: {exc}")
    assert failures == []


def test_seeds_are_in_the_corpus() -> None:
    names = {p.name for p in CORPUS_FILES}
    missing = [s for s in HARNESS.seed_inputs() if "seed-" + _digest(s) not in names]
    assert missing == []


def _digest(data: bytes) -> str:
    import hashlib

    return hashlib.sha1(data, usedforsecurity=False).hexdigest()[:16]


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_short_fuzz_run(tmp_path: Path) -> None:
    new_units = tmp_path / "new"
    new_units.mkdir()
    command = [
        sys.executable,
        str(HARNESS_PATH),
        "-runs=30000",
        "-max_total_time=45",
        "-max_len=512",
        "-timeout=5",
        "-rss_limit_mb=2048",
        f"-artifact_prefix={tmp_path}/",
        str(new_units),
        str(CORPUS),
    ]
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    proc = subprocess.run(command, capture_output=True, text=True, timeout=150, env=env, cwd=tmp_path)
    tail = (proc.stdout + proc.stderr)[-4000:]
    assert proc.returncode == 0, tail
    assert "Done" in tail, tail
    assert not list(tmp_path.glob("crash-*")), tail
