"""The database side of the vault's keys: the start-up check, registration, rotation and retirement.

The keys themselves never reach the database; `vault_keys` holds, per key id, a version (the order of
keys), a check value (vault.key_check_value) and when it was retired. The rules, as pure functions:

- `assess_startup`: before anything is written, every key of the keyring that the database registered
  must match its check value, every key that rows use must be in the keyring, and so must the current
  key (the newest one not retired). A new keyring is made only for a database that has none.
- `plan_rotation`: start a new rotation only when the previous one was finished and its old key retired;
  otherwise resume it, so `cosmogen keys rotate` can be killed and re-run at any moment.

Composition roots call `check_keys` (reads only; raises VaultStartupError), migrate, then
`CheckedKeys.open` (creates the key file and registers the first key if the plan says so).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TypeVar

from sqlalchemy import Connection, func, inspect, select, text, update

from cosmogen.integrations.vault import (
    KEY_ENV,
    Keyring,
    KeyringError,
    KeySource,
    Vault,
    VaultError,
    key_check_value,
    new_key,
)
from cosmogen.store.database import SQLITE_BEGIN, Database
from cosmogen.store.tables import (
    channel_secrets,
    credentials,
    oauth_flows,
    utcnow,
    vault_keys,
    webhook_secrets,
)
from cosmogen.store.writer import WriteFn

T = TypeVar("T")

# Arbitrary constant: the PostgreSQL advisory lock that serialises key registration and retirement.
_PG_KEYS_LOCK = 0x636F_736D_6B65_7973 & 0x7FFF_FFFF_FFFF_FFFF  # "cosmkeys"


class VaultStartupError(VaultError):
    """The keyring does not fit the database; nothing was written. The message says what and how to fix."""


class NoKeyringYet(VaultStartupError):
    """A database with no keys and no keyring, opened without permission to create one."""


class KeyInUse(VaultError):
    """A key cannot be retired while rows still use it (or while it is the current key)."""


@dataclass(frozen=True)
class KeyRecord:
    key_id: str
    version: int
    check_value: bytes = field(repr=False)
    created_at: datetime
    retired_at: datetime | None

    @property
    def live(self) -> bool:
        return self.retired_at is None


# --- reads (tolerant of a schema not yet migrated: start-up checks run before migrations) ----------


def read_key_records(conn: Connection) -> list[KeyRecord]:
    if not inspect(conn).has_table("vault_keys"):
        return []
    rows = conn.execute(select(vault_keys).order_by(vault_keys.c.version)).all()
    return [KeyRecord(r.key_id, r.version, bytes(r.check_value), r.created_at, r.retired_at) for r in rows]


def key_usage(conn: Connection) -> dict[str, int]:
    """Rows per key id over every table holding wrapped keys (credentials, OAuth flows, webhook
    signing secrets, notification channels' secrets)."""
    usage: dict[str, int] = {}
    names = set(inspect(conn).get_table_names())
    for table in (credentials, oauth_flows, webhook_secrets, channel_secrets):
        if table.name not in names:
            continue
        query = select(table.c.key_id, func.count()).group_by(table.c.key_id)
        for key_id, count in conn.execute(query):
            usage[key_id] = usage.get(key_id, 0) + int(count)
    return usage


def current_key(conn: Connection, *, lock: bool = False) -> KeyRecord | None:
    """The key that wraps new data keys: the newest one not retired.

    With `lock` (inside a write) the row is held FOR SHARE on PostgreSQL until commit, so `retire_key`
    (FOR UPDATE) cannot retire it between our read and our insert. SQLite's write lock does the same.
    """
    query = (
        select(vault_keys)
        .where(vault_keys.c.retired_at.is_(None))
        .order_by(vault_keys.c.version.desc())
        .limit(1)
    )
    if lock and conn.dialect.name == "postgresql":
        query = query.with_for_update(read=True)
    row = conn.execute(query).one_or_none()
    if row is None:
        return None
    return KeyRecord(row.key_id, row.version, bytes(row.check_value), row.created_at, row.retired_at)


# --- pure decisions ------------------------------------------------------------------------------


@dataclass(frozen=True)
class StartupPlan:
    create_keyring: bool  # write a new key file with a fresh key
    register: str | None  # key id to register (a database with no keys yet)
    current: str | None  # the key that wraps new data keys; None while create_keyring


def assess_startup(
    keyring: Keyring | None,
    records: Sequence[KeyRecord],
    usage: Mapping[str, int],
    *,
    where: str,
    create: bool,
) -> StartupPlan:
    live = [r for r in records if r.live]
    used = sorted(k for k, n in usage.items() if n > 0)
    if keyring is None:
        if live or used:
            known = sorted({*(r.key_id for r in live), *used})
            rows = sum(usage.values())
            raise VaultStartupError(
                f"no vault keyring: {where} does not exist and {KEY_ENV} is not set, but the database "
                f"already knows key(s) {', '.join(known)} ({rows} encrypted rows). Restore the key file from "
                f"your backup of it (mode 0600) or set {KEY_ENV}. A new key would leave every stored "
                "credential unreadable, so nothing was written"
            )
        if not create:
            raise NoKeyringYet(
                f"no vault keyring yet ({where} does not exist, {KEY_ENV} is not set); the first "
                "`cosmogen keys rotate` or start of the runtime creates one"
            )
        return StartupPlan(create_keyring=True, register=None, current=None)
    by_id = {r.key_id: r for r in records}
    for key_id, key in sorted(keyring.keys.items()):
        record = by_id.get(key_id)
        if record is not None and record.live and key_check_value(key_id, key) != record.check_value:
            raise VaultStartupError(
                f"wrong vault key: key {key_id!r} in {where} is not the key this database registered as "
                f"{key_id!r} (its check value differs), so it would not decrypt the stored credentials. "
                f"Use the key file or {KEY_ENV} that belongs to this database; nothing was written"
            )
    missing = [k for k in used if k not in keyring.keys]
    if missing:
        raise VaultStartupError(
            f"missing vault key: stored credentials use key(s) {', '.join(missing)}, which {where} does not "
            f"contain. Add them back from the key file's backup (or to {KEY_ENV}); nothing was written"
        )
    if not live:
        return StartupPlan(create_keyring=False, register=keyring.active, current=keyring.active)
    current = live[-1]
    if current.key_id not in keyring.keys:
        raise VaultStartupError(
            f"missing vault key: the database's current key {current.key_id!r} (added by `cosmogen keys "
            f"rotate`) is not in {where}. Give this process the same keyring as the others; "
            "nothing was written"
        )
    return StartupPlan(create_keyring=False, register=None, current=current.key_id)


@dataclass(frozen=True)
class RotationPlan:
    new_key: bool  # generate a key, add it to the key file as active, register it
    register: str | None  # the keyring's active key, not registered yet: register it
    target: str | None  # the key rows are re-wrapped into (None while new_key: the generated id)


def plan_rotation(keyring: Keyring, records: Sequence[KeyRecord], *, from_env: bool) -> RotationPlan:
    live = [r for r in records if r.live]
    if not live:
        raise VaultError("the database has no vault key yet; open the vault once (it registers one)")
    current = live[-1]
    by_id = {r.key_id: r for r in records}
    active = by_id.get(keyring.active)
    if active is None:
        # A new key already in the keyring: put there by an operator (environment), or by a rotation
        # killed between rewriting the key file and registering the key.
        return RotationPlan(new_key=False, register=keyring.active, target=keyring.active)
    if not active.live:
        raise KeyringError(
            f"the keyring's active key {keyring.active!r} was retired; make another key active"
        )
    if len(live) > 1:
        return RotationPlan(new_key=False, register=None, target=current.key_id)  # resume
    if from_env:
        raise KeyringError(
            f"every row already uses {current.key_id!r}, the newest key of {KEY_ENV}. To rotate, add a new "
            "key (32 random bytes, base64) to the variable, make it active, restart the processes with it, "
            "then run `cosmogen keys rotate` again"
        )
    return RotationPlan(new_key=True, register=None, target=None)


def next_key_id(records: Iterable[KeyRecord], keyring: Keyring) -> str:
    number = max((r.version for r in records), default=0) + 1
    candidate = f"k{number}"
    while candidate in keyring.keys:  # a key id is never given other key material
        number += 1
        candidate = f"k{number}"
    return candidate


# --- writes --------------------------------------------------------------------------------------


def _lock_keys(conn: Connection) -> None:
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_KEYS_LOCK})


