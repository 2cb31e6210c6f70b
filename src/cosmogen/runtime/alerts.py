"""The alert dispatcher of a serving process: watches for conditions, makes notifications, delivers them.

Three loops, started by `cosmogen serve` (api/app.py) and stopped with the runtime:
- runs: every `poll_s`, runs that failed, need attention or ended (updated within `lookback`) and have no
  mark yet go through `alerts_store.handle_run`, once across processes (the mark's primary key);
- conditions: every `conditions_every_s`, OAuth accounts (refresh failures, lost or expiring grants),
  error rates of universes with an error-rate rule, and limiter keys a provider's 429 blocked;
- deliveries: pending deliveries that are due are leased, sent (integrations/alert_senders.py) and
  recorded; a failure is tried again after domain.alerts.retry_delay_s, up to MAX_ATTEMPTS.

`test_send` sends a test message through one channel at once and raises DeliveryFailed if it fails (the
API's test-send button).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, func, select

from cosmogen.domain import alerts
from cosmogen.domain.live_metrics import COMPLETED_CALLS, FAILED_CALLS
from cosmogen.integrations.alert_senders import DeliveryFailed, Outgoing, Senders
from cosmogen.integrations.secret import Secret
from cosmogen.runtime import alerts_store as store
from cosmogen.store import Database, new_id
from cosmogen.store.tables import accounts, credentials, effects, rate_limits, runs, universes
from cosmogen.store.writer import GroupCommitWriter

log = logging.getLogger(__name__)

_ACCOUNT_KINDS = (alerts.RuleKind.TOKEN_REFRESH_FAILED.value, alerts.RuleKind.GRANT_EXPIRING.value)


class AlertDispatcher:
    def __init__(
        self,
        db: Database,
        writer: GroupCommitWriter,
        senders: Senders,
        open_vault: Callable[[], Any],
        now: Callable[[], datetime],
        *,
        owner: str,
        poll_s: float = 1.0,
        conditions_every_s: float = 30.0,
        lookback: timedelta = timedelta(hours=1),
        lease: timedelta = timedelta(seconds=60),
    ) -> None:
        self._db = db
        self._writer = writer
        self.senders = senders
        self._open_vault = open_vault
        self._now = now
        self._owner = owner
        self._poll_s = poll_s
        self._conditions_every_s = conditions_every_s
        self._lookback = lookback
        self._lease = lease
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        for name, loop in (
            ("alerts-runs", self._runs_loop),
            ("alerts-deliveries", self._deliveries_loop),
            ("alerts-conditions", self._conditions_loop),
        ):
            self._tasks.append(asyncio.create_task(self._forever(name, loop), name=name))

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    async def _forever(self, name: str, step: Callable[[], Any]) -> None:
        while True:
            try:
                wait = await step()
            except Exception:  # a database hiccup: the next round tries again
                log.exception("%s: a round failed", name)
                wait = self._poll_s
            await asyncio.sleep(wait)

    # --- watching ---------------------------------------------------------------------------------

    async def _runs_loop(self) -> float:
        await self.scan_runs()
        return self._poll_s

    async def scan_runs(self) -> int:
        """Handle every run that reached a status worth telling since the last look; returns how many."""
        since = self._now() - self._lookback
        found = await asyncio.to_thread(self._read, lambda c: store.finished_runs(c, since))
        if found:
            await self._writer.write(store.handle_runs([(row.id, row.status) for row in found], self._now()))
        return len(found)

    async def _conditions_loop(self) -> float:
        await self.scan_conditions()
        return self._conditions_every_s

    async def scan_conditions(self) -> int:
        """Raise the account, error-rate and saturation conditions seen now that are due (not notified
        within their rule's window); returns how many. A condition that persists inside its window is not
        counted as a repeat: `repeats` counts runs."""
        now = self._now()
        old = now - 2 * self._lookback  # marks older than this are of runs the run loop no longer reads

        def look(conn: Connection) -> tuple[list[alerts.Condition], bool]:
            seen = _conditions(conn, now)
            return [c for c in seen if store.is_due(conn, c, now)], store.any_marks_before(conn, old)

        # Reads first, writes only for what is due: an idle or steady server does not write every round
        # (on SQLite every write takes the one write lock).
        due, stale = await asyncio.to_thread(self._read, look)
        for condition in due:
            await self._writer.write(store.raise_once(condition, now))
        if stale:
            await self._writer.write(store.purge_marks(old))
        return len(due)

    def _read(self, fn: Callable[[Connection], Any]) -> Any:
        with self._db.engine.connect() as conn:
            return fn(conn)

    # --- delivering -------------------------------------------------------------------------------

    async def _deliveries_loop(self) -> float:
        sent = await self.deliver_due()
        return 0.0 if sent else self._poll_s

    async def deliver_due(self) -> int:
        """Send the deliveries due now (those this process leased); returns how many were tried."""
        if not await asyncio.to_thread(self._read, lambda c: store.any_due(c, self._now())):
            return 0  # a read, so an idle server takes no write lock every round
        due = await self._writer.write(store.claim_due(self._owner, self._now(), self._lease))
        for delivery in due:
            error = None
            try:
                await self._send(delivery)
            except DeliveryFailed as exc:
                error = f"{exc.message}; {exc.hint}"
                log.warning("delivery %s (%s) failed: %s", delivery.id, delivery.kind, exc.message)
            except Exception as exc:  # e.g. the vault cannot open: counted as an attempt, not retried forever
                error = (
                    f"an internal error ({type(exc).__name__}); see the server log for delivery {delivery.id}"
                )
                log.exception("delivery %s (%s) failed unexpectedly", delivery.id, delivery.kind)
            await self._writer.write(
                store.finish_delivery(delivery.id, self._owner, error=error, now=self._now())
            )
        return len(due)

    async def _send(self, delivery: store.DueDelivery) -> None:
        message = Outgoing(
            delivery.id,
            delivery.notification_id,
            delivery.notification_kind,
            delivery.title,
            delivery.body,
            delivery.facts,
            delivery.created_at,
        )
        workspace = delivery.workspace_id
        if delivery.channel_id is not None:
            channel, secrets = await asyncio.to_thread(self._channel, workspace, delivery.channel_id)
            await self._through(channel, secrets, message)
            return
        target = delivery.target or ""
        if delivery.kind == "webhook":
            await self.senders.webhook(target, message, None)
        elif delivery.kind in ("slack", "email"):
            # A launch's notify target without a channel: the workspace's first channel of that kind says
            # which Slack account, or which SMTP server, to use; the target is the Slack channel or address.
            channel, secrets = await asyncio.to_thread(self._first_of_kind, workspace, delivery.kind)
            if delivery.kind == "slack":
                await self.senders.slack(workspace, str(channel.config["account_id"]), target, message)
            else:
                await self.senders.email(channel.config, secrets.get("password"), [target], message)
        else:
            raise DeliveryFailed(
                f"{delivery.kind} delivery is not supported",
                "use a webhook channel (Teams: an incoming-webhook URL) instead",
            )

    async def _through(
        self, channel: store.ChannelRecord, secrets: dict[str, Secret], message: Outgoing
    ) -> None:
        config = channel.config
        if channel.kind is alerts.ChannelKind.WEBHOOK:
            await self.senders.webhook(str(config["url"]), message, secrets.get("signing_secret"))
        elif channel.kind is alerts.ChannelKind.SLACK:
            await self.senders.slack(
                channel.workspace_id, str(config["account_id"]), str(config["channel"]), message
            )
        else:
            await self.senders.email(config, secrets.get("password"), list(config["to"]), message)

    def _channel(self, workspace: str, channel_id: str) -> tuple[store.ChannelRecord, dict[str, Secret]]:
        with self._db.engine.connect() as conn:
            try:
                channel = store.get_channel(conn, workspace, channel_id)
            except store.ChannelNotFound:
                raise DeliveryFailed(
                    "the channel was deleted", "nothing to do; the rule no longer lists it"
                ) from None
            return channel, self._secrets(conn, channel)

    def _first_of_kind(self, workspace: str, kind: str) -> tuple[store.ChannelRecord, dict[str, Secret]]:
        with self._db.engine.connect() as conn:
            found = [c for c in store.list_channels(conn, workspace) if c.kind.value == kind]
            if not found:
                raise DeliveryFailed(
                    f"the launch notifies {kind}, and the workspace has no {kind} channel to send through",
                    f"create a {kind} channel (POST /api/v1/alerts/channels), or name one by id as target",
                )
            return found[0], self._secrets(conn, found[0])

    def _secrets(self, conn: Connection, channel: store.ChannelRecord) -> dict[str, Secret]:
        if not channel.secrets_set:
            return {}
        return store.channel_secrets_of(conn, self._open_vault(), channel)

    async def test_send(self, workspace: str, channel_id: str, requested_by: str) -> None:
        """Send a test message through the channel now; raises DeliveryFailed (also for a channel that is
        not the workspace's: the route looks it up first and answers 404)."""
        channel, secrets = await asyncio.to_thread(self._channel, workspace, channel_id)
        now = self._now()
        message = Outgoing(
            new_id(),
            new_id(),
            "test",
            f"Test from cosmogen: {channel.name}",
            f"This is a test of the {channel.kind.value} channel {channel.name!r}, sent by {requested_by}.",
            {"channel_id": channel.id, "test": True},
            now,
        )
        await self._through(channel, secrets, message)


# --- conditions from the store ---------------------------------------------------------------------


def _conditions(conn: Connection, now: datetime) -> list[alerts.Condition]:
    kinds: dict[str, set[str]] = {}
    rules = store.list_rules(conn)
    for record in rules:
        if record.rule.enabled:
            kinds.setdefault(record.rule.kind.value, set()).add(record.workspace_id)
    found: list[alerts.Condition] = []
    account_workspaces = set().union(*(kinds.get(k, set()) for k in _ACCOUNT_KINDS))
    if account_workspaces:
        horizon = max(
            (r.rule.horizon_s for r in rules if r.rule.kind is alerts.RuleKind.GRANT_EXPIRING), default=0
        )
        found += _account_conditions(conn, sorted(account_workspaces), now, timedelta(seconds=horizon))
    for record in rules:
        rule = record.rule
        if rule.enabled and rule.kind is alerts.RuleKind.ERROR_RATE and rule.threshold is not None:
            found += _error_rates(conn, record.workspace_id, rule, now)
    saturated = kinds.get(alerts.RuleKind.RATE_LIMIT_SATURATED.value)
    if saturated:
        found += _saturation(conn, saturated, now)
    # One condition per (kind, workspace, subject): two error-rate rules over one universe see it once.
    unique = {(c.kind, c.workspace_id, c.subject): c for c in found}
    return list(unique.values())


def _account_conditions(
    conn: Connection, workspaces: list[str], now: datetime, horizon: timedelta
) -> list[alerts.Condition]:
    refreshable = (
        select(credentials.c.account_id)
        .where(credentials.c.account_id == accounts.c.id, credentials.c.field == "refresh_token")
        .exists()
    )
    rows = conn.execute(
        select(
            accounts.c.id,
            accounts.c.workspace_id,
            accounts.c.name,
            accounts.c.provider,
            accounts.c.status,
            accounts.c.last_error,
            accounts.c.token_expires_at,
            refreshable.label("can_refresh"),
        ).where(
            accounts.c.workspace_id.in_(workspaces),
            accounts.c.auth_kind == "oauth2",
            accounts.c.status.in_(("connected", "expired", "error")),
        )
    )
    found = []
    for row in rows:
        condition = alerts.token_condition(
            workspace_id=row.workspace_id,
            account_id=row.id,
            account_name=row.name,
            provider=row.provider,
            status=row.status,
            last_error=row.last_error,
            token_expires_at=row.token_expires_at,
            can_refresh=bool(row.can_refresh),
            now=now,
            horizon=horizon,
        )
        if condition is not None:
            found.append(condition)
    return found


def _error_rates(
    conn: Connection, workspace: str, rule: alerts.Rule, now: datetime
) -> list[alerts.Condition]:
    since = now - timedelta(seconds=rule.window_s)
    query = (
        select(universes.c.id, universes.c.name, effects.c.status, func.count())
        .select_from(
            effects.join(runs, runs.c.id == effects.c.run_id).join(
                universes, universes.c.id == runs.c.universe_id
            )
        )
        .where(
            universes.c.workspace_id == workspace,
            effects.c.completed_at >= since,
            effects.c.status.in_(sorted(COMPLETED_CALLS)),
        )
        .group_by(universes.c.id, universes.c.name, effects.c.status)
    )
    if rule.universe_id is not None:
        query = query.where(universes.c.id == rule.universe_id)
    totals: dict[tuple[str, str], list[int]] = {}
    for universe_id, name, status, count in conn.execute(query):
        counts = totals.setdefault((universe_id, name), [0, 0])
        counts[1] += int(count)
        if status in FAILED_CALLS:
            counts[0] += int(count)
    assert rule.threshold is not None
    found = []
    for (universe_id, name), (failed, completed) in totals.items():
        condition = alerts.error_rate_condition(
            workspace_id=workspace,
            universe_id=universe_id,
            universe_name=name,
            failed=failed,
            completed=completed,
            threshold=rule.threshold,
            min_calls=rule.min_calls,
            window_s=rule.window_s,
        )
        if condition is not None:
            found.append(condition)
    return found


def _saturation(conn: Connection, workspaces: set[str], now: datetime) -> list[alerts.Condition]:
    rows = conn.execute(
        select(rate_limits.c.key, rate_limits.c.blocked_until).where(
            rate_limits.c.blocked_until > now.timestamp()
        )
    ).all()
    if not rows:
        return []
    # Limiter keys are "provider:account[:endpoint]": the account says whose workspace it is.
    account_ids = {row.key.split(":")[1] for row in rows if row.key.count(":") >= 1}
    owners = dict(
        conn.execute(
            select(accounts.c.id, accounts.c.workspace_id).where(accounts.c.id.in_(sorted(account_ids)))
        ).all()
    )
    found = []
    for row in rows:
        parts = row.key.split(":")
        workspace = owners.get(parts[1]) if len(parts) > 1 else None
        if workspace is None or workspace not in workspaces:
            continue
        until = datetime.fromtimestamp(float(row.blocked_until), UTC)
        condition = alerts.saturation_condition(
            workspace_id=workspace, key=row.key, blocked_until=until, now=now
        )
        if condition is not None:
            found.append(condition)
    return found
