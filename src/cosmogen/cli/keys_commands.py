"""`cosmogen keys status|rotate|retire`: the vault's key-encryption keys (docs/security.md).

`rotate` works online, next to a running `cosmogen serve` or workers: it adds a key to the key file,
registers it, then re-wraps every stored data key under it in small transactions. Reads keep working
throughout (both keys are in the keyring); kill it at any moment and run it again to resume. `retire`
then removes the old key, and refuses while any row still uses it.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, NoReturn

import click

from cosmogen.cli.loading import EXIT_FAILED, EXIT_INVALID
from cosmogen.integrations import keystore
from cosmogen.integrations.credentials import rewrap_all, rows_to_rewrap
from cosmogen.integrations.keystore import KeyInUse, NoKeyringYet, VaultStartupError
from cosmogen.integrations.vault import KeyringError, KeySource, Vault, VaultError
from cosmogen.settings import Settings, SettingsError
from cosmogen.store import Database, DatabaseError, GroupCommitWriter, migrate


def _store_options(fn: Any) -> Any:
    fn = click.option(
        "--database-url", default=None, help="PostgreSQL URL instead of the embedded SQLite database."
    )(fn)
    return click.option(
        "--data-dir",
        default=None,
        help="Data directory, with vault.keys (default: $COSMOGEN_DATA_DIR or ~/.local/share/cosmogen).",
    )(fn)


def _fail(message: str, code: int = EXIT_INVALID) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def _open(data_dir: str | None, database_url: str | None) -> tuple[Database, KeySource]:
    try:
        settings = Settings.from_env(os.environ, data_dir=data_dir, database_url=database_url)
    except SettingsError as exc:
        _fail(str(exc))
    try:
        db = settings.runtime().open_database()
    except DatabaseError as exc:
        _fail(str(exc))
    return db, KeySource.for_data_dir(settings.data_dir, settings.vault_keys)


def _read(db: Database) -> Any:
    def read(fn: Any) -> Any:
        with db.engine.connect() as conn:
            return fn(conn)

    return read


@click.group("keys")
def keys_group() -> None:
    """The vault's key-encryption keys: status, online rotation, retirement."""


@keys_group.command("status")
@_store_options
@click.option("--json", "as_json", is_flag=True, help="Print the status as one JSON object.")
def status_command(data_dir: str | None, database_url: str | None, as_json: bool) -> None:
    """Which keys exist, which one is current, how many rows each wraps. Writes nothing."""
    db, source = _open(data_dir, database_url)
    try:
        try:
            checked = keystore.check_keys(db, source, create=False)
        except VaultStartupError as exc:
            if isinstance(exc, NoKeyringYet):
                _emit_status({"source": source.describe(), "keys": [], "current": None}, as_json)
                return
            _fail(str(exc))
        keyring = checked.keyring
        assert keyring is not None
        live = [r for r in checked.records if r.live]
        current = live[-1].key_id if live else None
        keys = [
            {
                "key_id": r.key_id,
                "version": r.version,
                "state": "retired" if not r.live else ("current" if r.key_id == current else "old"),
                "rows": checked.usage.get(r.key_id, 0),
                "in_keyring": r.key_id in keyring.keys,
                "created_at": r.created_at.isoformat(),
                "retired_at": r.retired_at.isoformat() if r.retired_at else None,
            }
            for r in checked.records
        ]
        registered = {r.key_id for r in checked.records}
        keys += [
            {"key_id": k, "version": None, "state": "unregistered", "rows": 0, "in_keyring": True}
            for k in sorted(keyring.keys)
            if k not in registered
        ]
        pending = sum(checked.usage.get(r.key_id, 0) for r in live if r.key_id != current)
        _emit_status(
            {"source": source.describe(), "current": current, "rows_to_rewrap": pending, "keys": keys},
            as_json,
        )
    finally:
        db.close()


