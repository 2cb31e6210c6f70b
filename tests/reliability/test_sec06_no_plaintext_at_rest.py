"""SEC-06: no secret is ever at rest in the clear.

Canaries shaped like real secrets (OpenAI, Anthropic, Slack, X, OAuth tokens, a client secret, a
webhook secret, a password, a PKCE verifier) are stored, some replaced and deleted, and the keys rotated.
Then the raw bytes of the SQLite database, its -wal and -shm files (while the writer is still open, so the
WAL holds the recent pages) and a `cosmogen backup` of it are searched for every canary, the KEKs and the
data keys, in raw, hex, base64, base64url (at every alignment) and URL-encoded form: 0 hits. A control
value stored in a plain column is found, so the search does look where the data is."""

from __future__ import annotations

import base64
import os
import secrets
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote_from_bytes

from sqlalchemy import Connection, select

from cosmogen.integrations import credentials as creds
from cosmogen.integrations import keystore
from cosmogen.integrations.vault import KeySource, Secret
from cosmogen.store import Database, GroupCommitWriter, migrate
from cosmogen.store.tables import accounts, credentials, oauth_flows, utcnow
from cosmogen.testing.canaries import hits, mint

ROOT = Path(__file__).resolve().parents[2]


def test_the_search_finds_every_form() -> None:
    value = os.urandom(32)
    for shift in range(3):
        for blob in (
            value,
            value.hex().encode(),
            b"x" * shift + base64.b64encode(os.urandom(shift) + value),
            base64.urlsafe_b64encode(os.urandom(shift) + value),
            quote_from_bytes(value).encode(),
        ):
            assert hits(os.urandom(100) + blob + os.urandom(100), {"v": value}), (shift, blob)


def test_no_secret_at_rest_in_the_database_wal_or_backup(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    canaries = mint()
    control = f"control-{secrets.token_hex(16)}"
    db = Database.open(data_dir=data_dir)
    migrate.upgrade(db)
    source = KeySource.for_data_dir(data_dir)
    vault = keystore.open_vault(db, source)
    writer = GroupCommitWriter(db)
    try:
        ids = []
        for i, (name, value) in enumerate(canaries.items()):
            account_id = writer.submit(
                creds.create_account(
                    workspace_id="w", provider=name, name=f"{control} {i}", auth_kind="api_key"
                )
            ).result()
            ids.append(account_id)
            field = "password" if name == "password" else "api_key"
            writer.submit(creds.put_secret(vault, account_id, field, Secret(value))).result()
        by_name = dict(zip(canaries, ids, strict=True))
        writer.submit(
            creds.put_secret(vault, by_name["replaced"], "api_key", Secret(f"sk-new-{secrets.token_hex(16)}"))
        ).result()
        writer.submit(creds.delete_secret(by_name["deleted"], "api_key")).result()
        verifier_field = creds.oauth_verifier_field("state-hash")
        sealed = vault.encrypt("w", ids[0], verifier_field, Secret(canaries["pkce_verifier"]))
        writer.submit(
            lambda conn: conn.execute(
                oauth_flows.insert().values(
                    state_hash="state-hash",
                    account_id=ids[0],
                    issuer="https://as.example",
                    redirect_uri="https://app.example/cb",
                    verifier_ciphertext=sealed.ciphertext,
                    verifier_wrapped_key=sealed.wrapped_key,
                    key_id=sealed.key_id,
                    expires_at=utcnow(),
                )
            )
        ).result()
        target, older = keystore.begin_rotation(db, vault, source)
        with db.engine.connect() as conn:
            rows = conn.execute(select(credentials, accounts.c.workspace_id).join(accounts)).all()

        def read(fn: Callable[[Connection], int]) -> int:
            with db.engine.connect() as conn:
                return fn(conn)

        assert creds.rewrap_all(writer, read, vault, target.key_id, older, batch_size=3) == len(rows) + 1
        ring = source.load()
        assert ring is not None
        needles = {name: value.encode() for name, value in canaries.items()}
        needles |= {f"kek {key_id}": key for key_id, key in ring.keys.items()}
        for row in rows:  # the data keys, unwrapped the way the vault does it
            dek = vault._unwrap(row.workspace_id, row.account_id, row.field, row.wrapped_key, row.key_id)
            needles[f"dek {row.account_id}/{row.field}"] = dek
        files = {p.name: p.read_bytes() for p in data_dir.iterdir() if p.name.startswith("cosmogen.db")}
        assert {"cosmogen.db", "cosmogen.db-wal", "cosmogen.db-shm"} <= set(files)
        everything = b"".join(files.values())
        assert control.encode() in everything  # the search looks where the data is
        for name, blob in files.items():
            assert hits(blob, needles) == [], name
    finally:
        writer.close()
        db.close()
    backup = tmp_path / "backup.db"
    env = {**os.environ, "COSMOGEN_DATA_DIR": str(data_dir)}
    done = subprocess.run(
        [sys.executable, "-m", "cosmogen", "backup", str(backup)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    blob = backup.read_bytes()
    assert control.encode() in blob
    assert hits(blob, needles) == []
