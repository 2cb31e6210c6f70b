"""Alert rules, notification channels, the inbox and deliveries in the database: write functions for the
group-commit writer, and reads. The decisions are domain/alerts.py; the sending is
integrations/alert_senders.py; the loop that ties them together is runtime/alerts.py.

Exactly once across processes:
- `handle_run` inserts the run's mark (`run:<id>:<status>`) with ON CONFLICT DO NOTHING first: only the
  transaction that inserted it goes on, so a run's failure is evaluated once however many serve
  processes watch;
- `raise_condition` holds the dedup key's row (inserted the same way, then locked FOR UPDATE on
  PostgreSQL) while it decides, so two processes seeing the same condition make one notification;
- a delivery is sent by the process holding its lease (`claim_due`).

Channel secrets (an SMTP password, a webhook signing secret) are sealed by the vault, bound to the
workspace, the channel and the field `alert_channel/<field>`; no read here returns them, except
`channel_secrets_of` for the sender.
"""

from __future__ import annotations

import secrets as random_secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, case, delete, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from cosmogen.domain import alerts
from cosmogen.domain.launches import NotifyChannel, parse_launch_config
from cosmogen.domain.webhook_signature import SECRET_PREFIX
from cosmogen.integrations import channel_secrets as channel_vault
from cosmogen.integrations.secret import Secret
from cosmogen.integrations.vault import Vault
from cosmogen.store.tables import (
    alert_dedup,
    alert_marks,
    alert_rules,
    channel_secrets,
    launches,
    new_id,
    notification_channels,
    notification_deliveries,
    notifications,
    runs,
    universes,
)
from cosmogen.store.writer import WriteFn


class ChannelNotFound(LookupError):
    """No channel with that id in this workspace."""


class RuleNotFound(LookupError):
    """No rule with that id in this workspace."""


@dataclass(frozen=True, slots=True)
class ChannelRecord:
    id: str
    workspace_id: str
    name: str
    kind: alerts.ChannelKind
    config: dict[str, Any]
    secrets_set: tuple[str, ...]  # which secret fields are stored (never their values)
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class RuleRecord:
    rule: alerts.Rule
    workspace_id: str
    name: str
    created_at: datetime
    updated_at: datetime


def new_signing_secret() -> Secret:
    return Secret(SECRET_PREFIX + random_secrets.token_urlsafe(32))


def _insert_ignore(conn: Connection, table: Any, values: dict[str, Any]) -> bool:
    """INSERT ... ON CONFLICT DO NOTHING on either dialect; True when this call inserted the row. Told by
    RETURNING, not rowcount (which psycopg may report as -1 for this statement)."""
    make = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    key = next(iter(table.primary_key.columns))
    inserted = conn.execute(make(table).values(**values).on_conflict_do_nothing().returning(key)).first()
    return inserted is not None


# --- channels -------------------------------------------------------------------------------------


def create_channel(
    workspace: str,
    name: str,
    settings: alerts.ChannelSettings,
    secret_values: Mapping[str, Secret],
    vault: Vault | None,
    now: datetime,
) -> WriteFn[ChannelRecord]:
    """A channel; its secrets sealed in the same transaction. Raises ValueError for a taken name."""
    channel_id = new_id()

    def write(conn: Connection) -> ChannelRecord:
        taken = conn.execute(
            select(notification_channels.c.id).where(
                notification_channels.c.workspace_id == workspace, notification_channels.c.name == name
            )
        ).first()
        if taken is not None:
            raise ValueError(f"a channel named {name!r} exists in this workspace; pick another name")
        conn.execute(
            notification_channels.insert().values(
                id=channel_id,
                workspace_id=workspace,
                name=name,
                kind=settings.kind.value,
                config=settings.config,
                created_at=now,
                updated_at=now,
            )
        )
        _seal_all(conn, vault, workspace, channel_id, secret_values, now)
        return get_channel(conn, workspace, channel_id)

    return write


def _seal_all(
    conn: Connection, vault: Vault | None, workspace: str, channel_id: str,
    secret_values: Mapping[str, Secret], now: datetime,
) -> None:  # fmt: skip
    for field_name, value in secret_values.items():
        assert vault is not None, "secrets need the vault"
        channel_vault.seal(
            conn, vault, workspace=workspace, channel_id=channel_id, field=field_name, value=value, now=now
        )


