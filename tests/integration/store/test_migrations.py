"""Migrations: every revision goes up and down cleanly, and head is exactly tables.metadata."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import CheckConstraint, Engine, UniqueConstraint, inspect

from cosmogen.store import Database, migrate, tables
from tests.conftest import PROCRASTINATE_TABLES

ALEMBIC_TABLE = "alembic_version"


def test_revisions_are_listed_oldest_first() -> None:
    revs = migrate.revisions()
    assert revs[0] == "0001"
    assert len(revs) == len(set(revs))


@pytest.mark.parametrize("target", migrate.revisions())
def test_each_revision_upgrades_from_base_then_to_head_and_back_to_base(
    empty_db: Database, target: str
) -> None:
    assert migrate.current_revision(empty_db) is None
    migrate.upgrade(empty_db, target)
    assert migrate.current_revision(empty_db) == target
    migrate.upgrade(empty_db, "head")
    assert migrate.current_revision(empty_db) == migrate.revisions()[-1]
    assert migrate.is_current(empty_db)
    migrate.downgrade(empty_db, "base")
    assert migrate.current_revision(empty_db) is None
    assert set(inspect(empty_db.engine).get_table_names()) <= {ALEMBIC_TABLE}


def test_upgrade_at_head_is_a_no_op(db: Database) -> None:
    before = _schema(db.engine)
    migrate.upgrade(db)
    assert _schema(db.engine) == before


def test_migrated_schema_matches_the_metadata(db: Database) -> None:
    # `db` was migrated to head by the fixture; build the same description from the metadata.
    actual = _schema(db.engine)
    expected = _expected_schema(db.engine)
    assert sorted(actual) == sorted(expected)
    for table in expected:
        assert actual[table] == expected[table], table


def _type_name(type_: Any, engine: Engine) -> str:
    # Compare types as the dialect spells them (JSON becomes JSONB on PostgreSQL, BigInteger ids become
    # INTEGER on SQLite), ignoring lengths and case: "loosely", but a wrong type family still differs.
    impl = type_.dialect_impl(engine.dialect)
    impl = getattr(impl, "impl_instance", impl)  # TypeDecorator: compare what it stores
    return str(impl.compile(dialect=engine.dialect)).split("(")[0].upper()


def _schema(engine: Engine) -> dict[str, dict[str, Any]]:
    """What the database really has, reflected."""
    insp = inspect(engine)
    schema = {}
    for name in insp.get_table_names():
        if name == ALEMBIC_TABLE or name.startswith("procrastinate_"):
            continue  # procrastinate's schema is its own (checked in test_procrastinate_schema)
        schema[name] = {
            "columns": {
                c["name"]: (_type_name(c["type"], engine), c["nullable"]) for c in insp.get_columns(name)
            },
            "primary_key": tuple(insp.get_pk_constraint(name)["constrained_columns"]),
            "indexes": {
                (ix["name"], tuple(ix["column_names"]), bool(ix["unique"]))
                for ix in insp.get_indexes(name)
                # PostgreSQL reports the index behind each unique constraint as an index too.
                if not ix.get("duplicates_constraint")
            },
            "uniques": {(uq["name"], tuple(uq["column_names"])) for uq in insp.get_unique_constraints(name)},
            "foreign_keys": {
                (
                    fk["name"],
                    tuple(fk["constrained_columns"]),
                    fk["referred_table"],
                    tuple(fk["referred_columns"]),
                    (fk.get("options") or {}).get("ondelete"),
                )
                for fk in insp.get_foreign_keys(name)
            },
            "checks": {ck["name"] for ck in insp.get_check_constraints(name)},
        }
    return schema


def _expected_schema(engine: Engine) -> dict[str, dict[str, Any]]:
    """The same description built from tables.metadata."""
    schema = {}
    for table in tables.metadata.sorted_tables:
        schema[table.name] = {
            "columns": {c.name: (_type_name(c.type, engine), c.nullable) for c in table.columns},
            "primary_key": tuple(c.name for c in table.primary_key.columns),
            "indexes": {
                (ix.name, tuple(c.name for c in ix.columns), bool(ix.unique)) for ix in table.indexes
            },
            "uniques": {
                (uq.name, tuple(c.name for c in uq.columns))
                for uq in table.constraints
                if isinstance(uq, UniqueConstraint)
            },
            "foreign_keys": {
                (
                    fk.name,
                    tuple(c.name for c in fk.columns),
                    fk.referred_table.name,
                    tuple(e.column.name for e in fk.elements),
                    fk.ondelete,
                )
                for fk in table.foreign_key_constraints
            },
            "checks": {ck.name for ck in table.constraints if isinstance(ck, CheckConstraint)},
        }
    return schema


def test_procrastinate_schema_is_on_postgresql_only(db: Database) -> None:
    """Revision 0003 applies procrastinate's schema on PostgreSQL; SQLite dispatches runs in-process."""
    tables = {name for name in inspect(db.engine).get_table_names() if name.startswith("procrastinate_")}
    if db.dialect == "postgresql":
        assert tables == set(PROCRASTINATE_TABLES)
        with db.engine.connect() as conn:
            functions = conn.exec_driver_sql(
                "SELECT count(*) FROM pg_proc WHERE proname = 'procrastinate_fetch_job_v2'"
            ).scalar()
        assert functions == 1
    else:
        assert tables == set()


def test_downgrading_0003_removes_every_procrastinate_object(empty_db: Database) -> None:
    migrate.upgrade(empty_db)
    migrate.downgrade(empty_db, "0002")
    with empty_db.engine.connect() as conn:
        left = [name for name in inspect(conn).get_table_names() if name.startswith("procrastinate")]
        if empty_db.dialect == "postgresql":
            left += [
                str(row[0])
                for row in conn.exec_driver_sql(
                    "SELECT proname FROM pg_proc WHERE proname LIKE 'procrastinate%%' "
                    "UNION ALL SELECT typname FROM pg_type WHERE typname LIKE '%%procrastinate%%'"
                )
            ]
    assert left == []
    migrate.upgrade(empty_db)  # and back up again
    assert migrate.current_revision(empty_db) == migrate.revisions()[-1]


def test_0017_keeps_run_event_ids_from_being_reused(empty_db: Database) -> None:
    """Relaxing run_events for workspace events rebuilds the table on SQLite: the ids handed out before
    stay handed out (AUTOINCREMENT and its high-water mark survive), on both dialects."""
    from sqlalchemy import delete, func, select

    from cosmogen.runtime import journal
    from cosmogen.store import repos

    migrate.upgrade(empty_db, "0016")
    with empty_db.engine.begin() as conn:
        saved = repos.save_version(
            conn, workspace_id="default", name="u", document={"name": "u", "nodes": []}
        )
        journal.create_run(
            run_id="r", universe_id=saved.universe_id, version_id=saved.version_id, event={}, dry_run=False,
            claimed_by="w",
        )(conn)  # fmt: skip
        newest = conn.execute(select(func.max(tables.run_events.c.id))).scalar()
        assert newest is not None and newest >= 2  # run.queued, run.started
        conn.execute(delete(tables.run_events).where(tables.run_events.c.id == newest))
    migrate.upgrade(empty_db, "head")
    with empty_db.engine.begin() as conn:
        conn.execute(tables.run_events.insert().values(
            workspace_id="default", type="account.status", payload={}))  # fmt: skip
        added = conn.execute(select(func.max(tables.run_events.c.id))).scalar()
    assert added is not None and added > newest
