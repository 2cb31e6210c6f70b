"""Launches and their triggers in the database: write functions for the group-commit writer, and reads.

A launch pins (universe, version, config) and owns its triggers. Status changes go through
domain.launches.apply_action, so the rules live in one place; each write also brings the universe's
`deployment_status` in step with its most active launch, in the same commit.

Webhook tokens are made here and returned once (CreatedLaunch.webhook_tokens); only their sha256 is
stored, so a copy of the database cannot fire webhooks. A signed webhook trigger also gets an HMAC signing
secret, sealed by the vault in the same transaction and returned once (CreatedLaunch.webhook_secrets);
`rotate_webhook_secret` replaces it, `reveal_webhook_secrets` is the one read back.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import Connection, Row, delete, select, update

from cosmogen.domain.launches import (
    LaunchAction,
    LaunchConfig,
    LaunchConfigError,
    LaunchStatus,
    apply_action,
    config_problems_for_document,
    parse_launch_config,
    universe_deployment_status,
)
from cosmogen.domain.runs import RunStatus
from cosmogen.domain.schedule import (
    CronSpec,
    IntervalSpec,
    TriggerSpec,
    WebhookSpec,
    next_fire,
    parse_trigger_spec,
)
from cosmogen.integrations import webhook_secrets as signing
from cosmogen.integrations.secret import Secret
from cosmogen.integrations.vault import Vault
from cosmogen.store.tables import (
    launches,
    new_id,
    runs,
    trigger_fires,
    triggers,
    universe_versions,
    universes,
    utcnow,
)
from cosmogen.store.workspace_events import announce_launch
from cosmogen.store.writer import WriteFn

# Runs that still count: in flight for overlap, and cancelled when their launch stops.
NON_TERMINAL_RUN_STATUSES = tuple(s.value for s in RunStatus if not s.terminal)


class StartRun(Protocol):
    """The seam through which triggers start runs: Runtime.start_run has this shape. `config` is the
    launch's config (LaunchConfig.to_dict()); the run applies its entry_node and telemetry_level."""

    async def __call__(
        self,
        universe_id: str,
        version_id: str,
        *,
        event: dict[str, Any],
        dry_run: bool,
        launch_id: str | None,
        trigger_id: str | None,
        config: Mapping[str, Any] | None = None,
    ) -> str: ...


class LaunchNotFound(LookupError):
    """No launch with that id."""


@dataclass(frozen=True, slots=True)
class TriggerRecord:
    id: str
    launch_id: str
    spec: TriggerSpec
    next_fire_at: datetime | None
    last_fired_at: datetime | None
    enabled: bool

    @property
    def kind(self) -> str:
        return self.spec.kind.value


@dataclass(frozen=True, slots=True)
class LaunchRecord:
    id: str
    universe_id: str
    version_id: str
    config: LaunchConfig
    status: LaunchStatus
    created_at: datetime
    updated_at: datetime
    stopped_at: datetime | None
    triggers: tuple[TriggerRecord, ...]


@dataclass(frozen=True, slots=True)
class CreatedLaunch:
    launch: LaunchRecord
    # trigger id -> the webhook's path token. Shown once: only its hash is stored.
    webhook_tokens: dict[str, str]
    # trigger id -> the signed webhook's signing secret. Shown once: it is stored sealed.
    webhook_secrets: dict[str, Secret] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class StoppedLaunch:
    launch: LaunchRecord
    # Runs of this launch that had not finished; the caller cancels them (Runtime.act(id, CANCEL)).
    unfinished_run_ids: list[str]


@dataclass(frozen=True, slots=True)
class WebhookTarget:
    trigger_id: str
    workspace_id: str
    signed: bool  # deliveries must carry a valid X-Cosmogen-Signature
    idempotency_key_required: bool
    enabled: bool
    launch_id: str
    launch_status: LaunchStatus
    universe_id: str
    version_id: str
    dry_run: bool
    config: dict[str, Any]  # the launch's config, for the run (LaunchConfig.to_dict())


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


# --- writes ---------------------------------------------------------------------------------------


