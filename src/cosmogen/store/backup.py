"""Backup archives: making one from a live database, and checking and restoring one.

`create` takes a consistent copy while `cosmogen serve` writes: SQLite's online backup API (a read
transaction; WAL lets the writer go on), or pg_dump in the snapshot of a REPEATABLE READ transaction
that also counts the rows, so manifest and dump describe the same moment. The archive is one plain tar
(domain/backup.py has its layout), written 0600 under a temporary name and linked into place, so a
reader never sees half of one and an existing file is never replaced.

`unpack` checks an archive before anything is restored from it: every tar header (its checksum), the
manifest (parsed, and byte for byte its canonical form, whose own checksum covers every field), every
member's size and SHA-256, and that every byte in between is the zero padding tar writes. One changed
byte anywhere makes it refuse.
"""

from __future__ import annotations

import contextlib
import glob
import gzip
import hashlib
import os
import re
import secrets
import shutil
import sqlite3
import subprocess
import tarfile
import tempfile
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, cast

from sqlalchemy import Connection, func, inspect, select, table, text
from sqlalchemy.engine import make_url

from cosmogen import __version__
from cosmogen.domain.backup import (
    COUNTED_TABLES,
    DUMP_NAMES,
    MANIFEST_NAME,
    FileEntry,
    Manifest,
    ManifestError,
    check_files,
)
from cosmogen.store.database import DB_FILENAME, Database

PG_LIB = Path("/usr/lib/postgresql")
# A destination named like this is gzip-compressed; anything else is a plain tar.
GZIP_SUFFIXES = (".gz", ".tgz")
# magic, deflate, no flags, mtime 0, no extra flags (level 6), OS "unknown": what _compressed writes.
_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
_CHUNK = 1 << 20
_MAX_MANIFEST = 1 << 20


class BackupError(RuntimeError):
    """A backup or restore that cannot go on; the message says what is wrong and how to fix it."""


# --- making a backup -----------------------------------------------------------------------------


def create(
    dest: Path, now: datetime, *, data_dir: Path | None = None, database_url: str | None = None
) -> Manifest:
    """Write the archive `dest` (which must not exist) from the SQLite database in `data_dir` or the
    PostgreSQL database at `database_url`; returns its manifest."""
    if dest.exists():
        raise BackupError(f"{dest} exists; choose a new file name (a backup never overwrites)")
    if not dest.parent.is_dir():
        raise BackupError(f"directory {dest.parent} does not exist; create it first")
    # Staged beside the destination: the same file system, so a large dump is not copied twice across.
    staging = Path(_mkdtemp(dest.parent, f".{dest.name}."))
    try:
        if database_url is not None:
            dump, revision, counts = _dump_postgres(database_url, staging)
            dialect = "postgresql"
        else:
            assert data_dir is not None
            dump, revision, counts = _copy_sqlite(data_dir / DB_FILENAME, staging)
            dialect = "sqlite"
        size, digest = _digest(dump)
        manifest = Manifest(
            cosmogen_version=__version__,
            dialect=dialect,
            schema_revision=revision,
            created_at=now,
            files=(FileEntry(dump.name, digest, size),),
            counts=counts,
        )
        _pack(dest, manifest, dump, staging)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return manifest


def _copy_sqlite(source: Path, staging: Path) -> tuple[Path, str, dict[str, int]]:
    if not source.is_file():
        raise BackupError(f"no database at {source}; pass --data-dir (or --database-url for PostgreSQL)")
    target = staging / DB_FILENAME
    # mode=ro: a backup never writes to the live database. The whole copy in one step holds one read
    # transaction, so the copy is one consistent moment; WAL lets `serve` keep committing meanwhile.
    try:
        with (
            contextlib.closing(sqlite3.connect(f"{source.resolve().as_uri()}?mode=ro", uri=True)) as src,
            contextlib.closing(sqlite3.connect(target)) as dst,
        ):
            src.backup(dst)
            ok = dst.execute("PRAGMA integrity_check").fetchone()
            if ok != ("ok",):
                raise BackupError(f"the copy of {source} failed its integrity check ({ok}); nothing was kept")
            dst.execute("PRAGMA journal_mode=DELETE")  # one self-contained file: no -wal beside it
            revision, counts = _describe_sqlite(dst)
    except sqlite3.Error as exc:
        raise BackupError(f"cannot copy {source}: {exc}; nothing was kept") from None
    return target, revision, counts


