"""Universes and versions: one universe per name, numbered versions, no duplicate of the latest."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import Connection, func, select

from cosmogen.store import Database, GroupCommitWriter, repos, tables
from cosmogen.store.database import SQLITE_BEGIN
from cosmogen.store.repos import NotFound

DOC_A: dict[str, Any] = {"cosmogen": "universe/1", "name": "greeter", "nodes": [{"id": "n0"}], "edges": []}
DOC_B: dict[str, Any] = {**DOC_A, "nodes": [{"id": "n0"}, {"id": "n1"}]}


def save(db: Database, name: str, document: dict[str, Any], workspace_id: str = "default", **kw: Any) -> Any:
    with db.engine.begin() as conn:
        return repos.save_version(conn, workspace_id=workspace_id, name=name, document=document, **kw)


def test_first_save_creates_the_universe_with_version_1_active(db: Database) -> None:
    saved = save(db, "greeter", DOC_A, label="first", created_by="ada")
    assert saved.number == 1
    assert saved.created
    with db.engine.connect() as conn:
        [universe] = repos.list_universes(conn, "default")
        version = repos.get_version(conn, saved.version_id)
    assert universe.id == saved.universe_id
    assert universe.name == "greeter"
    assert universe.active_version_id == saved.version_id
    assert universe.deployment_status == "draft"
    assert version is not None
    assert version.document == DOC_A
    assert version.label == "first"
    assert version.created_by == "ada"
    assert version.document_sha256 == repos.document_sha256(DOC_A)
    assert version.last_run_summary is None
    assert version.created_at.tzinfo is not None


def test_saving_under_an_existing_name_adds_a_version_to_that_universe(db: Database) -> None:
    first = save(db, "greeter", DOC_A)
    second = save(db, "greeter", DOC_B)
    assert second.universe_id == first.universe_id
    assert (second.number, second.created) == (2, True)
    with db.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(tables.universes)).scalar_one() == 1
        [universe] = repos.list_universes(conn, "default")
    assert universe.active_version_id == first.version_id  # a new version waits to be deployed
    assert universe.updated_at >= universe.created_at


def test_identical_content_returns_the_latest_version_instead_of_a_duplicate(db: Database) -> None:
    first = save(db, "greeter", DOC_A)
    reordered = dict(reversed(list(DOC_A.items())))  # same content, different key order
    again = save(db, "greeter", reordered, label="ignored")
    assert again == repos.SavedVersion(first.universe_id, first.version_id, 1, created=False)
    # Only the *latest* version is compared: A, B, A gives three versions.
    save(db, "greeter", DOC_B)
    third = save(db, "greeter", DOC_A)
    assert (third.number, third.created) == (3, True)
    with db.engine.connect() as conn:
        assert [v.number for v in repos.list_versions(conn, first.universe_id)] == [1, 2, 3]


def test_the_same_name_in_another_workspace_is_another_universe(db: Database) -> None:
    ours = save(db, "greeter", DOC_A, workspace_id="ours")
    theirs = save(db, "greeter", DOC_A, workspace_id="theirs")
    assert ours.universe_id != theirs.universe_id
    assert theirs.number == 1
    assert theirs.created
    save(db, "beta", DOC_A, workspace_id="ours")
    with db.engine.connect() as conn:
        assert [u.name for u in repos.list_universes(conn, "ours")] == ["beta", "greeter"]
        assert [u.name for u in repos.list_universes(conn, "theirs")] == ["greeter"]
        assert repos.list_universes(conn, "nobody") == []


def test_list_versions_is_ordered_and_leaves_documents_out(db: Database) -> None:
    ids = [save(db, "greeter", {**DOC_A, "rev": i}).version_id for i in range(4)]
    other = save(db, "other", DOC_A)
    with db.engine.connect() as conn:
        versions = repos.list_versions(conn, other.universe_id)
        assert [v.id for v in versions] == [other.version_id]
        universe_id = repos.get_version(conn, ids[0]).universe_id  # type: ignore[union-attr]
        versions = repos.list_versions(conn, universe_id)
    assert [v.id for v in versions] == ids
    assert [v.number for v in versions] == [1, 2, 3, 4]
    assert not hasattr(versions[0], "document")


def test_get_version_of_an_unknown_id_is_none(db: Database) -> None:
    with db.engine.connect() as conn:
        assert repos.get_version(conn, "nope") is None


def test_last_run_summary_is_set_replaced_and_cleared(db: Database) -> None:
    saved = save(db, "greeter", DOC_A)
    summary = {"run_id": "r1", "status": "succeeded", "nodes": 3}
    with db.engine.begin() as conn:
        repos.set_last_run_summary(conn, saved.version_id, summary)
    with db.engine.connect() as conn:
        version = repos.get_version(conn, saved.version_id)
        assert version is not None
        assert version.last_run_summary == summary
        assert version.document == DOC_A  # untouched
    with db.engine.begin() as conn:
        repos.set_last_run_summary(conn, saved.version_id, None)
    with db.engine.connect() as conn:
        assert repos.list_versions(conn, saved.universe_id)[0].last_run_summary is None
        # SQL NULL, not the JSON literal null: "no summary" must be findable with IS NULL.
        v = tables.universe_versions
        assert (
            conn.execute(select(v.c.id).where(v.c.last_run_summary.is_(None))).scalar_one()
            == saved.version_id
        )
    with pytest.raises(NotFound), db.engine.begin() as conn:
        repos.set_last_run_summary(conn, "nope", summary)


def test_saves_through_the_writer_commit_together(db: Database, writer: GroupCommitWriter) -> None:
    def save_numbered(i: int) -> Callable[[Connection], repos.SavedVersion]:
        return lambda conn: repos.save_version(conn, workspace_id="w", name="batch", document={"i": i})

    futures = [writer.submit(save_numbered(i)) for i in range(30)]
    assert sorted(f.result(10).number for f in futures) == list(range(1, 31))


def test_concurrent_saves_from_separate_connections_number_versions_without_gaps(db: Database) -> None:
    # Separate transactions racing on one new name, as several processes would: the universe must be
    # created once (ON CONFLICT) and the versions numbered one after another (row lock / write lock).
    threads = 8
    barrier = threading.Barrier(threads)
    results: list[repos.SavedVersion] = []
    errors: list[BaseException] = []

    def saver(i: int) -> None:
        try:
            with db.engine.connect() as conn:
                conn.execution_options(**{SQLITE_BEGIN: "IMMEDIATE"})
                barrier.wait()
                with conn.begin():
                    results.append(
                        repos.save_version(conn, workspace_id="default", name="raced", document={"i": i})
                    )
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=saver, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(30)
    assert errors == []
    assert sorted(r.number for r in results) == list(range(1, threads + 1))
    assert len({r.universe_id for r in results}) == 1


def test_canonical_json_is_order_independent_and_keeps_unicode() -> None:
    assert (
        repos.canonical_json({"b": 1, "a": [1, {"d": "é", "c": None}]})
        == '{"a":[1,{"c":null,"d":"é"}],"b":1}'
    )
    assert repos.document_sha256({"a": 1, "b": 2}) == repos.document_sha256({"b": 2, "a": 1})
    with pytest.raises(ValueError, match="JSON compliant"):
        repos.canonical_json({"x": float("nan")})
