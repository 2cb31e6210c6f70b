"""The OAuth token manager: an account's access token, refreshed ahead of expiry, once, by one process.

One `TokenManager` per runtime (built by the composition root). `access_token(account_id)` returns the
stored token while it is fresh; within `window` (5 min) of expiry, or when a provider refused it (a
401), it is refreshed, and every caller in every process gets the one new token:

- in a process, callers of one account share one in-flight refresh (an asyncio task per account);
- across processes, a refresh happens only under the account's lease: a conditional UPDATE of
  `refresh_lease_owner`/`refresh_lease_expires_at`. Under the lease the row and its credentials are read
  again (another process may have refreshed meanwhile: then nothing is called). The holder renews the
  lease while its request is in flight, and checks it still holds it right before sending. Callers
  that cannot get the lease poll the row until the token is fresh, or give up after `wait_timeout` with
  a retryable error: nobody refreshes without the lease (reliability.md OA-01..OA-03).
- the answer is committed at once (the only await between the response and the commit is the commit),
  by compare-and-set on `accounts.version`; a rotated refresh token is never lost to a stale writer and
  a newer write is never overwritten (OA-04, OA-05).
- `invalid_grant` marks the account `expired` (credentials kept, last_error `needs_reauth`) only when a
  re-read shows the refresh token we sent is still the stored one; transient failures keep the grant
  and the status and back off (OA-05, OA-06). The decisions are in domain/tokens.py.

A background refresher (`start_refresher`) refreshes idle accounts before they expire, so a run that
starts after a quiet night does not wait for the token endpoint. Tokens never appear in logs or errors:
messages come from the refusal (built from the server's error code) with every known secret scrubbed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import secrets
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import Connection, exists, or_, select, update

from cosmogen.domain.capabilities import Action, Registry, default_registry
from cosmogen.domain.oauth import (
    OAUTH_SETTING,
    OAuthClientConfig,
    OAuthError,
    RefusalKind,
    TokenGrant,
    TokenRefusal,
    oauth_config,
)
from cosmogen.domain.tokens import (
    NEEDS_REAUTH,
    OAUTH_CLIENT_ERROR,
    REFRESH_FAILED_TRANSIENT,
    RefreshPolicy,
    RefusalEffect,
    Step,
    TokenView,
    client_error,
    needs_reauth_error,
    next_step,
    refusal_effect,
    retry_at,
    transient_error,
)
from cosmogen.integrations.connections import AccountUnavailable
from cosmogen.integrations.http import HttpClient
from cosmogen.integrations.oauth import client_pair, token_call
from cosmogen.integrations.redact import scrub_values
from cosmogen.integrations.secret import Secret
from cosmogen.store.audit import write_audit
from cosmogen.store.database import SQLITE_BEGIN, Database
from cosmogen.store.tables import accounts, credentials, utcnow
from cosmogen.store.workspace_events import announce_account

if TYPE_CHECKING:  # the vault imports `cryptography`: loaded on the first provider call, not at start
    from cosmogen.integrations.vault import Vault

log = logging.getLogger(__name__)
T = TypeVar("T")

ACCESS = "access_token"
REFRESH = "refresh_token"
CLIENT_SECRET = "client_secret"  # noqa: S105 - the name of the vault field, not a secret
_FIELDS = (ACCESS, REFRESH, CLIENT_SECRET)
_OURS = (REFRESH_FAILED_TRANSIENT, OAUTH_CLIENT_ERROR)  # last_error codes a successful refresh clears


@dataclass(frozen=True, slots=True)
class Stored:
    """An account row and its token fields as read in one snapshot."""

    account_id: str
    name: str
    provider: str
    settings: dict[str, Any]
    version: int
    view: TokenView
    failures: int
    last_error: dict[str, Any] | None
    lease_owner: str | None
    lease_expires_at: datetime | None
    access: Secret | None
    refresh: Secret | None
    client_secret: Secret | None

    def scrub(self, text: str) -> str:
        """`text` without any of the account's tokens, in any form they were sent in (the client's Basic
        header included)."""
        values = [s.reveal() for s in (self.access, self.refresh, self.client_secret) if s is not None]
        client_id = (self.settings.get(OAUTH_SETTING) or {}).get("client_id")
        if self.client_secret is not None and isinstance(client_id, str):
            values.append(client_pair(client_id, self.client_secret))
        return scrub_values(text, values)


class _LeaseLost(Exception):
    """The lease lapsed and another process took it before this one sent its request."""


class TokenManager:
    def __init__(
        self,
        db: Database,
        vault: Callable[[], Vault],
        http: HttpClient,
        *,
        registry: Registry | None = None,
        policy: RefreshPolicy | None = None,
        now: Callable[[], datetime] = utcnow,
        jitter: Callable[[], float] = random.random,
        owner: str | None = None,
        on_refresh: Callable[[str, str], None] | None = None,
    ) -> None:
        self._db = db
        # Told (provider, outcome) after each grant sent: `ok` or the refusal's kind (telemetry/hooks.py).
        self._on_refresh = on_refresh
        self._vault = vault
        self._http = http
        self._registry = registry or default_registry()
        self.policy = policy or RefreshPolicy()
        self._now = now
        self._jitter = jitter
        # Unique per manager: host and pid say who holds a lease, the random part tells apart two
        # managers of one process (tests) and a pid reused after a crash.
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self._flights: dict[str, asyncio.Task[Secret]] = {}
        self._reads: dict[str, asyncio.Task[Stored]] = {}
        self._refresher: asyncio.Task[None] | None = None
        # When each account's access token runs out, as last read or saved here (for the live stream).
        self._expiry: dict[str, datetime | None] = {}

    # --- the API ----------------------------------------------------------------------------------

    async def access_token(
        self, account_id: str, *, force: bool = False, rejected: Secret | None = None
    ) -> Secret:
        """The account's access token, fresh. `rejected`: the token a provider just refused (a 401): it
        is refreshed if it is still the stored one, else the newer stored token is returned. `force`:
        refresh even when not due (unless someone refreshed since this call read the row).

        Raises AccountUnavailable: RECONNECT when the grant is gone, WAIT (retryable) while another
        process refreshes too long or a backoff runs, FIX_SETTING for a wrong OAuth client."""
        stored = await self._snapshot(account_id)
        step = self._step(stored, rejected=rejected, force=force)
        if step is Step.USE:
            assert stored.access is not None
            return stored.access
        if step is not Step.REFRESH:
            raise self._unusable(stored, step)
        flight = self._flights.get(account_id)
        if flight is None:
            flight = asyncio.create_task(
                self._flight(account_id, rejected, force, stored.version), name=f"token-refresh-{account_id}"
            )
            self._flights[account_id] = flight
            flight.add_done_callback(lambda done: self._landed(account_id, done))
        # Shielded: a caller that gives up (its run is cancelled) must not cancel the others' refresh.
        return await asyncio.shield(flight)

    def expires_at(self, account_id: str) -> datetime | None:
        """When the account's access token last handed out here runs out (None: unknown or never)."""
        return self._expiry.get(account_id)

    async def refresh_due(self) -> int:
        """Refresh every connected OAuth account whose token is due (what the background refresher does
        each round); returns how many now hold a fresh token."""
        fresh = 0
        for account_id in await asyncio.to_thread(self._due_accounts):
            try:
                await self.access_token(account_id)
            except AccountUnavailable as exc:
                log.info("background refresh of account %s: %s", account_id, exc)
            else:
                fresh += 1
        return fresh

    def start_refresher(self) -> None:
        """Refresh idle accounts in the background, every `refresher_every`. One per process is fine:
        the lease keeps processes from refreshing one account twice."""
        if self._refresher is None:
            self._refresher = asyncio.create_task(self._refresh_forever(), name="token-refresher")

    async def close(self) -> None:
        tasks = [t for t in (self._refresher, *self._flights.values()) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._refresher = None

    # --- one refresh per account in this process --------------------------------------------------

    async def _snapshot(self, account_id: str) -> Stored:
        """The account as stored; callers arriving while a read is under way share it (a burst of runs
        on one account costs one read, not one per run)."""
        read = self._reads.get(account_id)
        if read is None:
            read = asyncio.create_task(asyncio.to_thread(self._read, account_id))
            self._reads[account_id] = read
            read.add_done_callback(lambda done: self._read_done(account_id, done))
        return await asyncio.shield(read)

    def _read_done(self, account_id: str, done: asyncio.Task[Stored]) -> None:
        if self._reads.get(account_id) is done:
            del self._reads[account_id]
        if not done.cancelled():
            done.exception()  # retrieved, for callers that were cancelled meanwhile

    def _landed(self, account_id: str, done: asyncio.Task[Secret]) -> None:
        if self._flights.get(account_id) is done:
            del self._flights[account_id]
        if not done.cancelled():
            done.exception()  # retrieved: callers that were cancelled meanwhile must not leave it unseen

    async def _flight(self, account_id: str, rejected: Secret | None, force: bool, seen: int) -> Secret:
        """Get the lease, or wait for whoever has it, until the token is fresh or `wait_timeout`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.policy.wait_timeout.total_seconds()
        while True:
            stored = await asyncio.to_thread(self._read, account_id)
            step = self._step(stored, rejected=rejected, force=force and stored.version == seen)
            if step is Step.USE:
                assert stored.access is not None
                return stored.access
            if step is not Step.REFRESH:
                raise self._unusable(stored, step)
            if self._lease_free(stored) and await asyncio.to_thread(self._take_lease, account_id):
                try:
                    return await self._holding(account_id, rejected, force, seen)
                except _LeaseLost:
                    log.warning(
                        "account %s: lost the refresh lease before sending; waiting instead", account_id
                    )
            if loop.time() >= deadline:
                raise AccountUnavailable(
                    f"account {stored.name!r}: another process is refreshing its access token and did not "
                    f"finish within {self.policy.wait_timeout.total_seconds():g} s; try again",
                    Action.WAIT,
                )
            await asyncio.sleep(self.policy.poll_interval.total_seconds())

    async def _holding(self, account_id: str, rejected: Secret | None, force: bool, seen: int) -> Secret:
        keeper = asyncio.create_task(self._keep_lease(account_id), name=f"token-lease-{account_id}")
        try:
            return await self._refresh_under_lease(account_id, rejected, force, seen)
        finally:
            keeper.cancel()
            await asyncio.gather(keeper, return_exceptions=True)
            await asyncio.to_thread(self._release_lease, account_id)

    async def _keep_lease(self, account_id: str) -> None:
        """Renew the lease while this (live) process works, so only a dead holder's lease lapses."""
        every = self.policy.lease_ttl.total_seconds() / 3
        while True:
            await asyncio.sleep(every)
            if not await asyncio.to_thread(self._renew_lease, account_id):
                log.warning("the refresh lease of account %s was taken over by another process", account_id)
                return

    async def _refresh_under_lease(
        self, account_id: str, rejected: Secret | None, force: bool, seen: int
    ) -> Secret:
        # Two rounds at most: a second one only when storage changed under us (another writer rotated
        # the grant, or a reconnect saved a new one) and the stored token is due all the same.
        for _ in range(2):
            stored = await self._reread(account_id)
            step = self._step(stored, rejected=rejected, force=force and stored.version == seen)
            if step is Step.USE:
                assert stored.access is not None
                return stored.access  # refreshed by someone else meanwhile: nothing to call
            if step is not Step.REFRESH:
                raise self._unusable(stored, step)
            config = self._client_config(stored)
            outcome = (
                config
                if isinstance(config, TokenRefusal)
                else await self._exchange(account_id, stored, config)
            )
            if isinstance(outcome, Secret):
                return outcome
            if outcome is None:  # the CAS lost: a newer write is kept, never overwritten
                rejected, force = None, False
                continue
            again = await asyncio.to_thread(self._read, account_id)
            changed = again.version != stored.version or again.refresh != stored.refresh
            effect = refusal_effect(outcome.kind, changed)
            reason = stored.scrub(outcome.message)
            if effect is RefusalEffect.USE_STORED:
                log.info(
                    "account %s: invalid_grant, but its grant was rotated meanwhile; using it", account_id
                )
                rejected, force = None, False
                continue
            if effect is RefusalEffect.NEEDS_REAUTH:
                marked = await asyncio.to_thread(self._mark_needs_reauth, account_id, stored.version, reason)
                if marked:
                    # The audit trail of a lost grant (ids only, never a token).
                    log.warning("account %s needs to be reconnected: %s", account_id, reason)
                raise AccountUnavailable(
                    f"account {stored.name!r} must be reconnected: {reason}", Action.RECONNECT
                )
            expired = stored.view.expires_at is not None and self._now() >= stored.view.expires_at
            await asyncio.to_thread(self._record_failure, stored, effect, reason)
            usable = stored.access is not None and not expired and rejected is None and not force
            if usable:
                assert stored.access is not None
                return stored.access  # still valid: the refresh is tried again after the backoff
            action = Action.WAIT if effect is RefusalEffect.BACKOFF else Action.FIX_SETTING
            raise AccountUnavailable(
                f"account {stored.name!r}: refreshing its access token failed ({reason})", action
            )
        raise AccountUnavailable(
            f"account {account_id!r}: its credentials changed twice while refreshing; try again", Action.WAIT
        )

    async def _reread(self, account_id: str) -> Stored:
        """The row and credentials read again under the lease (a separate step: tests stall here)."""
        return await asyncio.to_thread(self._read, account_id)

    async def _exchange(
        self, account_id: str, stored: Stored, config: OAuthClientConfig
    ) -> Secret | TokenRefusal | None:
        """One refresh-token grant: a new access token, a refusal, or None when the CAS lost.

        Between the token endpoint's answer and the commit there is no await but the commit itself:
        a rotating server has already spent the old refresh token, so the new one must reach storage
        before anything else can run (reliability.md OA-04)."""
        if not await asyncio.to_thread(self._renew_lease, account_id):
            raise _LeaseLost  # this process stalled past its lease and another took it: wait for theirs
        assert stored.refresh is not None
        form = {"grant_type": "refresh_token", "refresh_token": stored.refresh.reveal()}
        answer = await token_call(self._http, config, stored.client_secret, form, self._now)
        if self._on_refresh is not None:
            self._on_refresh(stored.provider, answer.kind.value if isinstance(answer, TokenRefusal) else "ok")
        if isinstance(answer, TokenRefusal):
            return answer
        return await asyncio.to_thread(self._commit, stored, answer)

    # --- decisions glue -------------------------------------------------------------------------

    def _step(self, stored: Stored, *, rejected: Secret | None, force: bool) -> Step:
        refused = force or (rejected is not None and stored.access is not None and stored.access == rejected)
        return next_step(self._now(), stored.view, self.policy, rejected=refused)

    def _unusable(self, stored: Stored, step: Step) -> AccountUnavailable:
        name = stored.name
        if step is Step.BACKOFF:
            said = (stored.last_error or {}).get("message") or "the token endpoint failed"
            code = (stored.last_error or {}).get("code")
            action = Action.FIX_SETTING if code == OAUTH_CLIENT_ERROR else Action.WAIT
            when = stored.view.retry_at.isoformat() if stored.view.retry_at else "later"
            return AccountUnavailable(
                f"account {name!r} has no valid access token now: {said}; next attempt at {when}", action
            )
        if stored.view.status != "connected":
            said = (stored.last_error or {}).get("message") or f"it is {stored.view.status}"
            return AccountUnavailable(f"account {name!r} is not usable: {said}", Action.RECONNECT)
        return AccountUnavailable(
            f"account {name!r}'s access token has expired or was refused, and it has no refresh token: "
            "reconnect it",
            Action.RECONNECT,
        )

    def _client_config(self, stored: Stored) -> OAuthClientConfig | TokenRefusal:
        """The account's OAuth client, or a CLIENT refusal saying which setting is wrong (recorded and
        backed off like the server's own refusal of the client, so a still-valid token keeps working)."""
        provider = self._registry.providers.get(stored.provider)
        endpoints = provider.oauth if provider is not None else None
        defaults = (endpoints.authorize_url, endpoints.token_url, endpoints.revoke_url) if endpoints else None
        try:
            return oauth_config(stored.provider, defaults, stored.settings)
        except OAuthError as exc:
            return TokenRefusal(RefusalKind.CLIENT, "oauth_settings", str(exc))

    def _lease_free(self, stored: Stored) -> bool:
        # A hint only (the conditional UPDATE decides); saves SQLite a write lock per poll.
        if stored.lease_owner is None or stored.lease_owner == self.owner:
            return True
        return stored.lease_expires_at is None or stored.lease_expires_at <= self._now()

    async def _refresh_forever(self) -> None:
        every = self.policy.refresher_every.total_seconds()
        while True:
            try:
                await self.refresh_due()
            except Exception:  # a database hiccup must not stop the refresher
                log.exception("the background token refresher failed this round")
            await asyncio.sleep(every)

    # --- the database (called in worker threads) ------------------------------------------------

    def _read(self, account_id: str) -> Stored:
        with self._db.engine.connect() as conn:
            if conn.dialect.name == "postgresql":
                # One snapshot for the row and its credentials: its version must describe those tokens.
                conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                row = conn.execute(select(accounts).where(accounts.c.id == account_id)).one_or_none()
                if row is None:
                    raise AccountUnavailable(f"no account {account_id!r}", Action.FIX_SETTING)
                if row.auth_kind != "oauth2":
                    raise AccountUnavailable(
                        f"account {row.name!r} is not an OAuth account; it has no token to refresh",
                        Action.FIX_SETTING,
                    )
                fields = self._reveal(conn, account_id, _FIELDS)
        self._expiry[account_id] = row.token_expires_at
        return Stored(
            account_id=row.id,
            name=row.name,
            provider=row.provider,
            settings=dict(row.settings or {}),
            version=row.version,
            view=TokenView(
                status=row.status,
                expires_at=row.token_expires_at,
                retry_at=row.refresh_retry_at,
                has_access=ACCESS in fields,
                has_refresh=REFRESH in fields,
            ),
            failures=row.refresh_failures,
            last_error=row.last_error,
            lease_owner=row.refresh_lease_owner,
            lease_expires_at=row.refresh_lease_expires_at,
            access=fields.get(ACCESS),
            refresh=fields.get(REFRESH),
            client_secret=fields.get(CLIENT_SECRET),
        )

    def _reveal(self, conn: Connection, account_id: str, names: Iterable[str]) -> dict[str, Secret]:
        from cosmogen.integrations.credentials import reveal_credentials

        return reveal_credentials(conn, self._vault(), account_id, names)

    def _write(self, fn: Callable[[Connection], T]) -> T:
        with self._db.engine.connect() as conn:
            conn.execution_options(**{SQLITE_BEGIN: "IMMEDIATE"})  # the write lock up front (SQLite)
            with conn.begin():
                return fn(conn)

    def _take_lease(self, account_id: str) -> bool:
        now = self._now()
        c = accounts.c
        stmt = (
            update(accounts)
            .where(
                c.id == account_id,
                or_(
                    c.refresh_lease_owner.is_(None),
                    c.refresh_lease_expires_at.is_(None),
                    c.refresh_lease_expires_at <= now,
                    c.refresh_lease_owner == self.owner,
                ),
            )
            .values(refresh_lease_owner=self.owner, refresh_lease_expires_at=now + self.policy.lease_ttl)
        )
        return self._write(lambda conn: conn.execute(stmt).rowcount == 1)

    def _renew_lease(self, account_id: str) -> bool:
        """Extend the lease if this manager still holds it (nobody took it over after it lapsed)."""
        stmt = (
            update(accounts)
            .where(accounts.c.id == account_id, accounts.c.refresh_lease_owner == self.owner)
            .values(refresh_lease_expires_at=self._now() + self.policy.lease_ttl)
        )
        return self._write(lambda conn: conn.execute(stmt).rowcount == 1)

    def _release_lease(self, account_id: str) -> None:
        stmt = (
            update(accounts)
            .where(accounts.c.id == account_id, accounts.c.refresh_lease_owner == self.owner)
            .values(refresh_lease_owner=None, refresh_lease_expires_at=None)
        )
        self._write(lambda conn: conn.execute(stmt))

    def _commit(self, stored: Stored, grant: TokenGrant) -> Secret | None:
        """Save a grant by compare-and-set on the version read under the lease, and release the lease.

        If the version moved, the write goes ahead only when the stored refresh token is still the one
        we presented (a change that did not touch the grant, e.g. a new client secret): otherwise a
        newer grant is stored and is kept. Returns the new access token, or None when ours was dropped.
        """
        from cosmogen.integrations.credentials import put_secrets

        now = self._now()
        c = accounts.c
        values: dict[str, Any] = {
            "token_expires_at": grant.expires_at,
            "last_refreshed_at": now,
            "verified_at": now,
            "refresh_failures": 0,
            "refresh_retry_at": None,
            "refresh_lease_owner": None,
            "refresh_lease_expires_at": None,
        }
        if grant.scopes is not None:
            values["scopes"] = list(grant.scopes)
        fields = {ACCESS: Secret(grant.access_token)}
        if grant.refresh_token is not None:
            fields[REFRESH] = Secret(grant.refresh_token)

        def write(conn: Connection) -> Secret | None:
            version = stored.version
            done = conn.execute(
                update(accounts).where(c.id == stored.account_id, c.version == version).values(values)
            ).rowcount
            if not done:
                locked = select(c.version).where(c.id == stored.account_id)
                if conn.dialect.name == "postgresql":
                    locked = locked.with_for_update()
                current = conn.execute(locked).scalar()
                if current is None or self._reveal(conn, stored.account_id, [REFRESH]).get(REFRESH) != (
                    stored.refresh
                ):
                    return None
                version = int(current)
                conn.execute(
                    update(accounts).where(c.id == stored.account_id, c.version == version).values(values)
                )
            error = conn.execute(select(c.last_error).where(c.id == stored.account_id)).scalar()
            if isinstance(error, dict) and error.get("code") in _OURS:  # the failures this refresh ends
                conn.execute(update(accounts).where(c.id == stored.account_id).values(last_error=None))
            put_secrets(self._vault(), stored.account_id, fields)(conn)  # bumps the version
            return fields[ACCESS]

        saved = self._write(write)
        if saved is None:
            log.warning(
                "account %s: a newer credential was saved while refreshing; it is kept and this refresh's "
                "answer dropped",
                stored.account_id,
            )
        else:
            self._expiry[stored.account_id] = grant.expires_at
            log.info("refreshed the access token of account %s", stored.account_id)
        return saved

    def _mark_needs_reauth(self, account_id: str, version: int, reason: str) -> bool:
        """status expired with last_error needs_reauth, only if nothing was written since our read (a
        newer grant must not be disabled). Credentials are kept: a person may inspect or reconnect."""
        error = needs_reauth_error(self._now(), reason)
        stmt = (
            update(accounts)
            .where(accounts.c.id == account_id, accounts.c.version == version)
            .values(status="expired", last_error=error)
        )

        def write(conn: Connection) -> bool:
            if conn.execute(stmt).rowcount != 1:
                return False
            # The audit trail of a lost grant, in the same transaction (ids and codes only, never a token).
            workspace = conn.execute(select(accounts.c.workspace_id).where(accounts.c.id == account_id))
            details = {"code": error.get("code"), "action": error.get("action")}
            write_audit(conn, workspace_id=str(workspace.scalar_one()), action="account.needs_reauth",
                        object_type="account", object_id=account_id, details=details)  # fmt: skip
            announce_account(conn, account_id)
            return True

        return bool(self._write(write))

    def _record_failure(self, stored: Stored, effect: RefusalEffect, reason: str) -> None:
        now = self._now()
        failures = stored.failures + 1
        at = retry_at(now, failures, stored.view.expires_at, self.policy, self._jitter())
        if effect is RefusalEffect.BACKOFF:
            error = transient_error(now, failures, at, reason)
        else:
            error = client_error(now, at, reason)
        stmt = (
            update(accounts)
            .where(accounts.c.id == stored.account_id, accounts.c.version == stored.version)
            .values(refresh_failures=failures, refresh_retry_at=at, last_error=error)
        )
        self._write(lambda conn: conn.execute(stmt))

    def _due_accounts(self) -> list[str]:
        now = self._now()
        c = accounts.c
        has_refresh = exists().where(credentials.c.account_id == c.id, credentials.c.field == REFRESH)
        query = select(c.id).where(
            c.auth_kind == "oauth2",
            c.status == "connected",
            c.token_expires_at.is_not(None),
            c.token_expires_at <= now + self.policy.window,
            or_(c.refresh_retry_at.is_(None), c.refresh_retry_at <= now),
            has_refresh,
        )
        with self._db.engine.connect() as conn:
            return [str(i) for i in conn.execute(query.order_by(c.token_expires_at)).scalars()]


def needs_reauth(last_error: dict[str, Any] | None) -> bool:
    """Whether an account's last_error says its grant is lost (for listings and tests)."""
    return bool(last_error) and (last_error or {}).get("code") == NEEDS_REAUTH