def register_key(key_id: str, check_value: bytes) -> WriteFn[KeyRecord]:
    """Register `key_id` as the newest key (idempotent for the same key; refuses other key material)."""

    def write(conn: Connection) -> KeyRecord:
        _lock_keys(conn)
        existing = conn.execute(select(vault_keys).where(vault_keys.c.key_id == key_id)).one_or_none()
        if existing is not None:
            if bytes(existing.check_value) != check_value:
                raise VaultStartupError(
                    f"key {key_id!r} is registered with other key material (check value differs); "
                    "another process holds a different keyring"
                )
            return KeyRecord(key_id, existing.version, check_value, existing.created_at, existing.retired_at)
        version = int(conn.execute(select(func.coalesce(func.max(vault_keys.c.version), 0))).scalar_one()) + 1
        now = utcnow()
        conn.execute(
            vault_keys.insert().values(
                key_id=key_id, version=version, check_value=check_value, created_at=now
            )
        )
        return KeyRecord(key_id, version, check_value, now, None)

    return write


def retire_key(key_id: str) -> WriteFn[bool]:
    """Mark `key_id` retired. Refuses the current key and any key a row still uses; True if it was
    retired now, False if it already was."""

    def write(conn: Connection) -> bool:
        _lock_keys(conn)
        query = select(vault_keys).where(vault_keys.c.key_id == key_id)
        if conn.dialect.name == "postgresql":
            # Waits for writers holding it FOR SHARE (current_key), then sees the rows they committed.
            query = query.with_for_update()
        row = conn.execute(query).one_or_none()
        if row is None:
            raise VaultError(f"no key {key_id!r} is registered in this database (see `cosmogen keys status`)")
        if row.retired_at is not None:
            return False
        current = current_key(conn)
        if current is not None and current.key_id == key_id:
            raise KeyInUse(f"{key_id!r} is the current key; run `cosmogen keys rotate` first")
        in_use = key_usage(conn).get(key_id, 0)
        if in_use:
            raise KeyInUse(
                f"{in_use} encrypted rows still use {key_id!r}; "
                "finish `cosmogen keys rotate` (re-run it) first"
            )
        conn.execute(update(vault_keys).where(vault_keys.c.key_id == key_id).values(retired_at=utcnow()))
        return True

    return write