def _describe_sqlite(conn: sqlite3.Connection) -> tuple[str, dict[str, int]]:
    present = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if "alembic_version" not in present:
        raise BackupError("the database has never been migrated (no alembic_version); nothing to back up")
    revision = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    counts = {
        name: int(conn.execute(f'SELECT count(*) FROM "{name}"').fetchone()[0])  # noqa: S608 (fixed names)
        for name in COUNTED_TABLES
        if name in present
    }
    return str(revision[0]), counts


def _dump_postgres(database_url: str, staging: Path) -> tuple[Path, str, dict[str, int]]:
    pg_dump = find_tool("pg_dump")
    target = staging / DUMP_NAMES["postgresql"]
    db = Database.open(url=database_url)
    try:
        with db.engine.connect() as conn:
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                # The first statement fixes this transaction's snapshot; pg_dump dumps that same snapshot.
                snapshot = str(conn.execute(text("SELECT pg_export_snapshot()")).scalar_one())
                _run_tool(
                    [
                        pg_dump,
                        "--format=custom",
                        "--no-owner",
                        "--no-privileges",
                        f"--snapshot={snapshot}",
                        f"--file={target}",
                    ],
                    database_url,
                )
                revision, counts = _describe(conn)
    finally:
        db.close()
    return target, revision, counts


def _describe(conn: Connection) -> tuple[str, dict[str, int]]:
    present = set(inspect(conn).get_table_names())
    if "alembic_version" not in present:
        raise BackupError("the database has never been migrated (no alembic_version); nothing to back up")
    revision = conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one()
    counts = {
        name: int(conn.execute(select(func.count()).select_from(table(name))).scalar_one())
        for name in COUNTED_TABLES
        if name in present
    }
    return str(revision), counts


def _pack(dest: Path, manifest: Manifest, dump: Path, staging: Path) -> None:
    partial = staging / "archive.tar"
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # user data and sealed secrets
    compress = dest.name.endswith(GZIP_SUFFIXES)
    with os.fdopen(fd, "wb") as handle:
        with (
            _compressed(handle) if compress else contextlib.nullcontext(handle) as sink,
            tarfile.open(fileobj=sink, mode="w", format=tarfile.PAX_FORMAT) as tar,
        ):
            body = manifest.to_json().encode()
            tar.addfile(_member(MANIFEST_NAME, len(body), manifest.created_at), _Reader(body))
            with dump.open("rb") as data:
                tar.addfile(_member(dump.name, dump.stat().st_size, manifest.created_at), data)
        handle.flush()
        os.fsync(handle.fileno())
    try:
        os.link(partial, dest)  # unlike rename, fails if `dest` appeared meanwhile
    except FileExistsError:
        raise BackupError(f"{dest} exists; choose a new file name (a backup never overwrites)") from None
    _fsync_dir(dest.parent)


def _compressed(handle: IO[bytes]) -> gzip.GzipFile:
    # No file name and time 0: the header is then always _GZIP_HEADER, which `unpack` insists on.
    return gzip.GzipFile(filename="", mode="wb", fileobj=handle, compresslevel=6, mtime=0)


def _member(name: str, size: int, at: datetime) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = int(at.timestamp())
    info.mode = 0o600
    return info