def update_channel(
    workspace: str,
    channel_id: str,
    *,
    name: str | None,
    settings: alerts.ChannelSettings | None,
    secret_values: Mapping[str, Secret],
    vault: Vault | None,
    now: datetime,
) -> WriteFn[ChannelRecord]:
    def write(conn: Connection) -> ChannelRecord:
        current = get_channel(conn, workspace, channel_id)
        values: dict[str, Any] = {"updated_at": now}
        if name is not None and name != current.name:
            taken = conn.execute(
                select(notification_channels.c.id).where(
                    notification_channels.c.workspace_id == workspace, notification_channels.c.name == name
                )
            ).first()
            if taken is not None:
                raise ValueError(f"a channel named {name!r} exists in this workspace; pick another name")
            values["name"] = name
        if settings is not None:
            values["config"] = settings.config
        conn.execute(
            update(notification_channels).where(notification_channels.c.id == channel_id).values(**values)
        )
        _seal_all(conn, vault, workspace, channel_id, secret_values, now)
        return get_channel(conn, workspace, channel_id)

    return write


def delete_channel(workspace: str, channel_id: str) -> WriteFn[None]:
    """The channel and its secrets; rules that listed it no longer do (their other channels stay)."""

    def write(conn: Connection) -> None:
        get_channel(conn, workspace, channel_id)
        conn.execute(delete(channel_secrets).where(channel_secrets.c.channel_id == channel_id))
        conn.execute(delete(notification_channels).where(notification_channels.c.id == channel_id))
        rows = conn.execute(
            select(alert_rules.c.id, alert_rules.c.channel_ids).where(alert_rules.c.workspace_id == workspace)
        )
        for row in rows.all():
            if channel_id in row.channel_ids:
                kept = [c for c in row.channel_ids if c != channel_id]
                conn.execute(update(alert_rules).where(alert_rules.c.id == row.id).values(channel_ids=kept))

    return write


def get_channel(conn: Connection, workspace: str, channel_id: str) -> ChannelRecord:
    row = conn.execute(
        select(notification_channels).where(
            notification_channels.c.id == channel_id, notification_channels.c.workspace_id == workspace
        )
    ).first()
    if row is None:
        raise ChannelNotFound(channel_id)
    return _channel(conn, row)


def list_channels(conn: Connection, workspace: str) -> list[ChannelRecord]:
    rows = conn.execute(
        select(notification_channels)
        .where(notification_channels.c.workspace_id == workspace)
        .order_by(notification_channels.c.created_at, notification_channels.c.id)
    ).all()
    return [_channel(conn, row) for row in rows]


def _channel(conn: Connection, row: Any) -> ChannelRecord:
    fields = conn.execute(
        select(channel_secrets.c.field)
        .where(channel_secrets.c.channel_id == row.id)
        .order_by(channel_secrets.c.field)
    ).scalars()
    return ChannelRecord(
        row.id,
        row.workspace_id,
        row.name,
        alerts.ChannelKind(row.kind),
        dict(row.config),
        tuple(fields),
        row.created_at,
        row.updated_at,
    )


def channel_secrets_of(conn: Connection, vault: Vault, channel: ChannelRecord) -> dict[str, Secret]:
    """The channel's secrets, decrypted, for the sender only."""
    return channel_vault.reveal(conn, vault, channel.workspace_id, channel.id)


# --- rules ----------------------------------------------------------------------------------------


def _check_rule_refs(conn: Connection, workspace: str, rule: alerts.Rule) -> None:
    """Every channel and the universe a rule names must be the workspace's (ChannelNotFound/LookupError)."""
    if rule.channel_ids:
        found = set(
            conn.execute(
                select(notification_channels.c.id).where(
                    notification_channels.c.workspace_id == workspace,
                    notification_channels.c.id.in_(list(rule.channel_ids)),
                )
            ).scalars()
        )
        missing = [c for c in rule.channel_ids if c not in found]
        if missing:
            raise ChannelNotFound(", ".join(missing))
    if rule.universe_id is not None:
        mine = conn.execute(
            select(universes.c.id).where(
                universes.c.id == rule.universe_id, universes.c.workspace_id == workspace
            )
        ).first()
        if mine is None:
            raise LookupError(rule.universe_id)


