"""`cosmogen backup` and `cosmogen restore`: one archive holding a consistent dump and its manifest.

A backup runs beside `cosmogen serve` (SQLite's online backup API, or pg_dump's snapshot) and writes
one tar: `manifest.json` (versions, schema revision, time, SHA-256 and size of the dump, row counts)
and the dump. The vault's keys are never in it; `--export-key FILE` writes the keyring to a separate
0600 file, on request only. A restore checks the whole archive first, refuses a target that holds data
(SQLite: unless --force, which keeps the old database aside; PostgreSQL: always, restore into a new
database), restores, then migrates, so a backup from an older release comes up to date.
docs/operations.md, "Backup and restore".
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import NoReturn

import click

from cosmogen.cli.loading import EXIT_INVALID
from cosmogen.domain.backup import ManifestError, check_restorable, scheduled_name
from cosmogen.integrations import keystore
from cosmogen.integrations.keystore import NoKeyringYet
from cosmogen.integrations.vault import KEY_FILE_NAME, Keyring, KeySource, VaultError
from cosmogen.runtime.ownership import DataDirBusy, DataDirLock
from cosmogen.settings import Settings, SettingsError
from cosmogen.store import Database, DatabaseError, migrate
from cosmogen.store import backup as archive
from cosmogen.store.backup import BackupError
from cosmogen.store.database import DB_FILENAME
from cosmogen.store.tables import utcnow

_DATA_DIR_HELP = "Data directory (default: $COSMOGEN_DATA_DIR or ~/.local/share/cosmogen)."
_URL_HELP = "PostgreSQL URL instead of the embedded SQLite database (default: $COSMOGEN_DATABASE_URL)."


def _settings(data_dir: str | None, database_url: str | None) -> Settings:
    try:
        return Settings.from_env(os.environ, data_dir=data_dir, database_url=database_url)
    except SettingsError as exc:
        _fail(str(exc))


@click.command("backup")
@click.argument("destination", metavar="DEST", type=click.Path(path_type=Path))
@click.option("--data-dir", default=None, help=_DATA_DIR_HELP)
@click.option("--database-url", default=None, help=_URL_HELP)
@click.option(
    "--export-key",
    "export_key",
    default=None,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the vault keyring to this new file (mode 0600), apart from the archive, which "
    "never holds it. Needed to read the stored credentials after a restore on another machine.",
)
def backup_command(
    destination: Path, data_dir: str | None, database_url: str | None, export_key: Path | None
) -> None:
    """Write a backup archive to DEST: a new file (.tar; .tar.gz or .tgz to compress), or a directory
    to name one in.

    Consistent even while `cosmogen serve` writes. The archive holds the database dump and
    manifest.json; the vault key is never in it (see --export-key)."""
    settings = _settings(data_dir, database_url)
    now = utcnow()
    target = destination / scheduled_name(now) if destination.is_dir() else destination
    keyring = None
    if export_key is not None:
        keyring = _keyring_to_export(settings, export_key, target)
    try:
        manifest = archive.create(target, now, data_dir=settings.data_dir, database_url=settings.database_url)
    except (BackupError, DatabaseError) as exc:
        _fail(str(exc))
    except OSError as exc:  # the destination's disk or permissions
        _fail(f"cannot write {target}: {exc.strerror or exc}; no backup was kept")
    source = "PostgreSQL" if settings.database_url else str(settings.data_dir / DB_FILENAME)
    click.echo(
        f"backed up {source} to {target} ({target.stat().st_size:,} bytes; schema "
        f"{manifest.schema_revision}; {archive.counts_text(manifest.counts)})"
    )
    if keyring is not None and export_key is not None:
        _write_key(export_key, keyring)
        click.echo(f"exported the vault keyring to {export_key} (mode 0600): keep it apart from the backups")
    else:
        click.echo(
            "the vault key is not in the archive: keep a copy of it apart (`backup --export-key FILE`)",
            err=True,
        )


def _keyring_to_export(settings: Settings, export_key: Path, target: Path) -> Keyring:
    """Checked before the backup starts, so a bad --export-key costs nothing."""
    if export_key.exists():
        _fail(f"{export_key} exists; choose a new file for the key (it is never overwritten)")
    if export_key.resolve() == target.resolve():
        _fail("--export-key must name another file than the archive: the key never goes with the backup")
    if not export_key.parent.is_dir():
        _fail(f"directory {export_key.parent} does not exist; create it first")
    source = KeySource.for_data_dir(settings.data_dir, settings.vault_keys)
    try:
        keyring = source.load()
    except VaultError as exc:
        _fail(str(exc))
    if keyring is None:
        _fail(
            f"there is no vault keyring to export: {source.describe()} does not exist. Pass the --data-dir "
            "that holds vault.keys, or set COSMOGEN_VAULT_KEYS"
        )
    return keyring


def _write_key(path: Path, keyring: Keyring) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        _fail(f"{path} exists; the key was not exported (the backup was written)")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        os.fchmod(handle.fileno(), 0o600)  # whatever the umask said
        handle.write(keyring.dumps())
        handle.flush()
        os.fsync(handle.fileno())


@click.command("restore")
@click.argument("backup", metavar="ARCHIVE", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--data-dir", default=None, help=_DATA_DIR_HELP + " Restored into (SQLite).")
@click.option(
    "--database-url", default=None, help="Restore into this new, empty PostgreSQL database instead."
)
@click.option(
    "--key",
    "key_file",
    default=None,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The vault keyring written by `backup --export-key`: checked against the backup, then "
    "installed as the data directory's vault.keys (SQLite) or checked only (PostgreSQL).",
)
@click.option(
    "--force",
    is_flag=True,
    help="SQLite: replace an existing database (kept as cosmogen.db.before-restore, and a replaced "
    "vault.keys as vault.keys.before-restore).",
)
def restore_command(
    backup: Path, data_dir: str | None, database_url: str | None, key_file: Path | None, force: bool
) -> None:
    """Restore ARCHIVE (made by `cosmogen backup`), checked in full before anything is touched.

    SQLite: into the data directory, which no cosmogen process may be using and which must hold no
    database (or pass --force). PostgreSQL: into an empty database. Then the schema is upgraded to this
    release."""
    settings = _settings(data_dir, database_url)
    keyring = _read_key(key_file) if key_file is not None else None
    try:
        with archive.unpacked(backup) as unpacked:
            if settings.database_url is not None:
                if force:
                    _fail("--force is for the embedded database; PostgreSQL restores into an empty database")
                _restore_postgres(unpacked, settings, keyring, key_file)
            else:
                _restore_sqlite(unpacked, settings, keyring, key_file, force)
    except (BackupError, DatabaseError) as exc:
        _fail(str(exc))


def _read_key(key_file: Path) -> Keyring:
    try:
        keyring = KeySource(key_file).load()
    except VaultError as exc:
        _fail(f"{exc}; nothing was changed")
    if keyring is None:
        _fail(f"no key file at {key_file}; nothing was changed")
    return keyring


def _check(unpacked: archive.Unpacked, dialect: str) -> None:
    try:
        check_restorable(unpacked.manifest, dialect=dialect, known_revisions=migrate.revisions())
    except ManifestError as exc:
        _fail(f"{exc}; nothing was changed")


def _restore_sqlite(
    unpacked: archive.Unpacked,
    settings: Settings,
    keyring: Keyring | None,
    key_file: Path | None,
    force: bool,
) -> None:
    _check(unpacked, "sqlite")
    archive.check_sqlite(unpacked.dump)
    if keyring is not None and key_file is not None:
        _key_fits(Database.open(data_dir=unpacked.dump.parent), key_file, "the backup")
    directory = settings.data_dir
    lock = DataDirLock(directory)
    try:
        lock.acquire()
    except DataDirBusy as exc:
        _fail(f"{exc}; stop it before restoring")
    try:
        target = directory / DB_FILENAME
        key_target = directory / KEY_FILE_NAME
        if target.exists() and not force:
            _fail(f"{target} exists; pass --force to replace it (it is kept as {DB_FILENAME}.before-restore)")
        if keyring is not None and key_target.exists() and not force:
            _fail(
                f"{key_target} exists; pass --force to replace it "
                f"(it is kept as {KEY_FILE_NAME}.before-restore)"
            )
        if target.exists():
            for suffix in ("-wal", "-shm"):
                Path(f"{target}{suffix}").unlink(missing_ok=True)
            target.replace(directory / f"{DB_FILENAME}.before-restore")
        archive.restore_sqlite(unpacked.dump, target)
        if keyring is not None:
            if key_target.exists():
                key_target.replace(directory / f"{KEY_FILE_NAME}.before-restore")
            KeySource.for_data_dir(directory).create(keyring)
        db = Database.open(data_dir=directory)
        try:
            migrate.upgrade(db)  # a backup from an older release is brought up to date
            if keyring is None:
                _warn_without_key(db, KeySource.for_data_dir(directory, settings.vault_keys))
        finally:
            db.close()
    finally:
        lock.release()
    installed = f"; vault key installed as {directory / KEY_FILE_NAME}" if keyring is not None else ""
    counts = archive.counts_text(unpacked.manifest.counts)
    click.echo(f"restored {counts} into {directory}{installed}")


def _restore_postgres(
    unpacked: archive.Unpacked, settings: Settings, keyring: Keyring | None, key_file: Path | None
) -> None:
    _check(unpacked, "postgresql")
    assert settings.database_url is not None
    db = Database.open(url=settings.database_url)
    try:
        tables = archive.postgres_tables(db)
        if tables:
            _fail(
                f"the database {db.url} already holds {tables} tables; restore into a new, empty database "
                "(createdb NAME) and pass its URL. Nothing was changed"
            )
        archive.restore_postgres(unpacked.dump, settings.database_url)
        migrate.upgrade(db)  # a backup from an older release is brought up to date
        if keyring is not None and key_file is not None:
            try:
                keystore.check_keys(db, KeySource(key_file), create=False)
            except VaultError as exc:
                _fail(f"the database was restored, but the key does not fit it: {exc}")
            click.echo(
                f"the key in {key_file} fits: give it to every serve and worker as COSMOGEN_VAULT_KEYS"
            )
        else:
            _warn_without_key(db, KeySource.for_data_dir(settings.data_dir, settings.vault_keys))
        click.echo(f"restored {archive.counts_text(unpacked.manifest.counts)} into {db.url}")
    finally:
        db.close()


def _key_fits(db: Database, key_file: Path, what: str) -> None:
    """The keyring opens `what`'s encrypted rows (checked before anything is replaced)."""
    try:
        keystore.check_keys(db, KeySource(key_file), create=False)
    except VaultError as exc:
        _fail(f"the key in {key_file} does not fit {what}: {exc}")
    finally:
        db.close()


def _warn_without_key(db: Database, source: KeySource) -> None:
    """A restore without --key works, but say so when no keyring here opens the stored credentials."""
    try:
        keystore.check_keys(db, source, create=False)
    except NoKeyringYet:
        return  # nothing encrypted and no key yet: the first start makes one
    except VaultError as exc:
        click.echo(
            f"warning: the stored credentials cannot be read yet: {exc}. "
            "Restore again with --key FILE (from `cosmogen backup --export-key`)",
            err=True,
        )


def _fail(message: str) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(EXIT_INVALID)