def _emit_status(status: dict[str, Any], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(status, indent=2))
        return
    click.echo(f"keyring: {status['source']}")
    if not status["keys"]:
        click.echo("no keys yet: the first start of the runtime (or `cosmogen keys rotate`) creates one")
        return
    click.echo(f"current key: {status['current']}")
    for key in status["keys"]:
        where = "" if key["in_keyring"] else "  (NOT in the keyring)"
        click.echo(f"  {key['key_id']:<12} {key['state']:<13} {key['rows']:>8} rows{where}")
    if status["rows_to_rewrap"]:
        click.echo(
            f"{status['rows_to_rewrap']} rows still use an older key: run `cosmogen keys rotate` to finish"
        )


def _open_vault(db: Database, source: KeySource, *, create: bool) -> tuple[keystore.CheckedKeys, Vault]:
    """The start-up sequence of every process: check (reads only), migrate, then open (may write)."""
    try:
        checked = keystore.check_keys(db, source, create=create)
        migrate.upgrade(db)
        return checked, checked.open(db)
    except (VaultStartupError, KeyringError) as exc:
        _fail(str(exc))


def _rewrap(db: Database, vault: Vault, target: str, older: tuple[str, ...], batch_size: int) -> int:
    read = _read(db)
    left = read(lambda conn: rows_to_rewrap(conn, older))
    click.echo(f"current key: {target}; {left} rows to re-wrap from {', '.join(older) or 'no older key'}")
    with GroupCommitWriter(db) as writer:
        done = rewrap_all(
            writer,
            read,
            vault,
            target,
            older,
            batch_size=batch_size,
            on_batch=lambda n, remaining: click.echo(f"re-wrapped {n} rows, {remaining} left"),
        )
    click.echo(f"done: every row uses {target} ({done} re-wrapped now)")
    return done


_batch_option = click.option(
    "--batch-size",
    default=100,
    show_default=True,
    type=click.IntRange(1, 10_000),
    help="Rows re-wrapped per transaction.",
)


@keys_group.command("rotate")
@_store_options
@_batch_option
def rotate_command(data_dir: str | None, database_url: str | None, batch_size: int) -> None:
    """Add a new key and re-wrap every stored data key under it (online; a re-run resumes).

    A new key is added only once the previous rotation's old key is retired; until then a re-run
    finishes that rotation (and does nothing once every row uses the new key).
    """
    db, source = _open(data_dir, database_url)
    try:
        checked, vault = _open_vault(db, source, create=True)
        if checked.plan.create_keyring:
            click.echo(f"created vault key {vault.current_key_id} in {source.describe()}; nothing to rotate")
            return
        try:
            target, older = keystore.begin_rotation(db, vault, source)
            _rewrap(db, vault, target.key_id, older, batch_size)
        except VaultError as exc:
            _fail(str(exc))
        for key_id in older:
            click.echo(f"retire {key_id} once no process needs it: cosmogen keys retire {key_id}")
    finally:
        db.close()


@keys_group.command("rewrap")
@_store_options
@_batch_option
def rewrap_command(data_dir: str | None, database_url: str | None, batch_size: int) -> None:
    """Re-wrap rows still under an older key into the current key; never adds a key (idempotent)."""
    db, source = _open(data_dir, database_url)
    try:
        _checked, vault = _open_vault(db, source, create=False)
        with db.engine.connect() as conn:
            records = keystore.read_key_records(conn)
            current = keystore.current_key(conn)
        assert current is not None  # the vault opened, so a key is registered
        older = tuple(r.key_id for r in records if r.live and r.version < current.version)
        try:
            _rewrap(db, vault, current.key_id, older, batch_size)
        except VaultError as exc:
            _fail(str(exc))
    finally:
        db.close()


@keys_group.command("retire")
@click.argument("key_id")
@_store_options
def retire_command(key_id: str, data_dir: str | None, database_url: str | None) -> None:
    """Retire KEY_ID: refused while any row still uses it; then removed from the key file."""
    db, source = _open(data_dir, database_url)
    try:
        _open_vault(db, source, create=False)
        try:
            retired_now = keystore.retire(db, source, key_id)
        except KeyInUse as exc:
            _fail(f"{key_id} not retired: {exc}", EXIT_FAILED)
        except VaultError as exc:
            _fail(str(exc))
        click.echo(f"retired {key_id}" if retired_now else f"{key_id} was already retired")
        if source.from_env:
            click.echo(f"now remove {key_id} from COSMOGEN_VAULT_KEYS on every process")
    finally:
        db.close()
