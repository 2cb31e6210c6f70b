"""Opening the database: embedded SQLite (default) or PostgreSQL (scale-out), never a silent fallback."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError

Dialect = Literal["sqlite", "postgresql"]

DB_FILENAME = "cosmogen.db"

# Our power-loss claim for the embedded database: WAL with a full fsync on every commit, so a
# committed transaction survives a crash of the machine, not only of the process.
SQLITE_PRAGMAS = (
    ("journal_mode", "WAL"),
    ("synchronous", "FULL"),
    ("foreign_keys", "ON"),
    ("busy_timeout", "5000"),  # ms to wait for another process's write lock before SQLITE_BUSY
)

# Execution option on a Connection: how its SQLite transactions begin ("DEFERRED" if unset).
# The group-commit writer and migrations ask for "IMMEDIATE" so they take the write lock up front
# instead of failing with SQLITE_BUSY when a read transaction later tries to become a write.
SQLITE_BEGIN = "cosmogen_sqlite_begin"

POSTGRES_CONNECT_TIMEOUT_S = 5


class DatabaseError(RuntimeError):
    """The database is misconfigured, missing or unreachable; the message says which and where."""


@dataclass(eq=False)
class Database:
    """One engine for one database. Create with `Database.open`; call `close()` when done."""

    engine: Engine
    dialect: Dialect

    @classmethod
    def open(cls, url: str | None = None, data_dir: Path | None = None) -> Database:
        """Open `url` (sqlite:///file or postgresql+psycopg://...) or the SQLite file in `data_dir`.

        Exactly one of the two. Checks the connection before returning, so a missing or unreachable
        database fails here with a clear message rather than at the first write.
        """
        if url is not None and data_dir is None:
            parsed = _parse(url)
        elif data_dir is not None and url is None:
            data_dir = Path(data_dir)
            try:
                data_dir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise DatabaseError(f"cannot create data directory {data_dir}: {exc.strerror}") from exc
            parsed = URL.create("sqlite+pysqlite", database=str(data_dir / DB_FILENAME))
        else:
            raise DatabaseError("Database.open needs exactly one of url= or data_dir=")
        dialect: Dialect = "postgresql" if parsed.get_backend_name() == "postgresql" else "sqlite"
        database = cls(_create_engine(parsed), dialect)
        try:
            database._check()
        except BaseException:
            database.close()
            raise
        return database

    @property
    def url(self) -> str:
        """The URL with any password hidden: safe for logs and error messages."""
        return self.engine.url.render_as_string(hide_password=True)

    def close(self) -> None:
        """Close every pooled connection. Idempotent."""
        self.engine.dispose()

    def _check(self) -> None:
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except DBAPIError as exc:
            raise DatabaseError(f"cannot open {self.dialect} database {self.url}: {_reason(exc)}") from exc

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _parse(url: str) -> URL:
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise DatabaseError(
            "not a database URL (expected sqlite:///path or postgresql+psycopg://...)"
        ) from exc
    # Not get_driver_name(): without "+driver" it imports the dialect to find its default driver.
    backend, _, driver = parsed.drivername.partition("+")
    if backend in ("postgresql", "postgres"):
        if "+" not in parsed.drivername:
            # psycopg (3) is the driver we ship; a bare postgresql:// would make SQLAlchemy look for psycopg2.
            return parsed.set(drivername="postgresql+psycopg")
        if (backend, driver) != ("postgresql", "psycopg"):
            raise DatabaseError(
                f"unsupported PostgreSQL driver in {parsed.drivername!r}: use postgresql+psycopg://"
            )
        return parsed
    if backend == "sqlite":
        if not parsed.database or parsed.database == ":memory:":
            # Each pooled connection would get its own empty in-memory database.
            raise DatabaseError("an in-memory SQLite database cannot be shared; give a file path")
        parent = Path(parsed.database).parent
        if not parent.is_dir():
            raise DatabaseError(f"directory {parent} for SQLite database {parsed.database} does not exist")
        return parsed.set(drivername="sqlite+pysqlite")
    shown = parsed.render_as_string(hide_password=True)
    raise DatabaseError(
        f"unsupported database {backend!r} in {shown}: use sqlite:/// or postgresql+psycopg://"
    )


def _create_engine(url: URL) -> Engine:
    if url.get_backend_name() == "postgresql":
        return create_engine(
            url,
            pool_pre_ping=True,  # a restarted server must not surface as an error on the next request
            connect_args={"connect_timeout": POSTGRES_CONNECT_TIMEOUT_S},
        )
    engine = create_engine(url)
    event.listen(engine, "connect", _sqlite_on_connect)
    event.listen(engine, "begin", _sqlite_on_begin)
    return engine


def _sqlite_on_connect(dbapi_connection: sqlite3.Connection, _record: Any) -> None:
    # Take BEGIN away from the sqlite3 module (it only begins before DML, so SELECTs and DDL would run
    # outside the transaction); SQLAlchemy's "begin" event emits it instead (_sqlite_on_begin).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        for name, value in SQLITE_PRAGMAS:
            cursor.execute(f"PRAGMA {name}={value}")
        mode = cursor.execute("PRAGMA journal_mode").fetchone()
        if mode is None or str(mode[0]).lower() != "wal":
            raise DatabaseError(
                f"SQLite refused journal_mode=WAL (got {mode}); is the file on a network share?"
            )
    finally:
        cursor.close()


def _sqlite_on_begin(conn: Connection) -> None:
    mode = conn.get_execution_options().get(SQLITE_BEGIN, "DEFERRED")
    if mode not in ("DEFERRED", "IMMEDIATE", "EXCLUSIVE"):
        raise ValueError(f"{SQLITE_BEGIN} must be DEFERRED, IMMEDIATE or EXCLUSIVE, not {mode!r}")
    conn.exec_driver_sql(f"BEGIN {mode}")


def _reason(exc: DBAPIError) -> str:
    # The driver's own first line says what went wrong (refused, no such database, bad password).
    lines = str(exc.orig).strip().splitlines()
    return lines[0] if lines else type(exc.orig).__name__