def _rule_values(name: str, rule: alerts.Rule) -> dict[str, Any]:
    """The columns a rule's definition fills, the same on create and replace."""
    return {
        "name": name,
        "kind": rule.kind.value,
        "universe_id": rule.universe_id,
        "params": rule.params(),
        "channel_ids": list(rule.channel_ids),
        "in_app": rule.in_app,
        "dedup_window_s": rule.dedup_window_s,
        "enabled": rule.enabled,
    }


def create_rule(workspace: str, name: str, rule: alerts.Rule, now: datetime) -> WriteFn[RuleRecord]:
    def write(conn: Connection) -> RuleRecord:
        _check_rule_refs(conn, workspace, rule)
        conn.execute(
            alert_rules.insert().values(
                id=rule.id, workspace_id=workspace, created_at=now, updated_at=now, **_rule_values(name, rule)
            )
        )
        return get_rule(conn, workspace, rule.id)

    return write


def replace_rule(workspace: str, name: str, rule: alerts.Rule, now: datetime) -> WriteFn[RuleRecord]:
    def write(conn: Connection) -> RuleRecord:
        get_rule(conn, workspace, rule.id)
        _check_rule_refs(conn, workspace, rule)
        conn.execute(
            update(alert_rules)
            .where(alert_rules.c.id == rule.id)
            .values(updated_at=now, **_rule_values(name, rule))
        )
        return get_rule(conn, workspace, rule.id)

    return write


def delete_rule(workspace: str, rule_id: str) -> WriteFn[None]:
    def write(conn: Connection) -> None:
        get_rule(conn, workspace, rule_id)
        conn.execute(delete(alert_rules).where(alert_rules.c.id == rule_id))

    return write


def _rule(row: Any) -> RuleRecord:
    rule = alerts.parse_rule(
        row.id,
        row.kind,
        channel_ids=list(row.channel_ids),
        in_app=bool(row.in_app),
        universe_id=row.universe_id,
        dedup_window_s=row.dedup_window_s,
        params=row.params,
        enabled=bool(row.enabled),
    )
    return RuleRecord(rule, row.workspace_id, row.name, row.created_at, row.updated_at)


def get_rule(conn: Connection, workspace: str, rule_id: str) -> RuleRecord:
    row = conn.execute(
        select(alert_rules).where(alert_rules.c.id == rule_id, alert_rules.c.workspace_id == workspace)
    ).first()
    if row is None:
        raise RuleNotFound(rule_id)
    return _rule(row)


def list_rules(
    conn: Connection, workspace: str | None = None, kinds: Sequence[str] | None = None
) -> list[RuleRecord]:
    query = select(alert_rules).order_by(alert_rules.c.created_at, alert_rules.c.id)
    if workspace is not None:
        query = query.where(alert_rules.c.workspace_id == workspace)
    if kinds is not None:
        query = query.where(alert_rules.c.kind.in_(list(kinds)))
    return [_rule(row) for row in conn.execute(query)]


# --- raising conditions ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Planned:
    """A delivery to make: to a channel, or (launch notify) to a bare target of a kind."""

    kind: str
    channel_id: str | None = None
    target: str | None = None


def _notify(
    conn: Connection,
    *,
    workspace: str,
    kind: str,
    dedup_key: str,
    message: alerts.Message,
    facts: Mapping[str, Any],
    in_app: bool,
    deliveries: Sequence[Planned],
    now: datetime,
    rule_id: str | None = None,
    launch_id: str | None = None,
) -> str:
    notification_id = new_id()
    conn.execute(
        notifications.insert().values(
            id=notification_id,
            workspace_id=workspace,
            rule_id=rule_id,
            launch_id=launch_id,
            kind=kind,
            dedup_key=dedup_key,
            title=message.title,
            body=message.text,
            facts=dict(facts),
            in_app=in_app,
            repeats=0,
            created_at=now,
            last_seen_at=now,
        )
    )
    for planned in deliveries:
        conn.execute(
            notification_deliveries.insert().values(
                id=new_id(),
                notification_id=notification_id,
                channel_id=planned.channel_id,
                kind=planned.kind,
                target=planned.target,
                status="pending",
                attempts=0,
                next_attempt_at=now,
                created_at=now,
            )
        )
    return notification_id


def _channel_kinds(conn: Connection, workspace: str, ids: Sequence[str]) -> dict[str, str]:
    if not ids:
        return {}
    rows = conn.execute(
        select(notification_channels.c.id, notification_channels.c.kind).where(
            notification_channels.c.workspace_id == workspace, notification_channels.c.id.in_(list(ids))
        )
    )
    return {row.id: row.kind for row in rows}


