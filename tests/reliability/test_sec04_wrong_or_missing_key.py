"""SEC-04: a process given no key, a wrong key, or a key file others can read stops at start-up within
5 s, says what is wrong and how to fix it, and writes nothing (the key-check values are compared before
the schema is even migrated).

Every `cosmogen keys` command opens the vault the way the runtime will; `rotate` is the one that would
write the most if it got through."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from cosmogen.integrations import credentials as creds
from cosmogen.integrations import keystore
from cosmogen.integrations.vault import Keyring, KeySource, Secret, new_key
from cosmogen.store import Database, GroupCommitWriter, migrate
from cosmogen.store.tables import credentials, vault_keys

ROOT = Path(__file__).resolve().parents[2]
COMMANDS = [["keys", "status"], ["keys", "rotate"], ["keys", "retire", "k1"]]  # rewrap opens like retire


def _populate(db: Database, data_dir: Path) -> None:
    vault = keystore.open_vault(db, KeySource.for_data_dir(data_dir))
    with GroupCommitWriter(db) as writer:
        for i in range(3):
            account_id = writer.submit(
                creds.create_account(workspace_id="w", provider="openai", name=f"a{i}", auth_kind="api_key")
            ).result()
            writer.submit(creds.put_secret(vault, account_id, "api_key", Secret(f"sk-{i}"))).result()


def _run(
    args: list[str], data_dir: Path, url: str | None, env_keys: str | None = None
) -> tuple[int, str, float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COSMOGEN_")}
    env["COSMOGEN_DATA_DIR"] = str(data_dir)
    if env_keys is not None:
        env["COSMOGEN_VAULT_KEYS"] = env_keys
    extra = ["--database-url", url] if url else []
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "cosmogen", *args, *extra],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
        cwd=ROOT,
    )
    return done.returncode, done.stdout + done.stderr, time.monotonic() - started


class Store:
    """The database under test and a fingerprint of everything a start-up could have written."""

    def __init__(self, data_dir: Path, url: str | None) -> None:
        self.data_dir, self.url = data_dir, url

    def fingerprint(self) -> object:
        if self.url is None:
            db_file = self.data_dir / "cosmogen.db"
            wal = Path(f"{db_file}-wal")
            return (
                hashlib.sha256(db_file.read_bytes()).hexdigest(),
                wal.stat().st_size if wal.exists() else 0,
                sorted(p.name for p in self.data_dir.iterdir() if p.name != "cosmogen.db-shm"),
            )
        db = Database.open(url=self.url)
        try:
            with db.engine.connect() as conn:
                rows = [*conn.execute(select(vault_keys)).all(), *conn.execute(select(credentials)).all()]
        finally:
            db.close()
        return rows, sorted(p.name for p in self.data_dir.iterdir())


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    data_dir = tmp_path / "data"
    if request.param == "sqlite":
        db = Database.open(data_dir=data_dir)
        url = None
    else:
        url = request.getfixturevalue("clean_pg_url")
        db = Database.open(url=url)
    migrate.upgrade(db)
    try:
        _populate(db, data_dir)
    finally:
        db.close()  # SQLite: the last connection checkpoints the WAL, so the file alone is the state
    return Store(data_dir, url)


def _assert_refused(store: Store, expected: list[str], env_keys: str | None = None) -> None:
    before = store.fingerprint()
    for args in COMMANDS:
        # A refusal that hangs (serving, retrying) fails on _run's timeout; how fast a refusal is belongs
        # to a benchmark, not to a test that must stay green on a loaded machine.
        code, output, _ = _run(args, store.data_dir, store.url, env_keys)
        assert code != 0, (args, output)
        for phrase in expected:
            assert phrase in output, (args, output)
        assert "Traceback" not in output
        assert store.fingerprint() == before, args


def test_no_key(store: Store) -> None:
    (store.data_dir / "vault.keys").unlink()
    _assert_refused(
        store, ["no vault keyring", "k1", "3 encrypted rows", "Restore the key file", "nothing was written"]
    )
    assert not (store.data_dir / "vault.keys").exists()  # no new key made behind the operator's back


def test_wrong_key(store: Store) -> None:
    (store.data_dir / "vault.keys").unlink()
    KeySource.for_data_dir(store.data_dir).create(Keyring("k1", {"k1": new_key()}))
    _assert_refused(store, ["wrong vault key", "'k1'", "check value differs", "nothing was written"])


def test_wrong_key_in_the_environment(store: Store) -> None:
    wrong = Keyring("k1", {"k1": new_key()}).dumps()
    _assert_refused(store, ["wrong vault key", "COSMOGEN_VAULT_KEYS"], env_keys=wrong)


def test_a_key_missing_from_the_environment(store: Store) -> None:
    unrelated = Keyring("e9", {"e9": new_key()}).dumps()
    _assert_refused(store, ["missing vault key", "k1", "COSMOGEN_VAULT_KEYS"], env_keys=unrelated)


def test_key_file_readable_by_others(store: Store) -> None:
    key_file = store.data_dir / "vault.keys"
    key_file.chmod(0o644)
    _assert_refused(store, ["can be read or written by other users", "0644", f"chmod 600 {key_file}"])
    assert key_file.stat().st_mode & 0o777 == 0o644  # refused, not silently changed


def test_the_right_key_opens_and_the_fingerprint_sees_writes(store: Store) -> None:
    before = store.fingerprint()
    code, output, _ = _run(["keys", "status"], store.data_dir, store.url)
    assert code == 0, output
    assert "current key: k1" in output and "3 rows" in output
    assert store.fingerprint() == before  # status only reads
    code, output, _ = _run(["keys", "rotate"], store.data_dir, store.url)
    assert code == 0, output
    assert store.fingerprint() != before  # so an unchanged fingerprint above means nothing was written
