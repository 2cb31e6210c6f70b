"""`cosmogen backup` and `cosmogen restore` for the embedded SQLite database.

A backup is taken with SQLite's online backup API, so it is consistent even while `cosmogen serve`
writes. A restore needs the data directory to itself: it takes the same lock as the runtime, so it
refuses while any cosmogen process owns the directory. PostgreSQL deployments use pg_dump and
pg_restore (docs/operations.md).
"""

from __future__ import annotations

import os
import sqlite3
import sys
from pathlib import Path
from typing import NoReturn

import click

from cosmogen.cli.loading import EXIT_INVALID
from cosmogen.runtime.ownership import DataDirBusy, DataDirLock
from cosmogen.settings import Settings, SettingsError
from cosmogen.store import migrate
from cosmogen.store.database import Database

DB_NAME = "cosmogen.db"


def _data_dir(data_dir: str | None) -> Path:
    try:
        return Settings.from_env(os.environ, data_dir=data_dir).data_dir
    except SettingsError as exc:
        _fail(str(exc))


@click.command("backup")
@click.argument("destination", type=click.Path(dir_okay=False))
@click.option(
    "--data-dir",
    default=None,
    help="Data directory (default: $COSMOGEN_DATA_DIR or ~/.local/share/cosmogen).",
)
def backup_command(destination: str, data_dir: str | None) -> None:
    """Copy the embedded database to DESTINATION, consistently, even while cosmogen runs."""
    source = _data_dir(data_dir) / DB_NAME
    if not source.is_file():
        _fail(f"no database at {source}; pass --data-dir")
    target = Path(destination)
    if target.exists():
        _fail(f"{target} exists; choose a new file name (a backup never overwrites)")
    with sqlite3.connect(f"file:{source}?mode=ro", uri=True) as src, sqlite3.connect(target) as dst:
        src.backup(dst)
        ok = dst.execute("PRAGMA integrity_check").fetchone()
    if ok != ("ok",):
        target.unlink(missing_ok=True)
        _fail(f"the copy failed its integrity check ({ok}); nothing was kept")
    click.echo(f"backed up {source} to {target} ({target.stat().st_size:,} bytes)")


@click.command("restore")
@click.argument("backup", type=click.Path(exists=True, dir_okay=False))
@click.option("--data-dir", default=None, help="Data directory to restore into.")
@click.option(
    "--force", is_flag=True, help="Replace an existing database (it is kept as cosmogen.db.before-restore)."
)
def restore_command(backup: str, data_dir: str | None, force: bool) -> None:
    """Restore a backup into the data directory (no cosmogen process may be using it)."""
    directory = _data_dir(data_dir)
    lock = DataDirLock(directory)
    try:
        lock.acquire()
    except DataDirBusy as exc:
        _fail(f"{exc}; stop it before restoring")
    try:
        target = directory / DB_NAME
        try:
            with sqlite3.connect(f"file:{backup}?mode=ro", uri=True) as src:
                healthy = src.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        except sqlite3.DatabaseError:
            healthy = False
        if not healthy:
            _fail(f"{backup} is not a sound cosmogen backup (integrity check failed); nothing was changed")
        if target.exists():
            if not force:
                _fail(f"{target} exists; pass --force to replace it")
            for suffix in ("-wal", "-shm"):
                Path(f"{target}{suffix}").unlink(missing_ok=True)
            target.replace(directory / f"{DB_NAME}.before-restore")
        with sqlite3.connect(f"file:{backup}?mode=ro", uri=True) as src, sqlite3.connect(target) as dst:
            src.backup(dst)
        db = Database.open(data_dir=directory)
        try:
            migrate.upgrade(db)  # a backup from an older release is brought up to date
        finally:
            db.close()
    finally:
        lock.release()
    click.echo(f"restored {backup} into {directory}")


def _fail(message: str) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(EXIT_INVALID)
