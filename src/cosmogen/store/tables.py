"""The schema, as SQLAlchemy Core tables: one `metadata` for both dialects.

Migrations (store/migrations) create exactly this; tests/integration/store/test_migrations.py
reflects a migrated database and compares it with `metadata`, so the two cannot drift apart.
"""

from __future__ import annotations

import secrets
import threading
import time
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
    true,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.types import TypeEngine

# Deterministic constraint names: the migration spells out the same names, and a later migration can
# drop or alter a constraint by name on both dialects.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

DEPLOYMENT_STATUSES = ("draft", "live", "paused", "archived")
RUN_STATUSES = ("queued", "running", "paused", "succeeded", "failed", "cancelled", "needs_attention")
REQUESTED_ACTIONS = ("pause", "cancel")
EFFECT_STATUSES = ("intent", "succeeded", "failed", "ambiguous", "marked_done", "cancelled")
TRIGGER_KINDS = ("manual", "interval", "cron", "webhook")


# --- ids -----------------------------------------------------------------------------------------

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford base 32: no I, L, O, U
_RANDOM_BITS = 80
_id_lock = threading.Lock()
_last_ms = -1
_last_random = 0


def _base32(value: int, length: int) -> str:
    chars = []
    for _ in range(length):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def new_id() -> str:
    """A ULID-like id: 26 characters, 48 bits of Unix milliseconds then 80 bits from `secrets`.

    Ids made by one process sort in creation order even within one millisecond (the random part is
    counted up instead of redrawn), so `ORDER BY id` is creation order for a single writer.
    """
    global _last_ms, _last_random
    with _id_lock:
        now_ms = time.time_ns() // 1_000_000
        if now_ms <= _last_ms:
            # Same millisecond, or the wall clock stepped back: keep the last timestamp, count up.
            now_ms = _last_ms
            _last_random += 1
        else:
            # Draw one bit short so counting up within a millisecond cannot overflow 80 bits in practice.
            _last_random = secrets.randbits(_RANDOM_BITS - 1)
        _last_ms = now_ms
        return _base32(now_ms, 10) + _base32(_last_random, 16)


# --- column types --------------------------------------------------------------------------------


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on both dialects.

    PostgreSQL stores `timestamptz`. SQLite has no timestamp type: we store UTC without an offset, so
    the text sorts and compares chronologically, and attach UTC again on the way out. Naive datetimes
    are refused rather than guessed at.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value!r}: pass a timezone-aware datetime (UTC)")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def json_type() -> TypeEngine[Any]:
    # none_as_null: Python None is SQL NULL, not the JSON literal 'null', so nullable JSON columns mean
    # "absent" and non-nullable ones refuse None.
    return JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")


def serial_type() -> TypeEngine[int]:
    # SQLite only autoincrements an INTEGER PRIMARY KEY (the rowid alias); BIGINT there would not be.
    return BigInteger().with_variant(Integer(), "sqlite")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def _created() -> Column[datetime]:
    return Column("created_at", UTCDateTime(), nullable=False, default=utcnow)


def _updated() -> Column[datetime]:
    return Column("updated_at", UTCDateTime(), nullable=False, default=utcnow, onupdate=utcnow)


# --- tables --------------------------------------------------------------------------------------

metadata = MetaData(naming_convention=NAMING_CONVENTION)

universes = Table(
    "universes",
    metadata,
    Column("id", Text, primary_key=True),
    Column("workspace_id", Text, nullable=False, server_default="default"),
    Column("name", Text, nullable=False),
    _created(),
    _updated(),
    # Not a foreign key: universes and versions would reference each other, which SQLite cannot
    # create without table rebuilds. repos.save_version keeps it pointing at one of its own versions.
    Column("active_version_id", Text, nullable=True),
    Column("deployment_status", Text, nullable=False, server_default="draft"),
    UniqueConstraint("workspace_id", "name"),
    CheckConstraint(_in("deployment_status", DEPLOYMENT_STATUSES), name="deployment_status"),
)

universe_versions = Table(
    "universe_versions",
    metadata,
    Column("id", Text, primary_key=True),
    Column("universe_id", Text, ForeignKey("universes.id"), nullable=False),
    Column("number", Integer, nullable=False),
    Column("label", Text, nullable=True),
    Column("document", json_type(), nullable=False),
    Column("document_sha256", Text, nullable=False),
    _created(),
    Column("created_by", Text, nullable=True),
    # The only column ever updated: versions are immutable otherwise.
    Column("last_run_summary", json_type(), nullable=True),
    UniqueConstraint("universe_id", "number"),
    CheckConstraint("number >= 1", name="number_positive"),
)