def create_launch(
    universe_id: str,
    version_id: str,
    config: LaunchConfig,
    trigger_specs: Sequence[TriggerSpec] = (),
    *,
    now: datetime | None = None,
    vault: Vault | None = None,
) -> WriteFn[CreatedLaunch]:
    """A draft launch of `version_id` with its triggers. Raises LookupError for an unknown version (or one
    of another universe) and LaunchConfigError when the config names nodes or bindings it does not have.
    Signed webhook triggers need the `vault`, which seals their signing secrets."""
    # Ids, tokens, secrets and the time are drawn here, not in `write`: the writer may run `write` twice.
    at = now or utcnow()
    launch_id = new_id()
    planned = [
        (new_id(), spec, secrets.token_urlsafe(32) if isinstance(spec, WebhookSpec) else None)
        for spec in trigger_specs
    ]
    signing_secrets = {
        trigger_id: (new_id(), signing.new_signing_secret())
        for trigger_id, spec, _ in planned
        if isinstance(spec, WebhookSpec) and spec.signed
    }
    if signing_secrets and vault is None:
        raise ValueError("signed webhook triggers need the vault to seal their signing secrets; pass vault=")

    def write(conn: Connection) -> CreatedLaunch:
        version = conn.execute(
            select(universe_versions.c.universe_id, universe_versions.c.document).where(
                universe_versions.c.id == version_id
            )
        ).first()
        if version is None or version.universe_id != universe_id:
            raise LookupError(f"universe {universe_id!r} has no version {version_id!r}; save a version first")
        problems = config_problems_for_document(config, *_document_ids(version.document))
        if problems:
            raise LaunchConfigError(problems)
        conn.execute(
            launches.insert().values(
                id=launch_id,
                universe_id=universe_id,
                version_id=version_id,
                config=config.to_dict(),
                status=LaunchStatus.DRAFT.value,
                created_at=at,
                updated_at=at,
            )
        )
        for trigger_id, spec, token in planned:
            conn.execute(
                triggers.insert().values(
                    id=trigger_id,
                    launch_id=launch_id,
                    kind=spec.kind.value,
                    spec=spec.to_dict(),
                    webhook_token_hash=None if token is None else hash_token(token),
                    enabled=True,
                )
            )
        if signing_secrets:
            assert vault is not None
            workspace = _workspace_of_universe(conn, universe_id)
            for trigger_id, (secret_id, value) in signing_secrets.items():
                signing.seal_secret(
                    conn,
                    vault,
                    workspace=workspace,
                    trigger_id=trigger_id,
                    secret_id=secret_id,
                    value=value,
                    now=at,
                )
        _sync_universe(conn, universe_id)
        tokens = {trigger_id: token for trigger_id, _, token in planned if token is not None}
        shown = {trigger_id: value for trigger_id, (_, value) in signing_secrets.items()}
        announce_launch(conn, launch_id)
        return CreatedLaunch(get_launch(conn, launch_id), tokens, shown)

    return write


def rotate_webhook_secret(
    vault: Vault, trigger_id: str, *, grace: timedelta = signing.DEFAULT_GRACE, now: datetime | None = None
) -> WriteFn[Secret]:
    """A new signing secret for a webhook trigger, returned once. The one it replaces stays valid for
    `grace` (0: ends now; any older one ends now), so at most two are valid at once. An unsigned trigger
    (made before signing existed, or with "signed": false) becomes signed: from now on it requires
    signatures. Raises signing.NoSuchWebhook."""
    at = now or utcnow()
    secret_id = new_id()
    value = signing.new_signing_secret()

    def write(conn: Connection) -> Secret:
        workspace = signing.workspace_of_trigger(conn, trigger_id)
        signing.retire_current(conn, trigger_id, now=at, grace=grace)
        signing.seal_secret(
            conn, vault, workspace=workspace, trigger_id=trigger_id, secret_id=secret_id, value=value, now=at
        )
        spec = parse_trigger_spec(
            conn.execute(select(triggers.c.spec).where(triggers.c.id == trigger_id)).scalar_one()
        )
        assert isinstance(spec, WebhookSpec)
        if not spec.signed:
            signed = WebhookSpec(signed=True, idempotency_key=spec.idempotency_key)
            conn.execute(update(triggers).where(triggers.c.id == trigger_id).values(spec=signed.to_dict()))
        return value

    return write


def go_live(launch_id: str, *, now: datetime | None = None) -> WriteFn[LaunchRecord]:
    """draft -> live; every scheduled trigger's first tick is planned from `now`."""
    return _transition(launch_id, LaunchAction.GO_LIVE, now or utcnow())