def run_write(db: Database, fn: WriteFn[T]) -> T:
    """One write function in a transaction of its own that takes the write lock up front (no writer)."""
    with db.engine.connect() as conn:
        if db.dialect == "sqlite":
            conn = conn.execution_options(**{SQLITE_BEGIN: "IMMEDIATE"})
        with conn.begin():
            return fn(conn)


# --- opening the vault ---------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckedKeys:
    """The result of the read-only start-up check; `open` does the writes the plan needs."""

    source: KeySource
    keyring: Keyring | None
    plan: StartupPlan
    records: tuple[KeyRecord, ...]
    usage: Mapping[str, int]

    def open(self, db: Database) -> Vault:
        """Create the key file and register the first key if needed (schema at head), then the Vault."""
        keyring = self.keyring
        if self.plan.create_keyring:
            keyring = Keyring("k1", {"k1": new_key()})
            self.source.create(keyring)
        assert keyring is not None
        register = self.plan.register or ("k1" if self.plan.create_keyring else None)
        if register is not None:
            run_write(db, register_key(register, key_check_value(register, keyring.keys[register])))
        with db.engine.connect() as conn:
            records = read_key_records(conn)
            current = current_key(conn)
        if current is None:  # pragma: no cover - registered just above
            raise VaultError("no vault key is registered")
        retired = frozenset(r.key_id for r in records if not r.live)
        vault = Vault(keyring, current_key_id=current.key_id, source=self.source, retired=retired)
        for record in records:
            if record.live and record.key_id in keyring.keys:
                vault.verify(record.key_id, record.check_value)
        return vault


def check_keys(db: Database, source: KeySource, *, create: bool = True) -> CheckedKeys:
    """Read the keyring and the database's keys and decide; raises VaultStartupError (or KeyringError)
    before anything is written."""
    try:
        keyring = source.load()
    except KeyringError as exc:
        raise VaultStartupError(f"{exc}; nothing was written") from None
    with db.engine.connect() as conn:
        records = read_key_records(conn)
        usage = key_usage(conn)
    plan = assess_startup(keyring, records, usage, where=source.describe(), create=create)
    return CheckedKeys(source, keyring, plan, tuple(records), usage)


def open_vault(db: Database, source: KeySource, *, create: bool = True) -> Vault:
    """check_keys then open, for a database already at head."""
    return check_keys(db, source, create=create).open(db)


def begin_rotation(db: Database, vault: Vault, source: KeySource) -> tuple[KeyRecord, tuple[str, ...]]:
    """Make sure a newer key is registered (adding one to the key file if the last rotation is finished)
    and current in `vault`; returns it and the older live keys whose rows must be re-wrapped."""
    keyring = source.load()
    if keyring is None:
        raise VaultStartupError(f"the keyring at {source.describe()} disappeared")
    with db.engine.connect() as conn:
        records = read_key_records(conn)
    plan = plan_rotation(keyring, records, from_env=source.from_env)
    register = plan.register
    if plan.new_key:
        # Key file first, registration second: any process that sees the new key in the database can
        # then find it in the file. A kill in between leaves an unregistered active key, which the next
        # run registers (plan.register) instead of making yet another one.
        key_id = next_key_id(records, keyring)
        keyring = keyring.with_key(key_id, new_key())
        source.replace(keyring)
        register = key_id
    if register is not None:
        run_write(db, register_key(register, key_check_value(register, keyring.keys[register])))
    with db.engine.connect() as conn:
        records = read_key_records(conn)
        target = current_key(conn)
    if target is None:  # pragma: no cover - registered above
        raise VaultError("no vault key is registered")
    vault.use(target.key_id, target.check_value)
    older = tuple(r.key_id for r in records if r.live and r.version < target.version)
    return target, older


def retire(db: Database, source: KeySource, key_id: str) -> bool:
    """Retire `key_id` in the database (refused while rows use it), then drop it from the key file.

    Database first: the check that no row uses the key happens under the lock before any key material
    is destroyed. A kill in between leaves a retired key in the file, which a re-run removes. Keys from
    COSMOGEN_VAULT_KEYS stay where they are: the operator removes them. True if retired now.
    """
    retired_now = bool(run_write(db, retire_key(key_id)))
    if not source.from_env:
        keyring = source.load()
        if keyring is not None and key_id in keyring.keys:
            source.replace(keyring.without(key_id))
    return retired_now
