"""PBT-02: random sequences of vault operations against the real store (SQLite, a real key file),
checked against a model: create accounts, put and replace secrets, delete them, start a key rotation,
re-wrap part of the rows, retire old keys, leave a rotation half-done the way a kill would (a new key in
the file, not registered), and crash (drop every in-memory object and reopen from disk).

Invariants: every live credential decrypts to its model value, with the vault in use and with a second
vault opened earlier by "another process"; no other credential exists; a key is retired only when no row
uses it, and never the current one."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, precondition, rule
from sqlalchemy import Connection, select

from cosmogen.integrations import credentials as creds
from cosmogen.integrations import keystore
from cosmogen.integrations.keystore import KeyInUse
from cosmogen.integrations.vault import KeySource, Secret, Vault, new_key
from cosmogen.store import Database, GroupCommitWriter, migrate
from cosmogen.store.tables import accounts, credentials

FIELDS = ("api_key", "access_token", "refresh_token", "client_secret", "password")
values = st.text(max_size=40)


class VaultModel(RuleBasedStateMachine):
    accounts = Bundle("accounts")

    def __init__(self) -> None:
        super().__init__()
        self._tmp = tempfile.TemporaryDirectory()
        self.data_dir = Path(self._tmp.name)
        self.source = KeySource.for_data_dir(self.data_dir)
        self.model: dict[tuple[str, str], str] = {}
        self.workspaces: dict[str, str] = {}
        self._open()
        self.other = keystore.open_vault(self.db, self.source, create=False)  # "another process"
        self.count = 0

    def _open(self) -> None:
        self.db = Database.open(data_dir=self.data_dir)
        checked = keystore.check_keys(self.db, self.source)
        migrate.upgrade(self.db)
        self.vault: Vault = checked.open(self.db)
        self.writer = GroupCommitWriter(self.db)

    def _close(self) -> None:
        self.writer.close()
        self.db.close()

    def teardown(self) -> None:
        self._close()
        self._tmp.cleanup()

    def _read(self, fn: Callable[[Connection], int]) -> int:
        with self.db.engine.connect() as conn:
            return fn(conn)

    def _older(self) -> tuple[str, tuple[str, ...]]:
        with self.db.engine.connect() as conn:
            records = keystore.read_key_records(conn)
        live = [r for r in records if r.live]
        return live[-1].key_id, tuple(r.key_id for r in live[:-1])

    @rule(target=accounts, workspace=st.sampled_from(["w1", "w2"]))
    def create_account(self, workspace: str) -> str:
        self.count += 1
        account_id = self.writer.submit(
            creds.create_account(
                workspace_id=workspace, provider="openai", name=f"a{self.count}", auth_kind="api_key"
            )
        ).result()
        self.workspaces[account_id] = workspace
        return account_id

    @rule(account_id=accounts, field=st.sampled_from(FIELDS), value=values)
    def put(self, account_id: str, field: str, value: str) -> None:
        self.writer.submit(creds.put_secret(self.vault, account_id, field, Secret(value))).result()
        self.model[(account_id, field)] = value

    @rule(account_id=accounts, field=st.sampled_from(FIELDS))
    def delete(self, account_id: str, field: str) -> None:
        existed = self.writer.submit(creds.delete_secret(account_id, field)).result()
        assert existed == ((account_id, field) in self.model)
        self.model.pop((account_id, field), None)

    @rule()
    def rotate(self) -> None:
        target, older = keystore.begin_rotation(self.db, self.vault, self.source)
        assert target.key_id == self.vault.current_key_id
        assert target.key_id not in older

    @rule(limit=st.integers(1, 5))
    def rewrap_some(self, limit: int) -> None:
        current, older = self._older()
        before = self._read(lambda conn: creds.rows_to_rewrap(conn, older))
        done = self.writer.submit(creds.rewrap_batch(self.vault, current, older, limit)).result()
        assert done == min(limit, before)

    @rule()
    def rewrap_all(self) -> None:
        current, older = self._older()
        creds.rewrap_all(self.writer, self._read, self.vault, current, older, batch_size=3)
        assert self._read(lambda conn: creds.rows_to_rewrap(conn, older)) == 0

    @rule()
    def retire_oldest(self) -> None:
        _current, older = self._older()
        if not older:
            return
        oldest = older[0]
        in_use = self._read(lambda conn: keystore.key_usage(conn).get(oldest, 0))
        try:
            keystore.retire(self.db, self.source, oldest)
        except KeyInUse:
            assert in_use > 0
        else:
            assert in_use == 0
            ring = self.source.load()
            assert ring is not None and oldest not in ring.keys

    @rule()
    def killed_after_writing_the_key_file(self) -> None:
        """What a `keys rotate` killed between the file rewrite and the registration leaves behind."""
        ring = self.source.load()
        assert ring is not None
        with self.db.engine.connect() as conn:
            records = keystore.read_key_records(conn)
        if ring.active not in {r.key_id for r in records}:
            return  # already in that state
        self.source.replace(ring.with_key(keystore.next_key_id(records, ring), new_key()))

    @rule()
    def crash(self) -> None:
        self._close()
        del self.vault
        self._open()

    @precondition(lambda self: self.model)
    @invariant()
    def every_credential_decrypts_to_its_model_value(self) -> None:
        query = select(credentials, accounts.c.workspace_id).join(accounts)
        with self.db.engine.connect() as conn:
            rows = conn.execute(query).all()
        assert {(r.account_id, r.field) for r in rows} == set(self.model)
        for row in rows:
            for vault in (self.vault, self.other):
                secret = vault.decrypt(
                    row.workspace_id, row.account_id, row.field, row.ciphertext, row.wrapped_key, row.key_id
                )
                assert secret.reveal() == self.model[(row.account_id, row.field)]

    @invariant()
    def the_current_key_is_live_and_in_the_key_file(self) -> None:
        with self.db.engine.connect() as conn:
            current = keystore.current_key(conn)
            usage = keystore.key_usage(conn)
            retired = {r.key_id for r in keystore.read_key_records(conn) if not r.live}
        ring = self.source.load()
        assert current is not None and ring is not None and current.key_id in ring.keys
        assert not retired & set(usage)


TestVaultModel = VaultModel.TestCase
TestVaultModel.settings = settings(max_examples=40, stateful_step_count=30, deadline=None)
