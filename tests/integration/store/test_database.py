"""Opening databases: the SQLite power-loss configuration, clear errors, UTC timestamps, ids."""

from __future__ import annotations

import contextlib
import sqlite3
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError

from cosmogen.store import Database, DatabaseError, new_id, tables

NOW = datetime(2025, 3, 1, 12, 30, 15, 123456, tzinfo=UTC)


def test_sqlite_pragmas_hold_on_every_pooled_connection(tmp_path: Path) -> None:
    db = Database.open(data_dir=tmp_path)
    try:
        # Hold several connections at once so the pool must open new ones, each of which must be configured.
        with contextlib.ExitStack() as stack:
            conns = [stack.enter_context(db.engine.connect()) for _ in range(4)]
            for conn in conns:
                assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
                assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
                assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
                assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 5000
    finally:
        db.close()
    assert (tmp_path / "cosmogen.db").is_file()
    # WAL is a property of the file: a plain sqlite3 connection sees it too.
    raw = sqlite3.connect(tmp_path / "cosmogen.db")
    try:
        assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    finally:
        raw.close()


def test_data_dir_is_created_and_a_sqlite_url_opens_the_same_file(tmp_path: Path) -> None:
    data_dir = tmp_path / "nested" / "data"
    with Database.open(data_dir=data_dir) as db:
        assert db.dialect == "sqlite"
        with db.engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE marker (x INTEGER)")
    with Database.open(url=f"sqlite:///{data_dir / 'cosmogen.db'}") as db, db.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM marker").scalar() == 0


def test_postgresql_url_opens_with_psycopg_even_without_a_driver_name(pg_url: str) -> None:
    bare = pg_url.replace("postgresql+psycopg://", "postgresql://")
    with Database.open(url=bare) as db:
        assert db.dialect == "postgresql"
        assert db.engine.dialect.driver == "psycopg"


def test_foreign_keys_are_enforced(db: Database) -> None:
    orphan = {
        "id": new_id(),
        "universe_id": "no-such-universe",
        "number": 1,
        "document": {},
        "document_sha256": "x",
        "created_at": NOW,
    }
    with pytest.raises(IntegrityError), db.engine.begin() as conn:
        conn.execute(insert(tables.universe_versions).values(orphan))


def test_unreachable_postgresql_is_a_clear_error() -> None:
    # Port 1 on loopback: nothing listens there, so the connection is refused at once.
    with pytest.raises(DatabaseError, match=r"cannot open postgresql database .*127\.0\.0\.1:1.*refused"):
        Database.open(url="postgresql+psycopg://postgres:secret@127.0.0.1:1/cosmogen")


def test_missing_postgresql_database_is_a_clear_error_without_the_password(pg_url: str) -> None:
    url = pg_url.rsplit("/", 1)[0].replace("postgres@", "postgres:hunter2@") + "/cosmogen_no_such_db"
    with pytest.raises(DatabaseError, match='database "cosmogen_no_such_db" does not exist') as info:
        Database.open(url=url)
    assert "hunter2" not in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "exactly one of"),
        ({"url": "sqlite:///x.db", "data_dir": Path()}, "exactly one of"),
        ({"url": "mysql://u:pw@localhost/db"}, "unsupported database 'mysql'"),
        ({"url": "postgresql+psycopg2://localhost/db"}, "use postgresql\\+psycopg"),
        ({"url": "sqlite://"}, "in-memory"),
        ({"url": "sqlite:////no/such/dir/x.db"}, "does not exist"),
        ({"url": "not a url"}, "not a database URL"),
    ],
)
def test_bad_configuration_is_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(DatabaseError, match=message):
        Database.open(**kwargs)  # type: ignore[arg-type]


def test_a_data_dir_that_cannot_be_created_is_refused(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("in the way")
    with pytest.raises(DatabaseError, match="cannot create data directory"):
        Database.open(data_dir=tmp_path / "file" / "data")


def test_a_file_that_is_not_a_database_is_refused(tmp_path: Path) -> None:
    (tmp_path / "cosmogen.db").write_bytes(b"this is not an SQLite file, it is much longer than a header" * 4)
    with pytest.raises(DatabaseError, match="cannot open sqlite database"):
        Database.open(data_dir=tmp_path)


def test_timestamps_come_back_timezone_aware_utc(db: Database) -> None:
    paris = timezone(timedelta(hours=1))
    created = datetime(2025, 3, 1, 13, 30, 15, 123456, tzinfo=paris)  # == NOW
    with db.engine.begin() as conn:
        conn.execute(insert(tables.universes).values(id="u1", name="a", created_at=created, updated_at=NOW))
    with db.engine.connect() as conn:
        row = conn.execute(select(tables.universes.c.created_at, tables.universes.c.updated_at)).one()
        # Comparison in SQL must be chronological too (SQLite compares the stored text).
        later = conn.execute(
            select(tables.universes.c.id).where(
                tables.universes.c.created_at < NOW + timedelta(microseconds=1)
            )
        ).scalar_one_or_none()
    assert row.created_at == NOW
    assert row.created_at.utcoffset() == timedelta(0)
    assert row.updated_at == NOW
    assert row.updated_at.tzinfo is not None
    assert later == "u1"


def test_naive_datetimes_are_refused(db: Database) -> None:
    with pytest.raises(Exception, match="naive datetime"), db.engine.begin() as conn:
        conn.execute(
            insert(tables.universes).values(
                id="u1",
                name="a",
                created_at=datetime(2025, 1, 1),
                updated_at=NOW,
            )
        )


def test_new_ids_are_unique_and_sort_in_creation_order() -> None:
    ids = [new_id() for _ in range(20_000)]  # many share a millisecond
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)
    assert all(len(i) == 26 and set(i) <= set("0123456789ABCDEFGHJKMNPQRSTVWXYZ") for i in ids)
    # The first 10 characters are the Unix time in milliseconds.
    alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
    millis = 0
    for char in ids[-1][:10]:
        millis = millis * 32 + alphabet.index(char)
    assert abs(millis / 1000 - time.time()) < 60