def raise_condition(conn: Connection, condition: alerts.Condition, now: datetime) -> list[str]:
    """Notify every matching rule of the condition's workspace, once per dedup window; returns the new
    notifications' ids (a suppressed repeat bumps `repeats` of the one it repeats)."""
    rules = [r.rule for r in list_rules(conn, condition.workspace_id, [condition.kind.value])]
    made: list[str] = []
    for rule in alerts.matching_rules(rules, condition):
        key = alerts.dedup_key(rule.id, condition)
        _insert_ignore(
            conn,
            alert_dedup,
            {"workspace_id": condition.workspace_id, "dedup_key": key, "notification_id": "", "sent_at": now},
        )
        query = select(alert_dedup).where(
            alert_dedup.c.workspace_id == condition.workspace_id, alert_dedup.c.dedup_key == key
        )
        if conn.dialect.name == "postgresql":
            query = query.with_for_update()
        held = conn.execute(query).one()
        last = None if held.notification_id == "" else held.sent_at
        if not alerts.should_notify(last, now, rule.dedup_window_s):
            conn.execute(
                update(notifications)
                .where(notifications.c.id == held.notification_id)
                .values(repeats=notifications.c.repeats + 1, last_seen_at=now)
            )
            continue
        kinds = _channel_kinds(conn, condition.workspace_id, rule.channel_ids)
        planned = [Planned(kinds[c], channel_id=c) for c in rule.channel_ids if c in kinds]
        notification_id = _notify(
            conn,
            workspace=condition.workspace_id,
            kind=condition.kind.value,
            dedup_key=key,
            message=alerts.render(condition),
            facts=condition.facts,
            in_app=rule.in_app,
            deliveries=planned,
            now=now,
            rule_id=rule.id,
            launch_id=condition.facts.get("launch_id"),
        )
        conn.execute(
            update(alert_dedup)
            .where(alert_dedup.c.workspace_id == condition.workspace_id, alert_dedup.c.dedup_key == key)
            .values(notification_id=notification_id, sent_at=now)
        )
        made.append(notification_id)
    return made


def finished_runs(conn: Connection, since: datetime, limit: int = 200) -> list[Any]:
    """Runs updated since `since`, not handled yet, that something cares about, oldest first: a failed or
    needs_attention run when its workspace has an enabled rule of that kind made before the run changed
    (a new rule does not replay the past hour), and an ended run of a launch with a `notify` list. Runs
    nobody cares about are never marked, so a workspace without rules and notify lists costs no writes."""
    marked = select(alert_marks.c.key).where(alert_marks.c.key == ("run:" + runs.c.id + ":" + runs.c.status))
    kind = case(
        (runs.c.status == "failed", alerts.RuleKind.RUN_FAILED.value),
        else_=alerts.RuleKind.RUN_NEEDS_ATTENTION.value,
    )
    ruled = (
        select(alert_rules.c.id)
        .where(
            alert_rules.c.workspace_id == universes.c.workspace_id,
            alert_rules.c.enabled.is_(True),
            alert_rules.c.kind == kind,
            alert_rules.c.created_at <= runs.c.updated_at,
        )
        .exists()
    )
    config = launches.c.config
    if conn.dialect.name == "postgresql":
        notify_count = func.jsonb_array_length(config.op("->")("notify"))
    else:
        notify_count = func.json_array_length(config, "$.notify")
    wanted = (runs.c.status.in_(["failed", "needs_attention"]) & ruled) | (
        runs.c.status.in_(sorted(alerts.FINISHED_RUN_STATUSES)) & (func.coalesce(notify_count, 0) > 0)
    )
    return list(
        conn.execute(
            select(runs.c.id, runs.c.status, runs.c.updated_at)
            .select_from(
                runs.join(universes, universes.c.id == runs.c.universe_id).outerjoin(
                    launches, launches.c.id == runs.c.launch_id
                )
            )
            .where(runs.c.updated_at >= since, wanted, ~marked.exists())
            .order_by(runs.c.updated_at, runs.c.id)
            .limit(limit)
        ).all()
    )


