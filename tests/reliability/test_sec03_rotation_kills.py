"""SEC-03: online key rotation survives SIGKILL at random moments.

N credentials are stored under k1. `cosmogen keys rotate --batch-size 1` runs in a fresh process and is
SIGKILLed several times (after a random number of re-wrapped rows, or at a random moment since it
started: during start-up, the key-file rewrite, registration or the re-wrap), then run to completion.
Throughout, a reader thread with a vault opened before the rotation decrypts every credential over and
over. Pass: no read ever fails or returns a wrong value; retiring k1 is refused while a row uses it;
at the end every row carries k2; re-running rotate (before retirement) and rewrap (after) change no
byte; k1 is gone from the key file after `keys retire k1`.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from sqlalchemy import select

from cosmogen.integrations import credentials as creds
from cosmogen.integrations import keystore
from cosmogen.integrations.vault import KeySource, Secret
from cosmogen.store import Database, GroupCommitWriter, migrate
from cosmogen.store.tables import accounts, credentials

ROOT = Path(__file__).resolve().parents[2]
N = int(os.environ.get("SEC03_CREDENTIALS", "200"))
KILLS = int(os.environ.get("SEC03_KILLS", "6"))
FIELDS = ("api_key", "access_token", "refresh_token", "client_secret")

pytestmark = pytest.mark.slow


class Target:
    def __init__(self, data_dir: Path, url: str | None) -> None:
        self.data_dir, self.url = data_dir, url

    def open(self) -> Database:
        return Database.open(url=self.url) if self.url else Database.open(data_dir=self.data_dir)

    def cosmogen(self, *args: str, **popen: object) -> subprocess.Popen[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("COSMOGEN_")}
        env |= {"COSMOGEN_DATA_DIR": str(self.data_dir), "PYTHONUNBUFFERED": "1"}
        extra = ["--database-url", self.url] if self.url else []
        return subprocess.Popen(  # type: ignore[call-overload,no-any-return]
            [sys.executable, "-m", "cosmogen", *args, *extra],
            env=env,
            cwd=ROOT,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            **popen,
        )

    def run(self, *args: str) -> tuple[int, str]:
        process = self.cosmogen(*args)
        output, _ = process.communicate(timeout=120)
        return process.returncode, output


@pytest.fixture(params=["sqlite", "postgresql"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Target:
    url = request.getfixturevalue("clean_pg_url") if request.param == "postgresql" else None
    return Target(tmp_path / "data", url)


def _store_credentials(target: Target) -> dict[tuple[str, str], str]:
    db = target.open()
    migrate.upgrade(db)
    vault = keystore.open_vault(db, KeySource.for_data_dir(target.data_dir))
    expected: dict[tuple[str, str], str] = {}
    try:
        with GroupCommitWriter(db) as writer:
            for i in range(N // len(FIELDS)):
                account_id = writer.submit(
                    creds.create_account(
                        workspace_id=f"w{i % 3}", provider="openai", name=f"acct {i}", auth_kind="api_key"
                    )
                ).result()
                values = {f: f"{f}-{i}-{random.randbytes(8).hex()}" for f in FIELDS}
                writer.submit(
                    creds.put_secrets(vault, account_id, {k: Secret(v) for k, v in values.items()})
                ).result()
                expected |= {(account_id, f): v for f, v in values.items()}
    finally:
        db.close()
    return expected


class Reader(threading.Thread):
    """Decrypts every credential in a loop with a vault opened before the rotation started."""

    def __init__(self, target: Target, expected: dict[tuple[str, str], str]) -> None:
        super().__init__(daemon=True)
        self.db = target.open()
        self.vault = keystore.open_vault(self.db, KeySource.for_data_dir(target.data_dir), create=False)
        self.expected = expected
        self.stop = threading.Event()
        self.passes = 0
        self.reads = 0
        self.failures: list[str] = []
        self.first_pass = threading.Event()

    def run(self) -> None:
        query = select(credentials, accounts.c.workspace_id).join(accounts)
        while not self.stop.is_set():
            try:
                with self.db.engine.connect() as conn:
                    rows = conn.execute(query).all()
                if len(rows) != len(self.expected):
                    self.failures.append(f"saw {len(rows)} rows, not {len(self.expected)}")
                for row in rows:
                    value = self.vault.decrypt(
                        row.workspace_id,
                        row.account_id,
                        row.field,
                        row.ciphertext,
                        row.wrapped_key,
                        row.key_id,
                    )
                    self.reads += 1
                    if value.reveal() != self.expected[(row.account_id, row.field)]:
                        self.failures.append(f"wrong value for {row.account_id}/{row.field}")
            except Exception as exc:
                self.failures.append(f"{type(exc).__name__}: {exc}")
            self.passes += 1
            self.first_pass.set()

    def close(self) -> None:
        self.stop.set()
        self.join(timeout=30)
        self.db.close()


def _rows(target: Target) -> dict[tuple[str, str], tuple[bytes, bytes, str]]:
    db = target.open()
    try:
        with db.engine.connect() as conn:
            return {
                (r.account_id, r.field): (bytes(r.ciphertext), bytes(r.wrapped_key), r.key_id)
                for r in conn.execute(select(credentials))
            }
    finally:
        db.close()


def test_rotation_killed_at_random_moments_never_breaks_a_read(target: Target) -> None:
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    expected = _store_credentials(target)
    original = _rows(target)
    reader = Reader(target, expected)
    reader.start()
    assert reader.first_pass.wait(30)
    progress: list[int] = []
    try:
        for kill in range(KILLS):
            process = target.cosmogen("keys", "rotate", "--batch-size", "1")
            assert process.stdout is not None
            if kill % 2 == 0:  # after a random number of re-wrapped rows
                wanted = rng.randint(1, max(1, N // (KILLS + 2)))
                seen = 0
                for line in process.stdout:
                    seen += line.startswith("re-wrapped")
                    if seen >= wanted:
                        break
            else:  # at a random moment since it started (start-up, key file, registration, re-wrap)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=rng.uniform(0.0, 1.5))
            process.send_signal(signal.SIGKILL)
            process.wait()
            process.stdout.close()
            rows = _rows(target)
            progress.append(sum(1 for *_, key_id in rows.values() if key_id == "k2"))
        print(f"SEC-03 seed={seed} k2 rows after each kill: {progress}")
        assert any(0 < moved < N for moved in progress), (seed, progress)  # some kill landed mid-re-wrap
        if min(progress) < N and progress[-1] < N:
            code, output = target.run("keys", "retire", "k1")
            assert code == 1 and "still use 'k1'" in output, output
        code, output = target.run("keys", "rotate", "--batch-size", "7")
        assert code == 0, output
        assert "done: every row uses k2" in output
        done = _rows(target)
        assert {key_id for *_, key_id in done.values()} == {"k2"}
        assert {k: v[0] for k, v in done.items()} == {
            k: v[0] for k, v in original.items()
        }  # ciphertexts kept
        # Re-running before retirement finishes the same rotation, which has nothing left: no byte changes.
        code, output = target.run("keys", "rotate")
        assert code == 0 and "0 rows to re-wrap" in output, output
        assert _rows(target) == done
    finally:
        reader.close()
    print(f"SEC-03 reader: {reader.passes} passes, {reader.reads} decryptions")
    assert reader.failures == [], (seed, reader.failures[:5])
    assert reader.passes > KILLS and reader.reads >= N * reader.passes - N
    key_file = target.data_dir / "vault.keys"
    assert key_file.stat().st_mode & 0o777 == 0o600
    code, output = target.run("keys", "retire", "k1")
    assert code == 0 and "retired k1" in output, output
    ring = KeySource.for_data_dir(target.data_dir).load()
    assert ring is not None and set(ring.keys) == {"k2"} and ring.active == "k2"
    code, output = target.run("keys", "rewrap")
    assert code == 0 and "0 rows to re-wrap" in output, output
    assert _rows(target) == done  # idempotent: the second re-wrap changes nothing
    # A process started now (k2 only) reads every credential.
    db = target.open()
    try:
        vault = keystore.open_vault(db, KeySource.for_data_dir(target.data_dir), create=False)
        with db.engine.connect() as conn:
            for account_id in {a for a, _ in expected}:
                values = creds.reveal_credentials(conn, vault, account_id)
                assert {f: v.reveal() for f, v in values.items()} == {
                    f: expected[(account_id, f)] for f in FIELDS
                }
    finally:
        db.close()