class _Reader:
    """Bytes as the file object tarfile.addfile reads from."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._at = 0

    def read(self, size: int = -1) -> bytes:
        end = len(self._data) if size < 0 else self._at + size
        chunk = self._data[self._at : end]
        self._at += len(chunk)
        return chunk


# --- checking and unpacking ----------------------------------------------------------------------


def unpack(archive: Path, into: Path) -> Manifest:
    """Check `archive` in full and extract its dump into the directory `into`; raises BackupError saying
    what is wrong. Nothing outside `into` is written."""
    try:
        return _unpack(archive, into)
    except ManifestError as exc:
        raise BackupError(f"{archive} is not a sound cosmogen backup: {exc}; nothing was changed") from None
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise BackupError(
            f"{archive} is not a readable cosmogen backup archive ({exc}); nothing was changed"
        ) from None
    except OSError as exc:
        raise BackupError(f"cannot read {archive}: {exc.strerror or exc}; nothing was changed") from None


def _unpack(archive: Path, into: Path) -> Manifest:
    if not archive.is_file():
        raise BackupError(f"no backup at {archive}")
    manifest_text: bytes | None = None
    found: dict[str, tuple[int, str]] = {}
    covered: list[tuple[int, int]] = []
    # Stream mode ("r|"): members are read once, in order, which is all `create` writes need, and a
    # gzip stream is never asked to seek.
    with _opened(archive) as stream, tarfile.open(fileobj=stream, mode="r|") as tar:
        for member in tar:
            # A pax "size" record is how tar writes a member over 8 GiB; nothing else is ours.
            if set(member.pax_headers) - {"size"} or not member.isreg():
                raise ManifestError(f"member {member.name!r} is not a plain file as cosmogen writes them")
            if member.name in found or (member.name == MANIFEST_NAME and manifest_text is not None):
                raise ManifestError(f"{member.name} appears twice")
            covered.append((member.offset, member.offset_data + member.size))
            source = tar.extractfile(member)
            assert source is not None  # a regular file
            if member.name == MANIFEST_NAME:
                if member.size > _MAX_MANIFEST:
                    raise ManifestError(f"{MANIFEST_NAME} is {member.size:,} bytes; a manifest is small")
                manifest_text = source.read()
            elif member.name in DUMP_NAMES.values():
                found[member.name] = _extract(source, into / member.name)
            else:
                raise ManifestError(f"unexpected member {member.name!r}")
    if manifest_text is None:
        raise ManifestError(f"there is no {MANIFEST_NAME}")
    manifest = Manifest.parse(manifest_text)
    if manifest.to_json().encode() != manifest_text:
        raise ManifestError(f"{MANIFEST_NAME} was altered (it is not as cosmogen wrote it)")
    check_files(manifest, found)
    _check_padding(archive, covered)
    return manifest


def _extract(source: IO[bytes], target: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        while chunk := source.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
            out.write(chunk)
    return size, digest.hexdigest()


def _check_padding(archive: Path, covered: list[tuple[int, int]]) -> None:
    """Every byte outside the members' headers and data is zero: tar's block padding and end blocks.
    Read to the end, which also makes gzip check its CRC over the whole stream."""
    with _opened(archive) as stream:
        position = 0
        for start, end in sorted(covered):
            _expect_zeros(stream, start - position)
            _skip(stream, end - start)
            position = end
        _expect_zeros(stream, None)


def _expect_zeros(stream: IO[bytes], count: int | None) -> None:
    while count is None or count > 0:
        chunk = stream.read(_CHUNK if count is None else min(count, _CHUNK))
        if not chunk:
            return
        if chunk.count(0) != len(chunk):
            raise ManifestError("bytes between the archive's members were altered")
        if count is not None:
            count -= len(chunk)


def _skip(stream: IO[bytes], count: int) -> None:
    while count > 0:
        chunk = stream.read(min(count, _CHUNK))
        if not chunk:
            raise ManifestError("the archive ends inside a member")
        count -= len(chunk)


@contextlib.contextmanager
def _opened(archive: Path) -> Iterator[IO[bytes]]:
    """The archive's tar stream: the file itself, or decompressed when it is gzip. A gzip header is
    not covered by gzip's CRC, so it must be exactly the one `create` writes."""
    with archive.open("rb") as raw:
        head = raw.read(len(_GZIP_HEADER))
        raw.seek(0)
        if head[:2] != _GZIP_HEADER[:2]:
            yield raw
            return
        if head != _GZIP_HEADER:
            raise ManifestError("the gzip header was altered (it is not as cosmogen wrote it)")
        with gzip.GzipFile(fileobj=raw, mode="rb") as unzipped:
            yield cast(IO[bytes], unzipped)


# --- restoring -----------------------------------------------------------------------------------


def restore_sqlite(dump: Path, target: Path) -> None:
    """Copy the unpacked SQLite file to `target` (which the caller has made free)."""
    try:
        with (
            contextlib.closing(sqlite3.connect(f"{dump.resolve().as_uri()}?mode=ro", uri=True)) as src,
            contextlib.closing(sqlite3.connect(target)) as dst,
        ):
            src.backup(dst)
    except sqlite3.Error as exc:
        raise BackupError(f"cannot write {target}: {exc}") from None