def handle_runs(found: Sequence[tuple[str, str]], now: datetime) -> WriteFn[list[str]]:
    """`handle_run` for each (run id, status), in one transaction (one commit for a page of runs)."""

    def write(conn: Connection) -> list[str]:
        return [made for run_id, status in found for made in handle_run(run_id, status, now)(conn)]

    return write


def any_due(conn: Connection, now: datetime) -> bool:
    """Whether a delivery is due and free (a read before `claim_due`'s write)."""
    d = notification_deliveries
    found = conn.execute(
        select(d.c.id)
        .where(
            d.c.status == "pending",
            d.c.next_attempt_at <= now,
            (d.c.lease_until.is_(None)) | (d.c.lease_until < now),
        )
        .limit(1)
    ).first()
    return found is not None


def any_marks_before(conn: Connection, before: datetime) -> bool:
    return (
        conn.execute(select(alert_marks.c.key).where(alert_marks.c.created_at < before).limit(1)).first()
        is not None
    )


def purge_marks(before: datetime) -> WriteFn[int]:
    """Forget marks made before `before`: their runs are older than the dispatcher's look-back."""

    def write(conn: Connection) -> int:
        return int(conn.execute(delete(alert_marks).where(alert_marks.c.created_at < before)).rowcount or 0)

    return write


def handle_run(run_id: str, status: str, now: datetime) -> WriteFn[list[str]]:
    """Once per (run, status): the run's condition through the rules, and its launch's `notify` list when
    it ended. Returns the notifications made (none when another process handled it first)."""

    def write(conn: Connection) -> list[str]:
        if not _insert_ignore(conn, alert_marks, {"key": f"run:{run_id}:{status}", "created_at": now}):
            return []
        row = conn.execute(
            select(
                runs.c.id,
                runs.c.status,
                runs.c.error,
                runs.c.launch_id,
                runs.c.universe_id,
                universes.c.workspace_id,
                universes.c.name,
            )
            .join(universes, universes.c.id == runs.c.universe_id)
            .where(runs.c.id == run_id)
        ).first()
        if row is None:  # deleted (with its universe) since it was listed: nothing to tell
            return []
        made: list[str] = []
        condition = alerts.run_condition(
            status,
            workspace_id=row.workspace_id,
            run_id=row.id,
            universe_id=row.universe_id,
            universe_name=row.name,
            error=row.error,
            launch_id=row.launch_id,
        )
        if condition is not None:
            made += raise_condition(conn, condition, now)
        if row.launch_id is not None and status in alerts.FINISHED_RUN_STATUSES:
            made += _launch_notify(conn, row, status, now)
        return made

    return write


def _launch_notify(conn: Connection, row: Any, status: str, now: datetime) -> list[str]:
    raw = conn.execute(select(launches.c.config).where(launches.c.id == row.launch_id)).scalar_one()
    config = parse_launch_config(raw)
    if not config.notify:
        return []
    channels = {c.id: c for c in list_channels(conn, row.workspace_id)}
    in_app = False
    planned: list[Planned] = []
    for entry in config.notify:
        if entry.channel is NotifyChannel.IN_APP:
            in_app = True
        elif entry.target in channels:  # a configured channel, by id
            planned.append(Planned(channels[entry.target].kind.value, channel_id=entry.target))
        else:
            planned.append(Planned(entry.channel.value, target=entry.target))
    message = alerts.run_finished_message(
        run_id=row.id, status=status, universe_name=row.name, launch_id=row.launch_id, error=row.error
    )
    facts = {
        "run_id": row.id,
        "universe_id": row.universe_id,
        "universe_name": row.name,
        "launch_id": row.launch_id,
        "status": status,
    }
    return [
        _notify(
            conn,
            workspace=row.workspace_id,
            kind="run_finished",
            dedup_key=f"launch:{row.launch_id}:run:{row.id}",
            message=message,
            facts=facts,
            in_app=in_app,
            deliveries=planned,
            now=now,
            launch_id=row.launch_id,
        )
    ]


def is_due(conn: Connection, condition: alerts.Condition, now: datetime) -> bool:
    """Whether `raise_condition` would notify any rule now (a read: the dispatcher skips the write for a
    condition that persists inside its window, so a steady condition does not write every round)."""
    rules = [r.rule for r in list_rules(conn, condition.workspace_id, [condition.kind.value])]
    for rule in alerts.matching_rules(rules, condition):
        sent = conn.execute(
            select(alert_dedup.c.sent_at, alert_dedup.c.notification_id).where(
                alert_dedup.c.workspace_id == condition.workspace_id,
                alert_dedup.c.dedup_key == alerts.dedup_key(rule.id, condition),
            )
        ).first()
        last = None if sent is None or sent.notification_id == "" else sent.sent_at
        if alerts.should_notify(last, now, rule.dedup_window_s):
            return True
    return False