def resume(launch_id: str, *, now: datetime | None = None) -> WriteFn[LaunchRecord]:
    """paused -> live; ticks are planned from `now`, so the pause itself does not count as missed ticks."""
    return _transition(launch_id, LaunchAction.RESUME, now or utcnow())


def pause(launch_id: str, *, now: datetime | None = None) -> WriteFn[LaunchRecord]:
    """live -> paused: no new runs start; the triggers stay, runs in flight finish."""
    return _transition(launch_id, LaunchAction.PAUSE, now or utcnow())


def archive(launch_id: str, *, now: datetime | None = None) -> WriteFn[LaunchRecord]:
    """draft or paused -> archived (read-only)."""
    return _transition(launch_id, LaunchAction.ARCHIVE, now or utcnow())


def stop(launch_id: str, *, now: datetime | None = None) -> WriteFn[StoppedLaunch]:
    """live or paused -> draft: the triggers stop; returns the unfinished runs for the caller to cancel."""
    transition = _transition(launch_id, LaunchAction.STOP, now or utcnow())

    def write(conn: Connection) -> StoppedLaunch:
        record = transition(conn)
        rows = conn.execute(
            select(runs.c.id)
            .where(runs.c.launch_id == launch_id, runs.c.status.in_(NON_TERMINAL_RUN_STATUSES))
            .order_by(runs.c.created_at, runs.c.id)
        )
        return StoppedLaunch(record, [row.id for row in rows])

    return write


def _transition(launch_id: str, action: LaunchAction, now: datetime) -> WriteFn[LaunchRecord]:
    def write(conn: Connection) -> LaunchRecord:
        row = conn.execute(
            select(launches.c.status, launches.c.universe_id)
            .where(launches.c.id == launch_id)
            .with_for_update()
        ).first()
        if row is None:
            raise LaunchNotFound(f"no launch {launch_id!r}")
        target = apply_action(LaunchStatus(row.status), action)
        values: dict[str, Any] = {"status": target.value, "updated_at": now}
        if action is LaunchAction.STOP:
            values["stopped_at"] = now
        conn.execute(update(launches).where(launches.c.id == launch_id).values(**values))
        if target is LaunchStatus.LIVE:
            _plan_first_ticks(conn, launch_id, now)
        else:
            # Not live: nothing is planned, and a tick waiting for a run to finish is dropped with it.
            conn.execute(update(triggers).where(triggers.c.launch_id == launch_id).values(next_fire_at=None))
            trigger_ids = select(triggers.c.id).where(triggers.c.launch_id == launch_id)
            conn.execute(
                delete(trigger_fires).where(
                    trigger_fires.c.trigger_id.in_(trigger_ids), trigger_fires.c.status == "deferred"
                )
            )
        _sync_universe(conn, str(row.universe_id))
        announce_launch(conn, launch_id)
        return get_launch(conn, launch_id)

    return write


def _plan_first_ticks(conn: Connection, launch_id: str, now: datetime) -> None:
    rows = conn.execute(
        select(triggers.c.id, triggers.c.spec).where(
            triggers.c.launch_id == launch_id, triggers.c.kind.in_(("cron", "interval"))
        )
    )
    for row in rows.all():
        spec = parse_trigger_spec(row.spec)
        assert isinstance(spec, CronSpec | IntervalSpec)
        conn.execute(
            update(triggers).where(triggers.c.id == row.id).values(next_fire_at=next_fire(spec, now))
        )


def _sync_universe(conn: Connection, universe_id: str) -> None:
    statuses = conn.execute(select(launches.c.status).where(launches.c.universe_id == universe_id)).scalars()
    status = universe_deployment_status(LaunchStatus(s) for s in statuses)
    conn.execute(
        update(universes)
        .where(universes.c.id == universe_id, universes.c.deployment_status != status.value)
        .values(deployment_status=status.value)
    )


def _workspace_of_universe(conn: Connection, universe_id: str) -> str:
    return str(
        conn.execute(select(universes.c.workspace_id).where(universes.c.id == universe_id)).scalar_one()
    )


def _document_ids(document: Any) -> tuple[set[str], set[str]]:
    """Node ids and binding ids of a saved universe document (universe/1)."""

    def ids(key: str) -> set[str]:
        items = document.get(key) if isinstance(document, dict) else None
        return {str(i["id"]) for i in items or [] if isinstance(i, dict) and "id" in i}

    return ids("nodes"), ids("bindings")