launches = Table(
    "launches",
    metadata,
    Column("id", Text, primary_key=True),
    Column("universe_id", Text, ForeignKey("universes.id"), nullable=False),
    Column("version_id", Text, ForeignKey("universe_versions.id"), nullable=False),
    Column("config", json_type(), nullable=False),
    Column("status", Text, nullable=False, server_default="draft"),
    _created(),
    _updated(),
    Column("stopped_at", UTCDateTime(), nullable=True),
    Index(None, "universe_id"),
    CheckConstraint(_in("status", DEPLOYMENT_STATUSES), name="status"),
)

triggers = Table(
    "triggers",
    metadata,
    Column("id", Text, primary_key=True),
    Column("launch_id", Text, ForeignKey("launches.id", ondelete="CASCADE"), nullable=False),
    Column("kind", Text, nullable=False),
    Column("spec", json_type(), nullable=False),
    # A hash, never the token: a database leak must not let anyone fire webhooks.
    Column("webhook_token_hash", Text, nullable=True, unique=True),
    Column("next_fire_at", UTCDateTime(), nullable=True),
    Column("last_fired_at", UTCDateTime(), nullable=True),
    Column("enabled", Boolean, nullable=False, server_default=true()),
    Index(None, "launch_id"),
    Index(None, "next_fire_at"),  # the scheduler asks "what is due?"
    CheckConstraint(_in("kind", TRIGGER_KINDS), name="kind"),
)

runs = Table(
    "runs",
    metadata,
    Column("id", Text, primary_key=True),
    Column("universe_id", Text, ForeignKey("universes.id"), nullable=False),
    Column("version_id", Text, ForeignKey("universe_versions.id"), nullable=False),
    Column("launch_id", Text, ForeignKey("launches.id"), nullable=True),
    Column("trigger_id", Text, nullable=True),
    Column("parent_run_id", Text, nullable=True),
    Column("status", Text, nullable=False, server_default="queued"),
    Column("dry_run", Boolean, nullable=False, server_default=false()),
    Column("event", json_type(), nullable=False),
    Column("cursor", Integer, nullable=False, server_default="0"),  # index of the next node to run
    Column("state", json_type(), nullable=False),  # the checkpoint the executor resumes from
    # Written by any process (API, CLI); obeyed by the executor between nodes.
    Column("requested_action", Text, nullable=True),
    Column("error", json_type(), nullable=True),
    Column("worker_id", Text, nullable=True),
    # PostgreSQL: the queue job executing the run (runtime/queue.py); guards against a second worker.
    Column("job_id", BigInteger, nullable=True),
    Column("lease_expires_at", UTCDateTime(), nullable=True),
    Column("attempt", Integer, nullable=False, server_default="0"),
    # {"reason": "rate_limit", "until": ISO, "node", "binding", "key"} while a call waits its turn.
    Column("waiting", json_type(), nullable=True),
    _created(),
    Column("started_at", UTCDateTime(), nullable=True),
    Column("finished_at", UTCDateTime(), nullable=True),
    _updated(),
    Index(None, "status"),
    Index(None, "launch_id"),
    Index(None, "universe_id"),
    CheckConstraint(_in("status", RUN_STATUSES), name="status"),
    CheckConstraint(_in("requested_action", REQUESTED_ACTIONS), name="requested_action"),
)