def raise_once(condition: alerts.Condition, now: datetime) -> WriteFn[list[str]]:
    return lambda conn: raise_condition(conn, condition, now)


# --- deliveries -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DueDelivery:
    id: str
    notification_id: str
    workspace_id: str
    kind: str
    channel_id: str | None
    target: str | None
    attempts: int
    title: str
    body: str
    facts: dict[str, Any]
    notification_kind: str
    created_at: datetime


def claim_due(owner: str, now: datetime, lease: timedelta, limit: int = 20) -> WriteFn[list[DueDelivery]]:
    """Pending deliveries due now whose lease is free, leased to `owner` (one sender across processes)."""

    def write(conn: Connection) -> list[DueDelivery]:
        d = notification_deliveries
        query = (
            select(d.c.id)
            .where(
                d.c.status == "pending",
                d.c.next_attempt_at <= now,
                (d.c.lease_until.is_(None)) | (d.c.lease_until < now),
            )
            .order_by(d.c.next_attempt_at, d.c.id)
            .limit(limit)
        )
        if conn.dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True)
        ids = list(conn.execute(query).scalars())
        if not ids:
            return []
        conn.execute(update(d).where(d.c.id.in_(ids)).values(lease_owner=owner, lease_until=now + lease))
        rows = conn.execute(
            select(
                d,
                notifications.c.workspace_id,
                notifications.c.title,
                notifications.c.body,
                notifications.c.facts,
                notifications.c.kind.label("notification_kind"),
                notifications.c.created_at.label("notified_at"),
            )
            .join(notifications, notifications.c.id == d.c.notification_id)
            .where(d.c.id.in_(ids))
            .order_by(d.c.next_attempt_at, d.c.id)
        )
        return [
            DueDelivery(
                r.id,
                r.notification_id,
                r.workspace_id,
                r.kind,
                r.channel_id,
                r.target,
                r.attempts,
                r.title,
                r.body,
                dict(r.facts),
                r.notification_kind,
                r.notified_at,
            )
            for r in rows
        ]

    return write


def finish_delivery(
    delivery_id: str, owner: str, *, error: str | None, now: datetime
) -> WriteFn[alerts.DeliveryStatus]:
    """Record one attempt: sent, or failed with `error` (tried again later, or given up after
    MAX_ATTEMPTS). Only the lease holder's result counts."""

    def write(conn: Connection) -> alerts.DeliveryStatus:
        d = notification_deliveries
        row = conn.execute(select(d.c.attempts, d.c.lease_owner).where(d.c.id == delivery_id)).one()
        if row.lease_owner != owner:
            return alerts.DeliveryStatus.PENDING
        attempts = int(row.attempts) + 1
        values: dict[str, Any] = {"attempts": attempts, "lease_owner": None, "lease_until": None}
        if error is None:
            values.update(status="sent", sent_at=now, last_error=None, next_attempt_at=None)
            status = alerts.DeliveryStatus.SENT
        else:
            delay = alerts.retry_delay_s(attempts)
            values["last_error"] = error
            if delay is None:
                values.update(status="failed", next_attempt_at=None)
                status = alerts.DeliveryStatus.FAILED
            else:
                values["next_attempt_at"] = now + timedelta(seconds=delay)
                status = alerts.DeliveryStatus.PENDING
        conn.execute(update(d).where(d.c.id == delivery_id).values(**values))
        return status

    return write


def deliveries_of(conn: Connection, notification_ids: Sequence[str]) -> dict[str, list[Any]]:
    if not notification_ids:
        return {}
    d = notification_deliveries
    rows = conn.execute(
        select(
            d.c.id,
            d.c.notification_id,
            d.c.channel_id,
            d.c.kind,
            d.c.status,
            d.c.attempts,
            d.c.last_error,
            d.c.sent_at,
        )
        .where(d.c.notification_id.in_(list(notification_ids)))
        .order_by(d.c.id)
    )
    out: dict[str, list[Any]] = {}
    for row in rows:
        out.setdefault(row.notification_id, []).append(row)
    return out