# --- reads ----------------------------------------------------------------------------------------


def get_launch(conn: Connection, launch_id: str) -> LaunchRecord:
    row = conn.execute(select(launches).where(launches.c.id == launch_id)).first()
    if row is None:
        raise LaunchNotFound(f"no launch {launch_id!r}")
    return _launch(row, _triggers_of(conn, [launch_id]).get(launch_id, ()))


def list_launches(
    conn: Connection, *, universe_id: str | None = None, status: LaunchStatus | None = None
) -> list[LaunchRecord]:
    """Launches, newest first, optionally of one universe and/or in one status."""
    query = select(launches).order_by(launches.c.created_at.desc(), launches.c.id.desc())
    if universe_id is not None:
        query = query.where(launches.c.universe_id == universe_id)
    if status is not None:
        query = query.where(launches.c.status == status.value)
    rows = conn.execute(query).all()
    by_launch = _triggers_of(conn, [row.id for row in rows])
    return [_launch(row, by_launch.get(row.id, ())) for row in rows]


def find_webhook(conn: Connection, token: str) -> WebhookTarget | None:
    """The webhook trigger whose token this is, with its launch; None if there is none."""
    row = conn.execute(
        select(
            triggers.c.id,
            triggers.c.enabled,
            triggers.c.spec,
            launches.c.id.label("launch_id"),
            launches.c.status,
            launches.c.universe_id,
            launches.c.version_id,
            launches.c.config,
            universes.c.workspace_id,
        )
        .join(launches, launches.c.id == triggers.c.launch_id)
        .join(universes, universes.c.id == launches.c.universe_id)
        .where(triggers.c.webhook_token_hash == hash_token(token), triggers.c.kind == "webhook")
    ).first()
    if row is None:
        return None
    config = parse_launch_config(row.config)
    spec = parse_trigger_spec(row.spec)
    assert isinstance(spec, WebhookSpec)
    return WebhookTarget(
        trigger_id=row.id,
        workspace_id=row.workspace_id,
        signed=spec.signed,
        idempotency_key_required=spec.idempotency_key == "required",
        enabled=bool(row.enabled),
        launch_id=row.launch_id,
        launch_status=LaunchStatus(row.status),
        universe_id=row.universe_id,
        version_id=row.version_id,
        dry_run=config.dry_run,
        config=config.to_dict(),
    )


@dataclass(frozen=True, slots=True)
class RevealedSecret:
    secret: Secret
    expires_at: datetime | None  # None: the current secret


def reveal_webhook_secrets(
    conn: Connection, vault: Vault, trigger_id: str, *, now: datetime | None = None
) -> list[RevealedSecret]:
    """The trigger's valid signing secrets, current first, decrypted (for `reveal-webhook-secret` only).
    Raises signing.NoSuchWebhook."""
    workspace = signing.workspace_of_trigger(conn, trigger_id)
    return [
        RevealedSecret(signing.unseal(vault, workspace, trigger_id, sealed), sealed.expires_at)
        for sealed in signing.sealed_secrets(conn, trigger_id, now or utcnow())
    ]


def _triggers_of(conn: Connection, launch_ids: Sequence[str]) -> dict[str, tuple[TriggerRecord, ...]]:
    if not launch_ids:
        return {}
    rows = conn.execute(
        select(triggers).where(triggers.c.launch_id.in_(list(launch_ids))).order_by(triggers.c.id)
    )
    found: dict[str, list[TriggerRecord]] = {}
    for row in rows:
        found.setdefault(row.launch_id, []).append(
            TriggerRecord(
                id=row.id,
                launch_id=row.launch_id,
                spec=parse_trigger_spec(row.spec),
                next_fire_at=row.next_fire_at,
                last_fired_at=row.last_fired_at,
                enabled=bool(row.enabled),
            )
        )
    return {launch_id: tuple(records) for launch_id, records in found.items()}


def _launch(row: Row[Any], trigger_records: tuple[TriggerRecord, ...]) -> LaunchRecord:
    return LaunchRecord(
        id=row.id,
        universe_id=row.universe_id,
        version_id=row.version_id,
        config=parse_launch_config(row.config),
        status=LaunchStatus(row.status),
        created_at=row.created_at,
        updated_at=row.updated_at,
        stopped_at=row.stopped_at,
        triggers=trigger_records,
    )
