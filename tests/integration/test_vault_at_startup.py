"""`cosmogen serve` and `cosmogen worker` open the vault at start-up when the database holds sealed data
(credentials, OAuth flows, webhook signing secrets): a wrong or missing key stops start-up with a clear
message and writes nothing, not even the pending migration. An empty embedded store gets its key file
(mode 0600) at the first start.

Real processes through the real CLI; the store is filled beforehand through the library.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from cosmogen.domain.launches import LaunchConfig
from cosmogen.domain.schedule import WebhookSpec
from cosmogen.integrations import credentials as creds
from cosmogen.integrations import keystore
from cosmogen.integrations.vault import Keyring, KeySource, Secret, new_key
from cosmogen.runtime import launches as launch_store
from cosmogen.store import Database, GroupCommitWriter, migrate, repos
from cosmogen.store.tables import metadata, vault_keys
from cosmogen.testing.builders import document

from .conftest import ROOT, free_port

SEALED_TABLES = ("vault_keys", "credentials", "webhook_secrets", "accounts", "triggers")


def _env(data_dir: Path, env_keys: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COSMOGEN_")}
    env["COSMOGEN_DATA_DIR"] = str(data_dir)
    if env_keys is not None:
        env["COSMOGEN_VAULT_KEYS"] = env_keys
    return env


def _fill(db: Database, data_dir: Path, env_keys: str | None = None) -> None:
    """An account with a secret and a launch with a signed webhook: sealed rows of two kinds."""
    source = KeySource.for_data_dir(data_dir, None if env_keys is None else Secret(env_keys))
    vault = keystore.open_vault(db, source)
    doc = document([{"id": "open", "type": "begin", "entity": "a:1", "properties": {"b": 1}}], name="hooked")
    with GroupCommitWriter(db) as writer:
        account_id = writer.submit(
            creds.create_account(workspace_id="default", provider="openai", name="ai", auth_kind="api_key")
        ).result()
        writer.submit(creds.put_secret(vault, account_id, "api_key", Secret("sk-startup-test"))).result()
        saved = writer.submit(
            lambda conn: repos.save_version(conn, workspace_id="default", name="hooked", document=doc)
        ).result()
        if migrate.current_revision(db) == migrate.revisions()[-1]:
            writer.submit(
                launch_store.create_launch(
                    saved.universe_id, saved.version_id, LaunchConfig(), [WebhookSpec()], vault=vault
                )
            ).result()


def _sqlite_fingerprint(data_dir: Path) -> object:
    db_file = data_dir / "cosmogen.db"
    wal = Path(f"{db_file}-wal")
    files = sorted(p.name for p in data_dir.iterdir() if p.name not in ("cosmogen.db-shm", "runtime.lock"))
    return hashlib.sha256(db_file.read_bytes()).hexdigest(), wal.stat().st_size if wal.exists() else 0, files


def _pg_fingerprint(url: str, data_dir: Path) -> object:
    db = Database.open(url=url)
    try:
        with db.engine.connect() as conn:
            rows: dict[str, object] = {
                t: sorted((tuple(r) for r in conn.execute(select(metadata.tables[t]))), key=repr)
                for t in SEALED_TABLES
            }
            rows["alembic_version"] = conn.execute(text("SELECT version_num FROM alembic_version")).all()
            rows["workers"] = conn.execute(text("SELECT count(*) FROM procrastinate_workers")).all()
    finally:
        db.close()
    return rows, sorted(p.name for p in data_dir.iterdir()) if data_dir.exists() else []


def _serve(data_dir: Path, env_keys: str | None = None, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "cosmogen", "serve", "--no-sandbox", "--port", str(free_port()), *extra],
        env=_env(data_dir, env_keys),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _refused(process: subprocess.Popen[str]) -> tuple[int, str]:
    output, _ = process.communicate(timeout=60)
    return process.returncode, output


@pytest.fixture
def filled_sqlite(tmp_path: Path) -> Path:
    data_dir = tmp_path / "data"
    db = Database.open(data_dir=data_dir)
    try:
        migrate.upgrade(db)
        _fill(db, data_dir)
    finally:
        db.close()  # the last connection checkpoints the WAL: the file alone is the state
    return data_dir


@pytest.mark.parametrize(
    ("break_it", "expected"),
    [
        (
            "delete",
            ["no vault keyring", "k1", "encrypted rows", "Restore the key file", "nothing was written"],
        ),
        ("wrong", ["wrong vault key", "'k1'", "check value differs", "nothing was written"]),
        ("open", ["can be read or written by other users", "0644", "chmod 600", "nothing was written"]),
    ],
)
def test_serve_with_a_wrong_or_missing_key_stops_and_writes_nothing(
    filled_sqlite: Path, break_it: str, expected: list[str]
) -> None:
    key_file = filled_sqlite / "vault.keys"
    if break_it == "delete":
        key_file.unlink()
    elif break_it == "wrong":
        key_file.unlink()
        KeySource.for_data_dir(filled_sqlite).create(Keyring("k1", {"k1": new_key()}))
    else:
        key_file.chmod(0o644)
    before = _sqlite_fingerprint(filled_sqlite)
    code, output = _refused(_serve(filled_sqlite))
    assert code == 2, output
    for phrase in expected:
        assert phrase in output, output
    assert "Traceback" not in output
    assert _sqlite_fingerprint(filled_sqlite) == before
    if break_it == "delete":
        assert not key_file.exists()  # no new key made behind the operator's back


def test_the_key_check_comes_before_the_migration(tmp_path: Path) -> None:
    """A store one revision behind, with sealed credentials, and the wrong key: serve refuses, and the
    store is still at its old revision, byte for byte."""
    data_dir = tmp_path / "data"
    db = Database.open(data_dir=data_dir)
    try:
        # Filled by today's code at head, then taken one revision back (that code writes today's schema).
        migrate.upgrade(db)
        _fill(db, data_dir)
        migrate.downgrade(db, migrate.revisions()[-2])
    finally:
        db.close()
    (data_dir / "vault.keys").unlink()
    KeySource.for_data_dir(data_dir).create(Keyring("k1", {"k1": new_key()}))
    before = _sqlite_fingerprint(data_dir)
    code, output = _refused(_serve(data_dir))
    assert code == 2 and "wrong vault key" in output, output
    assert _sqlite_fingerprint(data_dir) == before
    db = Database.open(data_dir=data_dir)
    try:
        assert migrate.current_revision(db) == migrate.revisions()[-2]
    finally:
        db.close()


def _wait_healthy(process: subprocess.Popen[str], port_args: list[str]) -> None:
    port = port_args[port_args.index("--port") + 1]
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2):
                return
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise AssertionError(process.communicate()[0]) from None
            time.sleep(0.1)


def _stop(process: subprocess.Popen[str]) -> str:
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=30)
    return output


def test_serve_with_the_right_key_starts_and_an_empty_store_gets_its_key_file(tmp_path: Path) -> None:
    data_dir = tmp_path / "fresh"
    args = ["--port", str(free_port())]
    process = subprocess.Popen(
        [sys.executable, "-m", "cosmogen", "serve", "--no-sandbox", *args],
        env=_env(data_dir),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        _wait_healthy(process, args)
        key_file = data_dir / "vault.keys"
        assert key_file.exists(), "the first start of an empty store creates the key file"
        assert key_file.stat().st_mode & 0o777 == 0o600
        db = Database.open(data_dir=data_dir)
        try:
            with db.engine.connect() as conn:
                assert conn.execute(select(func.count()).select_from(vault_keys)).scalar_one() == 1
        finally:
            db.close()
    finally:
        output = _stop(process)
    assert "Traceback" not in output
    # The next start finds the key it made and opens.
    args = ["--port", str(free_port())]
    again = subprocess.Popen(
        [sys.executable, "-m", "cosmogen", "serve", "--no-sandbox", *args],
        env=_env(data_dir),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        _wait_healthy(again, args)
    finally:
        _stop(again)


def _worker(url: str, data_dir: Path, env_keys: str | None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "cosmogen", "worker", "--database-url", url, "--concurrency", "2"],
        env=_env(data_dir, env_keys),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_a_worker_with_a_wrong_or_missing_key_stops_and_writes_nothing(
    clean_pg_url: str, tmp_path: Path
) -> None:
    keyring = Keyring("k1", {"k1": new_key()}).dumps()  # the processes share it through the environment
    db = Database.open(url=clean_pg_url)
    try:
        _fill(db, tmp_path / "unused", env_keys=keyring)
    finally:
        db.close()
    worker_dir = tmp_path / "worker"
    cases = [
        (None, ["no vault keyring", "k1", "COSMOGEN_VAULT_KEYS", "nothing was written"]),
        (Keyring("k1", {"k1": new_key()}).dumps(), ["wrong vault key", "COSMOGEN_VAULT_KEYS"]),
        (Keyring("e9", {"e9": new_key()}).dumps(), ["missing vault key", "k1"]),
    ]
    before = _pg_fingerprint(clean_pg_url, worker_dir)
    for env_keys, expected in cases:
        code, output = _refused(_worker(clean_pg_url, worker_dir, env_keys))
        assert code == 2, output
        for phrase in expected:
            assert phrase in output, output
        assert "Traceback" not in output
        assert _pg_fingerprint(clean_pg_url, worker_dir) == before
    # With the shared keyring it starts (and registers as a worker: the fingerprint would have seen it).
    process = _worker(clean_pg_url, worker_dir, keyring)
    try:
        assert process.stdout is not None
        deadline = time.monotonic() + 60
        for line in process.stdout:
            if "taking runs" in line or time.monotonic() > deadline:
                break
        assert process.poll() is None
        assert _pg_fingerprint(clean_pg_url, worker_dir) != before
    finally:
        _stop(process)
