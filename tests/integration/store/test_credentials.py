"""Accounts, encrypted credentials, key registration, rotation and retirement on both dialects."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select, update

from cosmogen.integrations import credentials as creds
from cosmogen.integrations import keystore
from cosmogen.integrations.keystore import KeyInUse, VaultStartupError
from cosmogen.integrations.vault import DecryptionFailed, Keyring, KeySource, Secret, Vault, new_key
from cosmogen.store import Database, GroupCommitWriter
from cosmogen.store.tables import accounts, credentials, oauth_flows, utcnow, vault_keys


def _account(writer: GroupCommitWriter, name: str = "openai main", workspace: str = "w1") -> str:
    return writer.submit(
        creds.create_account(workspace_id=workspace, provider="openai", name=name, auth_kind="api_key")
    ).result()


def _read(db: Database) -> object:
    def read(fn: object) -> object:
        with db.engine.connect() as conn:
            return fn(conn)  # type: ignore[operator]

    return read


@pytest.fixture
def source(tmp_path: Path) -> KeySource:
    return KeySource.for_data_dir(tmp_path / "keys")


@pytest.fixture
def vault(db: Database, source: KeySource) -> Vault:
    return keystore.open_vault(db, source)


def test_first_open_creates_the_key_file_and_registers_it(db: Database, source: KeySource) -> None:
    vault = keystore.open_vault(db, source)
    assert vault.current_key_id == "k1"
    assert source.file.stat().st_mode & 0o777 == 0o600
    with db.engine.connect() as conn:
        records = keystore.read_key_records(conn)
    assert [(r.key_id, r.version, r.live) for r in records] == [("k1", 1, True)]
    # Opening again reads the same file and finds its key registered.
    assert keystore.open_vault(db, source).current_key_id == "k1"


def test_accounts_minimal_helpers(db: Database, writer: GroupCommitWriter) -> None:
    account_id = _account(writer)
    with db.engine.connect() as conn:
        account = creds.get_account(conn, account_id)
    assert account is not None
    assert (account.status, account.tier, account.version, account.scopes) == ("pending", "sandbox", 0, [])
    writer.submit(creds.set_account_status(account_id, "error", last_error={"code": "401"})).result()
    with db.engine.connect() as conn:
        account = creds.get_account(conn, account_id)
        assert creds.get_account(conn, "nope") is None
    assert account is not None and account.status == "error" and account.last_error == {"code": "401"}
    with pytest.raises(creds.NotFound):
        writer.submit(creds.set_account_status("nope", "connected")).result()
    with pytest.raises(ValueError, match="status"):
        creds.set_account_status(account_id, "bogus")
    with pytest.raises(ValueError, match="auth_kind"):
        creds.create_account(workspace_id="w", provider="p", name="n", auth_kind="magic")


def test_put_reveal_replace_delete(db: Database, writer: GroupCommitWriter, vault: Vault) -> None:
    account_id = _account(writer)
    writer.submit(
        creds.put_secrets(vault, account_id, {"api_key": Secret("sk-one"), "client_secret": Secret("cs")})
    ).result()
    with db.engine.connect() as conn:
        assert creds.secret_fields(conn, account_id) == ["api_key", "client_secret"]
        revealed = creds.reveal_credentials(conn, vault, account_id)
        row = conn.execute(select(credentials).where(credentials.c.field == "api_key")).one()
    assert {k: v.reveal() for k, v in revealed.items()} == {"api_key": "sk-one", "client_secret": "cs"}
    assert b"sk-one" not in bytes(row.ciphertext) and row.key_id == "k1"
    writer.submit(creds.put_secret(vault, account_id, "api_key", Secret("sk-two"))).result()
    assert writer.submit(creds.delete_secret(account_id, "client_secret")).result() is True
    assert writer.submit(creds.delete_secret(account_id, "client_secret")).result() is False
    with db.engine.connect() as conn:
        revealed = creds.reveal_credentials(conn, vault, account_id, ["api_key"])
        account = creds.get_account(conn, account_id)
    assert revealed["api_key"].reveal() == "sk-two"
    assert account is not None and account.version == 3  # put, replace, delete: each bumps it
    with pytest.raises(creds.NotFound):
        writer.submit(creds.put_secret(vault, "no-such-account", "api_key", Secret("x"))).result()
    with pytest.raises(ValueError, match="secret field"):
        creds.put_secret(vault, account_id, "Bad Field", Secret("x"))
    with pytest.raises(TypeError, match="pass a Secret"):
        creds.put_secrets(vault, account_id, {"api_key": "plain"})  # type: ignore[dict-item]


def test_a_ciphertext_moved_to_another_account_or_workspace_fails(
    db: Database, writer: GroupCommitWriter, vault: Vault
) -> None:
    first, second = _account(writer, "a"), _account(writer, "b", workspace="w2")
    writer.submit(creds.put_secret(vault, first, "api_key", Secret("sk-first"))).result()
    writer.submit(creds.put_secret(vault, second, "api_key", Secret("sk-second"))).result()
    with db.engine.begin() as conn:
        stolen = conn.execute(select(credentials).where(credentials.c.account_id == first)).one()
        conn.execute(
            update(credentials)
            .where(credentials.c.account_id == second)
            .values(ciphertext=stolen.ciphertext, wrapped_key=stolen.wrapped_key)
        )
    with db.engine.connect() as conn, pytest.raises(DecryptionFailed):
        creds.reveal_credentials(conn, vault, second)
    # Moving the first account itself to another workspace breaks it too.
    with db.engine.begin() as conn:
        conn.execute(update(accounts).where(accounts.c.id == first).values(workspace_id="w2"))
    with db.engine.connect() as conn, pytest.raises(DecryptionFailed):
        creds.reveal_credentials(conn, vault, first)


def test_rotation_rewraps_credentials_and_oauth_flows_and_retire_is_enforced(
    db: Database, writer: GroupCommitWriter, vault: Vault, source: KeySource
) -> None:
    ids = [_account(writer, f"acct {i}") for i in range(5)]
    for i, account_id in enumerate(ids):
        writer.submit(creds.put_secret(vault, account_id, "api_key", Secret(f"sk-{i}"))).result()
    sealed = vault.encrypt("w1", ids[0], creds.oauth_verifier_field("h1"), Secret("verifier"))
    with db.engine.begin() as conn:
        conn.execute(
            oauth_flows.insert().values(
                state_hash="h1",
                account_id=ids[0],
                issuer="https://as",
                redirect_uri="https://app/cb",
                verifier_ciphertext=sealed.ciphertext,
                verifier_wrapped_key=sealed.wrapped_key,
                key_id=sealed.key_id,
                expires_at=utcnow(),
            )
        )
        before = {(r.account_id, r.field): bytes(r.ciphertext) for r in conn.execute(select(credentials))}
    stale = keystore.open_vault(db, source)  # another process, opened before the rotation
    target, older = keystore.begin_rotation(db, vault, source)
    assert (target.key_id, older) == ("k2", ("k1",))
    # Half-way: retiring k1 is refused, and both keys decrypt.
    assert writer.submit(creds.rewrap_batch(vault, "k2", older, 3)).result() == 3
    with pytest.raises(KeyInUse, match="3 encrypted rows"):
        keystore.retire(db, source, "k1")
    with pytest.raises(KeyInUse, match="current key"):
        keystore.retire(db, source, "k2")
    for account_id in ids:
        with db.engine.connect() as conn:
            assert creds.reveal_credentials(conn, stale, account_id)["api_key"].reveal().startswith("sk-")
    # A write by the stale process after the new key was registered uses the new key.
    writer.submit(creds.put_secret(stale, ids[4], "password", Secret("pw"))).result()
    assert stale.current_key_id == "k2"
    done = creds.rewrap_all(writer, _read(db), vault, "k2", older, batch_size=2)  # type: ignore[arg-type]
    assert done == 3
    with db.engine.connect() as conn:
        assert keystore.key_usage(conn) == {"k2": 7}
        after = {(r.account_id, r.field): bytes(r.ciphertext) for r in conn.execute(select(credentials))}
        flow = conn.execute(select(oauth_flows)).one()
        for i, account_id in enumerate(ids):
            assert creds.reveal_credentials(conn, stale, account_id)["api_key"].reveal() == f"sk-{i}"
    assert all(after[key] == ciphertext for key, ciphertext in before.items())  # only the wrapping changed
    verifier = vault.decrypt(
        "w1",
        ids[0],
        creds.oauth_verifier_field("h1"),
        flow.verifier_ciphertext,
        flow.verifier_wrapped_key,
        "k2",
    )
    assert verifier.reveal() == "verifier"
    # Retire: recorded in the database, dropped from the key file; a second call is a no-op.
    assert keystore.retire(db, source, "k1") is True
    assert keystore.retire(db, source, "k1") is False
    ring = source.load()
    assert ring is not None and set(ring.keys) == {"k2"}
    with db.engine.connect() as conn:
        states = {r.key_id: r.live for r in keystore.read_key_records(conn)}
    assert states == {"k1": False, "k2": True}
    # The vault opened afresh still reads everything, and the next rotation makes k3.
    fresh = keystore.open_vault(db, source)
    assert keystore.begin_rotation(db, fresh, source)[0].key_id == "k3"


def test_start_up_checks_write_nothing(db: Database, writer: GroupCommitWriter, source: KeySource) -> None:
    vault = keystore.open_vault(db, source)
    writer.submit(creds.put_secret(vault, _account(writer), "api_key", Secret("sk"))).result()
    good = source.load()
    assert good is not None

    def snapshot() -> list[object]:
        with db.engine.connect() as conn:
            return [*conn.execute(select(vault_keys)).all(), *conn.execute(select(credentials)).all()]

    before = snapshot()
    source.file.unlink()
    with pytest.raises(VaultStartupError, match="no vault keyring"):
        keystore.open_vault(db, source)
    assert not source.file.exists()  # no new key was made behind the operator's back
    source.create(Keyring("k1", {"k1": new_key()}))
    with pytest.raises(VaultStartupError, match="wrong vault key"):
        keystore.open_vault(db, source)
    source.replace(good)
    source.file.chmod(0o644)
    with pytest.raises(VaultStartupError, match="chmod 600"):
        keystore.open_vault(db, source)
    assert snapshot() == before


def test_an_environment_keyring_registers_its_new_active_key(db: Database, tmp_path: Path) -> None:
    first = Keyring("e1", {"e1": new_key()})
    vault = keystore.open_vault(db, KeySource.for_data_dir(tmp_path, Secret(first.dumps())))
    assert vault.current_key_id == "e1"
    assert not (tmp_path / "vault.keys").exists()
    env = KeySource.for_data_dir(tmp_path, Secret(first.dumps()))
    with pytest.raises(Exception, match="add a new key"):
        keystore.begin_rotation(db, vault, env)
    second = KeySource.for_data_dir(tmp_path, Secret(first.with_key("e2", new_key()).dumps()))
    vault2 = keystore.open_vault(db, second)
    assert vault2.current_key_id == "e1"  # an unregistered key waits for `keys rotate`
    target, older = keystore.begin_rotation(db, vault2, second)
    assert (target.key_id, older) == ("e2", ("e1",))