node_results = Table(
    "node_results",
    metadata,
    Column("run_id", Text, ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    Column("node_id", Text, nullable=False),
    Column("seq", Integer, nullable=False),
    Column("status", Text, nullable=False),
    Column("output", json_type(), nullable=True),
    Column("error", json_type(), nullable=True),
    Column("started_at", UTCDateTime(), nullable=False),
    Column("finished_at", UTCDateTime(), nullable=True),
    PrimaryKeyConstraint("run_id", "node_id"),
)

effects = Table(
    "effects",
    metadata,
    Column("id", serial_type(), primary_key=True, autoincrement=True),
    Column("run_id", Text, ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    Column("node_id", Text, nullable=False),
    Column("binding_id", Text, nullable=False),
    Column("attempt_group", Integer, nullable=False),
    Column("idempotency_key", Text, nullable=False, unique=True),
    Column("method", Text, nullable=False),
    Column("url", Text, nullable=False),  # redacted before it gets here
    Column("request", json_type(), nullable=False),  # redacted before it gets here
    Column("status", Text, nullable=False, server_default="intent"),
    Column("response", json_type(), nullable=True),
    _created(),
    Column("completed_at", UTCDateTime(), nullable=True),
    Index(None, "run_id"),
    CheckConstraint(_in("status", EFFECT_STATUSES), name="status"),
)

run_events = Table(
    "run_events",
    metadata,
    Column("id", serial_type(), primary_key=True, autoincrement=True),  # the global order
    # A run's event: its run and place in it. A workspace's (an account's or a launch's status, outside
    # any run): no run or seq, and `workspace_id` says whose (store/workspace_events.py).
    Column("run_id", Text, ForeignKey("runs.id", ondelete="CASCADE"), nullable=True),
    Column("seq", Integer, nullable=True),
    Column("type", Text, nullable=False),
    Column("payload", json_type(), nullable=False),
    _created(),
    Column("workspace_id", Text, nullable=True),
    UniqueConstraint("run_id", "seq"),
    # AUTOINCREMENT: SQLite never reuses an id, even after the newest rows are deleted, so a
    # consumer that remembers "last id seen" cannot be handed a recycled one.
    sqlite_autoincrement=True,
)

webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("id", serial_type(), primary_key=True, autoincrement=True),
    Column("trigger_id", Text, ForeignKey("triggers.id", ondelete="CASCADE"), nullable=False),
    Column("delivery_key", Text, nullable=False),
    Column("received_at", UTCDateTime(), nullable=False, default=utcnow),
    UniqueConstraint("trigger_id", "delivery_key"),  # replay protection: a second insert fails
)

TRIGGER_FIRE_STATUSES = ("claimed", "started", "failed", "deferred")

trigger_fires = Table(
    "trigger_fires",
    metadata,
    # One row per (trigger, tick) that the scheduler fired or queued: the primary key makes "never fire a
    # tick twice" a database invariant, whatever any scheduler process believes (reliability.md, Cron).
    Column("trigger_id", Text, ForeignKey("triggers.id", ondelete="CASCADE"), nullable=False),
    Column("tick", UTCDateTime(), nullable=False),
    # claimed: won by a scheduler, run not created yet (counts as in flight); started: run_id is set;
    # failed: start_run raised; deferred: waiting for the trigger's runs to finish (overlap "queue").
    Column("status", Text, nullable=False),
    Column("run_id", Text, nullable=True),
    Column("claimed_at", UTCDateTime(), nullable=False),
    PrimaryKeyConstraint("trigger_id", "tick"),
    CheckConstraint(_in("status", TRIGGER_FIRE_STATUSES), name="status"),
)

# --- integrations: accounts, their encrypted credentials, shared rate limits, OAuth flows ------------

ACCOUNT_AUTH_KINDS = ("oauth2", "api_key", "basic", "none")
ACCOUNT_TIERS = ("sandbox", "production")
ACCOUNT_STATUSES = ("pending", "connected", "expired", "error", "disabled")

accounts = Table(
    "accounts",
    metadata,
    Column("id", Text, primary_key=True),
    Column("workspace_id", Text, nullable=False),
    Column("provider", Text, nullable=False),  # a key of the capability registry, e.g. "openai"
    Column("name", Text, nullable=False),
    Column("auth_kind", Text, nullable=False),
    Column("scopes", json_type(), nullable=False),  # list of granted (or requested) scopes
    Column("tier", Text, nullable=False, server_default="sandbox"),
    Column("status", Text, nullable=False, server_default="pending"),
    Column("base_url", Text, nullable=True),  # overrides the provider's (a sandbox, the simulator)
    Column("settings", json_type(), nullable=False),  # non-secret: rate-limit overrides, client id, ...
    Column("token_expires_at", UTCDateTime(), nullable=True),
    Column("last_refreshed_at", UTCDateTime(), nullable=True),
    Column("last_error", json_type(), nullable=True),  # {code, message, at}: what to do, never a secret
    Column("verified_at", UTCDateTime(), nullable=True),  # a test call (API key) or a token grant succeeded
    # Single-flight OAuth refresh across processes: who holds the refresh lease, until when.
    Column("refresh_lease_owner", Text, nullable=True),
    Column("refresh_lease_expires_at", UTCDateTime(), nullable=True),
    # Transient token-endpoint failures in a row, and when the next refresh may be tried (0007, OA-06).
    Column("refresh_failures", Integer, nullable=False, server_default="0"),
    Column("refresh_retry_at", UTCDateTime(), nullable=True),
    # Compare-and-set: every write that replaces credentials bumps it (rotated refresh tokens).
    Column("version", Integer, nullable=False, server_default="0"),
    _created(),
    _updated(),
    UniqueConstraint("workspace_id", "name"),
    Index(None, "workspace_id", "provider"),
    CheckConstraint(_in("auth_kind", ACCOUNT_AUTH_KINDS), name="auth_kind"),
    CheckConstraint(_in("tier", ACCOUNT_TIERS), name="tier"),
    CheckConstraint(_in("status", ACCOUNT_STATUSES), name="status"),
)

credentials = Table(
    "credentials",
    metadata,
    # One secret field of an account (api_key, access_token, refresh_token, client_secret, password),
    # AES-256-GCM under its own data key; the data key is wrapped by the key-encryption key `key_id`.
    # The associated data binds (workspace, account, field), so a ciphertext moved elsewhere fails.
    Column("account_id", Text, ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
    Column("field", Text, nullable=False),
    Column("ciphertext", LargeBinary, nullable=False),  # version byte, nonce, ciphertext and tag
    Column("wrapped_key", LargeBinary, nullable=False),  # the data key, encrypted under the KEK
    Column("key_id", Text, nullable=False),  # which KEK wrapped it (rotation re-wraps, row by row)
    _created(),
    _updated(),
    PrimaryKeyConstraint("account_id", "field"),
    Index(None, "key_id"),
)

rate_limits = Table(
    "rate_limits",
    metadata,
    # GCRA state per limiter key ("provider:account[:endpoint]"), shared by every process.
    Column("key", Text, primary_key=True),
    Column("tat", Float, nullable=False),  # theoretical arrival time, seconds since the epoch
    Column("blocked_until", Float, nullable=True),  # a 429's Retry-After: nobody calls before it
    Column("updated_at", UTCDateTime(), nullable=False, default=utcnow),
)

oauth_flows = Table(
    "oauth_flows",
    metadata,
    # An authorization-code flow in progress: `state` is single-use and expires; the PKCE verifier is
    # a secret, so it is stored encrypted like a credential (same envelope, field "pkce_verifier").
    Column("state_hash", Text, primary_key=True),  # sha256 of the state sent; the state itself is not kept
    Column("account_id", Text, ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
    Column("issuer", Text, nullable=False),  # the authorization server the flow was started with
    Column("redirect_uri", Text, nullable=False),
    Column("verifier_ciphertext", LargeBinary, nullable=False),
    Column("verifier_wrapped_key", LargeBinary, nullable=False),
    Column("key_id", Text, nullable=False),
    Column("return_to", Text, nullable=True),  # a same-origin relative path, checked when stored
    _created(),
    Column("expires_at", UTCDateTime(), nullable=False),
    Column("used_at", UTCDateTime(), nullable=True),
    # sha256 of the session that started the flow: a callback from another session is refused (OA-09).
    Column("session_hash", Text, nullable=True),
    # The server sends RFC 9207's `iss`, which must then equal `issuer` (mix-up defence, OA-10).
    Column("expects_iss", Boolean, nullable=False, server_default=false()),
)

REVOCATION_STATUSES = ("pending", "done", "failed")

oauth_revocations = Table(
    "oauth_revocations",
    metadata,
    # The outbox of RFC 7009 revocations after a disconnect: the token waits, encrypted, in the account's
    # credential `field` until the provider's revocation endpoint accepts it (then that field is deleted).
    Column("id", Text, primary_key=True),
    Column("account_id", Text, ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
    Column("field", Text, nullable=False),
    Column("token_type_hint", Text, nullable=False),  # "refresh_token" | "access_token"
    Column("revoke_url", Text, nullable=False),
    Column("status", Text, nullable=False, server_default="pending"),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at", UTCDateTime(), nullable=True),  # also a claim: a taker pushes it ahead
    Column("last_error", json_type(), nullable=True),
    _created(),
    Column("done_at", UTCDateTime(), nullable=True),
    Index(None, "status", "next_attempt_at"),
    Index(None, "account_id"),
    CheckConstraint(_in("status", REVOCATION_STATUSES), name="status"),
)

vault_keys = Table(
    "vault_keys",
    metadata,
    # The key-encryption keys this database knows (the keys themselves live in the key file or the
    # environment, never here). check_value = HMAC-SHA256(key, label || key_id): a process compares it
    # with every key it was given before writing anything, so a wrong key stops start-up.
    Column("key_id", Text, primary_key=True),
    Column("version", Integer, nullable=False),  # order of keys: the newest non-retired one wraps
    Column("check_value", LargeBinary, nullable=False),
    _created(),
    Column("retired_at", UTCDateTime(), nullable=True),  # no row uses it; it may not be used again
    UniqueConstraint("version"),
    CheckConstraint("version >= 1", name="version_positive"),
)

# --- signed webhooks and idempotency keys (0009) ---------------------------------------------------

webhook_secrets = Table(
    "webhook_secrets",
    metadata,
    # A webhook trigger's HMAC signing secret, sealed like a credential: the associated data binds the
    # workspace, the trigger and field "webhook_secret/<secret_id>" (integrations/webhook_secrets.py).
    # expires_at NULL: the current secret; set when a rotation replaces it (valid until then).
    Column("trigger_id", Text, ForeignKey("triggers.id", ondelete="CASCADE"), nullable=False),
    Column("secret_id", Text, nullable=False),
    Column("ciphertext", LargeBinary, nullable=False),
    Column("wrapped_key", LargeBinary, nullable=False),
    Column("key_id", Text, nullable=False),
    _created(),
    Column("expires_at", UTCDateTime(), nullable=True),
    PrimaryKeyConstraint("trigger_id", "secret_id"),
    Index(None, "key_id"),
)

idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    # One Idempotency-Key per (workspace, scope): the composite key keeps workspaces apart (DUR-11).
    Column("workspace_id", Text, nullable=False),
    Column("scope", Text, nullable=False),  # the endpoint: "webhook:<trigger id>", "POST /runs"
    Column("key", Text, nullable=False),
    Column("fingerprint", Text, nullable=False),  # sha256 of the canonical request body
    Column("owner", Text, nullable=True),  # the in-flight request's claim; NULL once completed
    Column("lease_until", UTCDateTime(), nullable=True),  # an in-flight claim ends here (a dead holder)
    Column("response_status", Integer, nullable=True),  # NULL while in flight
    Column("response_body", json_type(), nullable=True),
    _created(),
    Column("expires_at", UTCDateTime(), nullable=False),
    PrimaryKeyConstraint("workspace_id", "scope", "key"),
    Index(None, "expires_at"),  # the cleanup deletes by it
)

# --- identity: workspaces, users, memberships, API tokens (api/security.py, identity/) ------------

ROLES = ("viewer", "editor", "admin")

workspaces = Table(
    "workspaces",
    metadata,
    Column("id", Text, primary_key=True),  # "default" is made by the migration: the runtime's own
    Column("name", Text, nullable=False),
    _created(),
)

users = Table(
    "users",
    metadata,
    Column("id", Text, primary_key=True),
    Column("email", Text, nullable=False),  # lower-cased; the login name
    Column("display_name", Text, nullable=False),
    Column("password_hash", Text, nullable=True),  # argon2id ($argon2id$...); NULL: no password login
    Column("disabled_at", UTCDateTime(), nullable=True),
    _created(),
    _updated(),
    UniqueConstraint("email"),
)

memberships = Table(
    "memberships",
    metadata,
    Column("workspace_id", Text, ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=False),
    Column("user_id", Text, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("role", Text, nullable=False),
    _created(),
    PrimaryKeyConstraint("workspace_id", "user_id"),
    Index(None, "user_id"),
    CheckConstraint(_in("role", ROLES), name="role"),
)

api_tokens = Table(
    "api_tokens",
    metadata,
    # A token acts as its user in one workspace with at most `role`; only its sha256 is stored.
    Column("id", Text, primary_key=True),
    Column("workspace_id", Text, ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=False),
    Column("user_id", Text, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("name", Text, nullable=False),
    Column("token_hash", Text, nullable=False),
    Column("prefix", Text, nullable=False),  # the first characters, to tell tokens apart in lists
    Column("role", Text, nullable=False),
    _created(),
    Column("expires_at", UTCDateTime(), nullable=True),
    Column("last_used_at", UTCDateTime(), nullable=True),
    Column("revoked_at", UTCDateTime(), nullable=True),
    UniqueConstraint("token_hash"),
    Index(None, "user_id"),
    CheckConstraint(_in("role", ROLES), name="role"),
)

# --- sign-in: owner setup, sessions, login throttling (identity/setup.py, sessions.py, throttle.py) ---

setup_tokens = Table(
    "setup_tokens",
    metadata,
    # The one-time owner setup link's token (sha256 only); the unused ones are replaced at each start.
    Column("id", Text, primary_key=True),
    Column("token_hash", Text, nullable=False),
    _created(),
    Column("used_at", UTCDateTime(), nullable=True),
    UniqueConstraint("token_hash"),
)

sessions = Table(
    "sessions",
    metadata,
    # A browser session: its id is the cookie value, stored as sha256 only.
    Column("id", Text, primary_key=True),
    Column("session_hash", Text, nullable=False),
    Column("user_id", Text, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("workspace_id", Text, ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=False),
    _created(),
    Column("last_seen_at", UTCDateTime(), nullable=False),  # idle timeout
    Column("expires_at", UTCDateTime(), nullable=False),  # absolute timeout
    Column("revoked_at", UTCDateTime(), nullable=True),
    UniqueConstraint("session_hash"),
    Index(None, "user_id"),
)

invites = Table(
    "invites",
    metadata,
    # A one-time link for a new member to set their password (sha256 only).
    Column("id", Text, primary_key=True),
    Column("token_hash", Text, nullable=False),
    Column("user_id", Text, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("workspace_id", Text, ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=False),
    _created(),
    Column("expires_at", UTCDateTime(), nullable=False),
    Column("used_at", UTCDateTime(), nullable=True),
    UniqueConstraint("token_hash"),
)

login_throttle = Table(
    "login_throttle",
    metadata,
    # One row per account name ("account:<email>") and per client address ("ip:<address>").
    Column("key", Text, primary_key=True),
    Column("failures", Integer, nullable=False),
    Column("window_start", UTCDateTime(), nullable=False),
    Column("last_failure_at", UTCDateTime(), nullable=False),
    Column("locked_until", UTCDateTime(), nullable=True),
)

audit_log = Table(
    "audit_log",
    metadata,
    # Who did what to which object (migration 0014). details: JSON without secrets (names, statuses,
    # field names, never a value). actor_user_id NULL: the system itself (a lost OAuth grant).
    Column("id", Text, primary_key=True),
    Column("workspace_id", Text, nullable=False),
    Column("actor_user_id", Text, nullable=True),
    Column("actor_credential_id", Text, nullable=True),  # the API token or session it came through
    Column("action", Text, nullable=False),  # e.g. account.create, account.connect, account.needs_reauth
    Column("object_type", Text, nullable=False),
    Column("object_id", Text, nullable=True),
    Column("at", UTCDateTime(), nullable=False, default=utcnow),
    Column("details", json_type(), nullable=False),
    Index(None, "workspace_id", "at"),
)

# --- alerts and notifications (0016; domain/alerts.py, runtime/alerts.py) --------------------------

ALERT_RULE_KINDS = (
    "run_failed", "run_needs_attention", "token_refresh_failed", "grant_expiring", "error_rate",
    "rate_limit_saturated",
)  # fmt: skip
CHANNEL_KINDS = ("webhook", "slack", "email")
DELIVERY_KINDS = ("webhook", "slack", "email", "teams")
DELIVERY_STATUSES = ("pending", "sent", "failed")

alert_rules = Table(
    "alert_rules",
    metadata,
    Column("id", Text, primary_key=True),
    Column("workspace_id", Text, nullable=False),
    Column("name", Text, nullable=False),
    Column("kind", Text, nullable=False),
    Column("universe_id", Text, nullable=True),  # NULL: every universe of the workspace
    Column("params", json_type(), nullable=False),  # kind-specific: threshold, window_s, horizon_s...
    Column("channel_ids", json_type(), nullable=False),  # notification_channels ids
    Column("in_app", Boolean, nullable=False, server_default=true()),
    Column("dedup_window_s", Integer, nullable=False),
    Column("enabled", Boolean, nullable=False, server_default=true()),
    _created(),
    _updated(),
    Index(None, "workspace_id"),
    CheckConstraint(_in("kind", ALERT_RULE_KINDS), name="kind"),
)

notification_channels = Table(
    "notification_channels",
    metadata,
    Column("id", Text, primary_key=True),
    Column("workspace_id", Text, nullable=False),
    Column("name", Text, nullable=False),
    Column("kind", Text, nullable=False),
    Column("config", json_type(), nullable=False),  # non-secret; secrets are in channel_secrets
    _created(),
    _updated(),
    UniqueConstraint("workspace_id", "name"),
    CheckConstraint(_in("kind", CHANNEL_KINDS), name="kind"),
)

channel_secrets = Table(
    "channel_secrets",
    metadata,
    # A channel's secret (the SMTP password, a webhook's signing secret), sealed like a credential: the
    # associated data binds the workspace, the channel and the field "alert_channel/<field>".
    Column("channel_id", Text, ForeignKey("notification_channels.id", ondelete="CASCADE"), nullable=False),
    Column("field", Text, nullable=False),
    Column("ciphertext", LargeBinary, nullable=False),
    Column("wrapped_key", LargeBinary, nullable=False),
    Column("key_id", Text, nullable=False),
    _created(),
    PrimaryKeyConstraint("channel_id", "field"),
    Index(None, "key_id"),
)

notifications = Table(
    "notifications",
    metadata,
    # One alert: the in-app inbox row (when in_app) and the parent of its deliveries.
    Column("id", Text, primary_key=True),
    Column("workspace_id", Text, nullable=False),
    Column("rule_id", Text, nullable=True),  # NULL: a launch's notify list, or a channel test
    Column("launch_id", Text, nullable=True),
    Column("kind", Text, nullable=False),  # a rule kind, run_finished or test
    Column("dedup_key", Text, nullable=False),
    Column("title", Text, nullable=False),
    Column("body", Text, nullable=False),
    Column("facts", json_type(), nullable=False),  # ids, names and codes; never a secret
    Column("in_app", Boolean, nullable=False, server_default=true()),
    Column("repeats", Integer, nullable=False, server_default="0"),  # suppressed within the window
    _created(),
    Column("last_seen_at", UTCDateTime(), nullable=False),
    Column("read_at", UTCDateTime(), nullable=True),
    Index(None, "workspace_id", "created_at"),
)

notification_deliveries = Table(
    "notification_deliveries",
    metadata,
    Column("id", Text, primary_key=True),
    Column("notification_id", Text, ForeignKey("notifications.id", ondelete="CASCADE"), nullable=False),
    Column("channel_id", Text, nullable=True),  # NULL: a launch notify target without a channel
    Column("kind", Text, nullable=False),
    Column("target", Text, nullable=True),  # a launch notify target (address, Slack channel, URL)
    Column("status", Text, nullable=False, server_default="pending"),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at", UTCDateTime(), nullable=True),
    Column("lease_owner", Text, nullable=True),  # the process sending it now
    Column("lease_until", UTCDateTime(), nullable=True),
    Column("last_error", Text, nullable=True),  # what went wrong and what to do; never a secret
    Column("sent_at", UTCDateTime(), nullable=True),
    _created(),
    Index(None, "notification_id"),
    Index(None, "status", "next_attempt_at"),
    CheckConstraint(_in("kind", DELIVERY_KINDS), name="kind"),
    CheckConstraint(_in("status", DELIVERY_STATUSES), name="status"),
)

alert_dedup = Table(
    "alert_dedup",
    metadata,
    # The last notification per dedup key: the primary key makes "one per window" hold across processes.
    Column("workspace_id", Text, nullable=False),
    Column("dedup_key", Text, nullable=False),
    Column("notification_id", Text, nullable=False),
    Column("sent_at", UTCDateTime(), nullable=False),
    PrimaryKeyConstraint("workspace_id", "dedup_key"),
)

alert_marks = Table(
    "alert_marks",
    metadata,
    # Conditions already handled, e.g. "run:<id>:failed": inserted once, so each is evaluated once.
    Column("key", Text, primary_key=True),
    _created(),
)
