"""What the OA-0x and PBT-03 tests share: a migrated database of either dialect with a vault, the
simulator's grant saved as an account, a token manager over them, and contender processes."""

from __future__ import annotations

import contextlib
import json
import os
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from cosmogen.domain.tokens import RefreshPolicy
from cosmogen.integrations.accounts import VaultOpener
from cosmogen.integrations.egress import EgressPolicy
from cosmogen.integrations.http import HttpClient
from cosmogen.integrations.tokens import TokenManager
from cosmogen.integrations.vault import Vault
from cosmogen.store import Database, migrate
from cosmogen.store.tables import utcnow
from cosmogen.testing import oauth_accounts
from cosmogen.testing.simulator import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, Simulator
from cosmogen.testing.token_client import STALL_ENV, TTL_ENV, WAIT_ENV

ROOT = Path(__file__).resolve().parents[2]
LOOPBACK = EgressPolicy.from_strings(networks="127.0.0.1/32")


@dataclass
class Store:
    db: Database
    url: str
    keyring: str
    vault: Vault


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'tokens.db'}"
        db = Database.open(url=url)
        migrate.upgrade(db)
    else:
        url = request.getfixturevalue("clean_pg_url")
        db = Database.open(url=url)
    keyring = oauth_accounts.new_keyring()
    try:
        yield Store(db, url, keyring, oauth_accounts.open_vault(db, keyring))
    finally:
        db.close()


def grant_account(
    store: Store, sim: Simulator, *, expires_in: timedelta | None = timedelta(minutes=4), **extra: Any
) -> tuple[str, Any]:
    """A connected account holding a fresh simulator grant whose stored expiry is `expires_in` away
    (4 min: inside the 5-min window, so the first caller refreshes). Returns (account id, the grant)."""
    grant = sim.oauth.issue(DEFAULT_CLIENT_ID, "chat:write")
    account_id = oauth_accounts.connect(
        store.db,
        store.vault,
        sim_url=sim.url,
        client_id=DEFAULT_CLIENT_ID,
        client_secret=DEFAULT_CLIENT_SECRET,
        access_token=grant.access_token,
        refresh_token=grant.refresh_token,
        expires_at=None if expires_in is None else utcnow() + expires_in,
        **extra,
    )
    return account_id, grant


def manager(store: Store, http: HttpClient, **policy: Any) -> TokenManager:
    return TokenManager(
        store.db, VaultOpener(lambda: store.vault), http, policy=RefreshPolicy(**policy) if policy else None
    )


async def started_http() -> HttpClient:
    http = HttpClient(LOOPBACK)
    await http.start()
    return http


class Contender:
    """A `cosmogen.testing.token_client` process (see its docstring for the protocol)."""

    def __init__(
        self,
        store: Store,
        account_id: str,
        coroutines: int,
        log: Path,
        *,
        stall: str | None = None,
        lease_ttl_s: float | None = None,
        wait_timeout_s: float | None = None,
        ready: bool = True,
    ) -> None:
        env = {**os.environ, oauth_accounts.KEYS_ENV: store.keyring}
        for name, value in ((STALL_ENV, stall), (TTL_ENV, lease_ttl_s), (WAIT_ENV, wait_timeout_s)):
            if value is not None:
                env[name] = str(value)
        self._log = log.open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "cosmogen.testing.token_client", store.url, account_id, str(coroutines)],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
        )
        self.log_path = log
        if ready:
            self.ready()

    def ready(self) -> None:
        """Wait for `READY` (start several contenders first, then wait: they import in parallel)."""
        line = self.line(90)
        assert line.startswith("READY"), f"contender did not start: {line!r} {self.stderr()}"

    def stderr(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def line(self, timeout_s: float = 30) -> str:
        """The next stdout line; fails the test (with the process's stderr) rather than hanging."""
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.process.stdout], [], [], 0.1)
            if ready:
                line = self.process.stdout.readline()
                if line:
                    return line.strip()
                raise AssertionError(f"contender exited: {self.stderr()}")
        raise AssertionError(f"no output from the contender within {timeout_s} s: {self.stderr()}")

    def go(self, seed: int) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(f"go {seed}\n")
        self.process.stdin.flush()

    def result(self, timeout_s: float = 30) -> dict[str, Any]:
        line = self.line(timeout_s)
        try:
            return dict(json.loads(line))
        except ValueError:
            raise AssertionError(f"unexpected output {line!r}: {self.stderr()}") from None

    def close(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            if self.process.poll() is None and self.process.stdin is not None:
                self.process.stdin.write("quit\n")
                self.process.stdin.flush()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        for pipe in (self.process.stdin, self.process.stdout):
            with contextlib.suppress(OSError, ValueError):
                if pipe is not None:
                    pipe.close()
        self._log.close()


def expires_soon(minutes: float = 4) -> datetime:
    return utcnow() + timedelta(minutes=minutes)
