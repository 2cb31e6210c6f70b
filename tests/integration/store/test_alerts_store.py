"""runtime/alerts_store.py on SQLite and PostgreSQL: channel secrets sealed (and re-wrapped by a key
rotation), a run's failure handled once across two writers, the dedup window, delivery leases, retries
and giving up."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select, update

from cosmogen.domain import alerts
from cosmogen.integrations import credentials as creds
from cosmogen.integrations import keystore
from cosmogen.integrations.secret import Secret
from cosmogen.integrations.vault import KeySource
from cosmogen.runtime import alerts_store as store
from cosmogen.runtime import journal
from cosmogen.store import Database, GroupCommitWriter, new_id, repos
from cosmogen.store.tables import channel_secrets, notification_deliveries, notifications, runs
from cosmogen.testing.builders import document

T0 = datetime(2030, 1, 1, tzinfo=UTC)
LONG_AGO = datetime(2020, 1, 1, tzinfo=UTC)  # runs are stamped with the wall clock
PASSWORD = "smtp-secret-canary-91f2"  # noqa: S105 (a canary)


def _email() -> alerts.ChannelSettings:
    return alerts.parse_channel(
        "email",
        {"host": "smtp.example.com", "from": "a@example.com", "to": ["b@example.com"], "username": "a"},
    )


def _failed_run(writer: GroupCommitWriter, universe: str = "billing") -> str:
    doc = document(
        [{"id": "open", "type": "begin", "entity": "acct:1", "properties": {"b": 1}}], name=universe
    )
    saved = writer.submit(
        lambda conn: repos.save_version(conn, workspace_id="default", name=universe, document=doc)
    ).result()
    run_id = new_id()
    writer.submit(
        journal.create_run(
            run_id=run_id,
            universe_id=saved.universe_id,
            version_id=saved.version_id,
            event={"name": "x"},
            dry_run=False,
            claimed_by=None,
        )
    ).result()
    error = {"kind": "provider", "message": "the call failed"}

    def fail(conn: object) -> None:
        conn.execute(update(runs).where(runs.c.id == run_id).values(status="failed", error=error))  # type: ignore[attr-defined]

    writer.submit(fail).result()
    return run_id


def test_channel_secrets_are_sealed_and_follow_a_key_rotation(
    db: Database, writer: GroupCommitWriter, tmp_path: Path
) -> None:
    source = KeySource.for_data_dir(tmp_path / "keys")
    vault = keystore.open_vault(db, source)
    made = writer.submit(
        store.create_channel("default", "mail", _email(), {"password": Secret(PASSWORD)}, vault, T0)
    ).result()
    assert made.secrets_set == ("password",) and PASSWORD not in repr(made)
    with db.engine.connect() as conn:
        raw = conn.execute(select(channel_secrets.c.ciphertext)).scalar_one()
        assert PASSWORD.encode() not in bytes(raw)
        assert store.channel_secrets_of(conn, vault, made)["password"].reveal() == PASSWORD
        assert keystore.key_usage(conn) == {"k1": 1}
    # Rotation re-wraps the channel's secret too, so the old key can be retired without losing it.
    target, older = keystore.begin_rotation(db, vault, source)
    assert writer.submit(creds.rewrap_batch(vault, target.key_id, older, 10)).result() == 1
    with db.engine.connect() as conn:
        assert keystore.key_usage(conn) == {target.key_id: 1}
    assert keystore.retire(db, source, "k1") is True
    fresh = keystore.open_vault(db, source)
    with db.engine.connect() as conn:
        assert (
            store.channel_secrets_of(conn, fresh, store.get_channel(conn, "default", made.id))[
                "password"
            ].reveal()
            == PASSWORD
        )
    # Another workspace cannot see the channel; a name is unique per workspace.
    with db.engine.connect() as conn:
        assert store.list_channels(conn, "other") == []
    with pytest.raises(ValueError, match="exists"):
        writer.submit(store.create_channel("default", "mail", _email(), {}, None, T0)).result()


def test_a_failure_is_handled_once_across_writers_and_deduplicated(
    db: Database, writer: GroupCommitWriter
) -> None:
    hook = alerts.parse_channel("webhook", {"url": "https://hooks.example.com/x"})
    channel = writer.submit(store.create_channel("default", "hook", hook, {}, None, T0)).result()
    rule = alerts.parse_rule(new_id(), "run_failed", channel_ids=[channel.id], dedup_window_s=600)
    writer.submit(store.create_rule("default", "failures", rule, LONG_AGO)).result()
    first = _failed_run(writer)
    second_writer = GroupCommitWriter(db)  # another process's writer
    try:
        with ThreadPoolExecutor(2) as pool:
            results = list(
                pool.map(
                    lambda w: w.submit(store.handle_run(first, "failed", T0)).result(),
                    [writer, second_writer],
                )
            )
        assert sorted(len(r) for r in results) == [0, 1]  # one of them made it; the other saw the mark
        # The same failure again within the window: no new notification, one more repeat.
        again = _failed_run(writer)
        assert (
            second_writer.submit(store.handle_run(again, "failed", T0 + timedelta(seconds=599))).result()
            == []
        )
    finally:
        second_writer.close()
    with db.engine.connect() as conn:
        rows = conn.execute(select(notifications)).all()
        assert len(rows) == 1 and rows[0].repeats == 1 and rows[0].facts["run_id"] == first
        assert conn.execute(select(func.count()).select_from(notification_deliveries)).scalar_one() == 1
        assert store.finished_runs(conn, LONG_AGO) == []  # both runs are marked
        facts = rows[0].facts
        same = alerts.run_condition(
            "failed",
            workspace_id="default",
            run_id="r",
            universe_id=facts["universe_id"],
            universe_name="billing",
            error={"kind": "provider"},
            launch_id=None,
        )
        assert same is not None
        assert not store.is_due(conn, same, T0 + timedelta(seconds=599))  # the read that spares a write
        assert store.is_due(conn, same, T0 + timedelta(seconds=600))
        assert not store.any_due(conn, T0 - timedelta(seconds=1)) and store.any_due(conn, T0)
    # After the window a repeat notifies again (handled in a page, as the dispatcher does).
    later = _failed_run(writer)
    with db.engine.connect() as conn:
        assert [(r.id, r.status) for r in store.finished_runs(conn, LONG_AGO)] == [(later, "failed")]
    made = writer.submit(store.handle_runs([(later, "failed")], T0 + timedelta(seconds=600))).result()
    assert len(made) == 1
    # A run that succeeded outside any launch concerns no rule and no notify list: it is not even read.
    done = _failed_run(writer)
    writer.submit(
        lambda conn: conn.execute(update(runs).where(runs.c.id == done).values(status="succeeded"))
    ).result()
    with db.engine.connect() as conn:
        assert store.finished_runs(conn, LONG_AGO) == []
    # Marks are forgotten once their runs are past the look-back.
    assert writer.submit(store.purge_marks(T0 + timedelta(seconds=1))).result() == 1
    assert writer.submit(store.purge_marks(T0 + timedelta(seconds=601))).result() == 2
    with db.engine.connect() as conn:
        assert len(store.finished_runs(conn, LONG_AGO)) == 3  # read again: a dispatcher looking that far back


def test_deliveries_are_leased_retried_and_given_up(db: Database, writer: GroupCommitWriter) -> None:
    hook = alerts.parse_channel("webhook", {"url": "https://hooks.example.com/x"})
    channel = writer.submit(store.create_channel("default", "hook", hook, {}, None, T0)).result()
    rule = alerts.parse_rule(new_id(), "run_failed", channel_ids=[channel.id], dedup_window_s=0)
    writer.submit(store.create_rule("default", "failures", rule, LONG_AGO)).result()
    writer.submit(store.handle_run(_failed_run(writer), "failed", T0)).result()
    lease = timedelta(seconds=60)
    (due,) = writer.submit(store.claim_due("a", T0, lease)).result()
    assert due.kind == "webhook" and due.channel_id == channel.id and due.title.startswith("Run failed")
    assert writer.submit(store.claim_due("b", T0 + timedelta(seconds=1), lease)).result() == []  # leased
    # A stale holder's result after the lease went to another process does not count.
    (taken,) = writer.submit(store.claim_due("b", T0 + timedelta(seconds=61), lease)).result()
    assert taken.id == due.id
    stale = store.finish_delivery(due.id, "a", error=None, now=T0 + timedelta(seconds=62))
    assert writer.submit(stale).result() is alerts.DeliveryStatus.PENDING
    now = T0 + timedelta(seconds=62)
    owner = "b"
    for attempt in range(1, alerts.MAX_ATTEMPTS + 1):
        status = writer.submit(
            store.finish_delivery(due.id, owner, error="HTTP 500; check its logs", now=now)
        ).result()
        if attempt < alerts.MAX_ATTEMPTS:
            assert status is alerts.DeliveryStatus.PENDING
            assert writer.submit(store.claim_due("c", now, lease)).result() == []  # not due yet
            now += timedelta(seconds=alerts.RETRY_CAP_S)
            (again,) = writer.submit(store.claim_due("c", now, lease)).result()
            assert again.attempts == attempt
            owner = "c"
        else:
            assert status is alerts.DeliveryStatus.FAILED
    # Deleting the channel takes it off the rule that listed it.
    writer.submit(store.delete_channel("default", channel.id)).result()
    with db.engine.connect() as conn:
        assert store.get_rule(conn, "default", rule.id).rule.channel_ids == ()
        row = conn.execute(select(notification_deliveries)).one()
    assert (row.status, row.attempts, row.last_error) == (
        "failed",
        alerts.MAX_ATTEMPTS,
        "HTTP 500; check its logs",
    )
    assert writer.submit(store.claim_due("d", now + timedelta(days=1), lease)).result() == []


def test_only_runs_something_cares_about_are_read(db: Database, writer: GroupCommitWriter) -> None:
    failed = _failed_run(writer)
    with db.engine.connect() as conn:
        assert store.finished_runs(conn, LONG_AGO) == []  # no rule: not read, never marked
    # A rule made after the failure does not replay it; one older than the failure covers it.
    late = alerts.parse_rule(new_id(), "run_failed")
    writer.submit(
        store.create_rule("default", "late", late, datetime.now(UTC) + timedelta(seconds=5))
    ).result()
    with db.engine.connect() as conn:
        assert store.finished_runs(conn, LONG_AGO) == []
    attention = alerts.parse_rule(new_id(), "run_needs_attention")
    writer.submit(store.create_rule("default", "attention", attention, LONG_AGO)).result()
    with db.engine.connect() as conn:
        assert store.finished_runs(conn, LONG_AGO) == []  # a rule of another kind
    early = alerts.parse_rule(new_id(), "run_failed")
    writer.submit(store.create_rule("default", "early", early, LONG_AGO)).result()
    with db.engine.connect() as conn:
        assert [r.id for r in store.finished_runs(conn, LONG_AGO)] == [failed]
        assert store.finished_runs(conn, datetime.now(UTC) + timedelta(hours=1)) == []  # past the look-back
    # A run gone since it was listed does not fail the page it is in.
    assert writer.submit(store.handle_runs([("no-such-run", "failed"), (failed, "failed")], T0)).result()