def check_sqlite(dump: Path) -> None:
    """The unpacked SQLite file passes its integrity check (before anything is replaced)."""
    try:
        with contextlib.closing(sqlite3.connect(f"{dump.resolve().as_uri()}?mode=ro", uri=True)) as conn:
            ok = conn.execute("PRAGMA integrity_check").fetchone()
    except sqlite3.DatabaseError as exc:
        ok = (str(exc),)
    if ok != ("ok",):
        raise BackupError(f"the backup's database failed its integrity check ({ok[0]}); nothing was changed")


def postgres_tables(db: Database) -> int:
    """Tables outside PostgreSQL's own schemas: a restore needs a database with none."""
    with db.engine.connect() as conn:
        count = conn.execute(
            text(
                "SELECT count(*) FROM pg_catalog.pg_tables "
                "WHERE schemaname NOT IN ('pg_catalog', 'information_schema')"
            )
        ).scalar_one()
    return int(count)


def restore_postgres(dump: Path, database_url: str) -> None:
    """pg_restore the unpacked dump into the (empty) database, in one transaction: all of it or nothing."""
    pg_restore = find_tool("pg_restore")
    _run_tool(
        [pg_restore, "--no-owner", "--no-privileges", "--exit-on-error", "--single-transaction", str(dump)],
        database_url,
    )


# --- the PostgreSQL client tools -----------------------------------------------------------------


def find_tool(name: str, *, path: str | None = None, lib: Path = PG_LIB) -> str:
    """`name` (pg_dump, pg_restore) on PATH, else the newest under /usr/lib/postgresql/*/bin (Debian and
    Ubuntu install the tools there without putting them on PATH)."""
    found = shutil.which(name, path=path)
    if found is not None:
        return found

    def major(candidate: str) -> tuple[int, str]:
        number = re.match(r"\d+", Path(candidate).parent.parent.name)
        return (int(number.group()) if number else -1, candidate)

    candidates = [c for c in glob.glob(str(lib / "*" / "bin" / name)) if os.access(c, os.X_OK)]
    if candidates:
        return max(candidates, key=major)
    raise BackupError(
        f"{name} was not found on PATH nor under {lib}/*/bin. Install the PostgreSQL client tools, of the "
        "server's major version or newer (Debian/Ubuntu: apt-get install postgresql-client; "
        "macOS: brew install libpq), and run this again"
    )


def _run_tool(argv: list[str], database_url: str) -> None:
    """Run a PostgreSQL client tool against the database. The password goes in PGPASSWORD, not on the
    command line, where any user of the machine could read it in the process list."""
    url = make_url(database_url)
    env = {**os.environ, "PGCONNECT_TIMEOUT": "5"}
    if url.password is not None:
        env["PGPASSWORD"] = str(url.password)
    dsn = url.set(drivername="postgresql", password=None).render_as_string(hide_password=False)
    name = Path(argv[0]).name
    done = subprocess.run(  # noqa: S603 (a fixed tool, arguments we built)
        [*argv, f"--dbname={dsn}"], capture_output=True, text=True, env=env, check=False
    )
    if done.returncode != 0:
        detail = " ".join(done.stderr.split())[-600:] or f"exit status {done.returncode}"
        raise BackupError(f"{name} failed: {detail}")


# --- small helpers -------------------------------------------------------------------------------


def _digest(path: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def _mkdtemp(parent: Path, prefix: str) -> str:
    return tempfile.mkdtemp(prefix=prefix, suffix=f".{secrets.token_hex(4)}", dir=parent)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Unpacked:
    """An archive checked and unpacked into a private temporary directory (removed on exit)."""

    manifest: Manifest
    dump: Path


@contextlib.contextmanager
def unpacked(archive: Path) -> Iterator[Unpacked]:
    with tempfile.TemporaryDirectory(prefix="cosmogen-restore-") as scratch:
        manifest = unpack(archive, Path(scratch))
        yield Unpacked(manifest, Path(scratch) / manifest.dump.name)


def counts_text(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{count:,} {name}" for name, count in sorted(counts.items()))
