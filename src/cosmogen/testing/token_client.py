"""A process that asks a token manager for one account's access token: OA-02's contenders and the lease
holders OA-03 and OA-04 stall, stop or kill.

Usage: python -m cosmogen.testing.token_client DATABASE_URL ACCOUNT_ID COROUTINES

Environment:
- COSMOGEN_VAULT_KEYS: the test's keyring (every process of a test shares it);
- COSMOGEN_TEST_TOKEN_LEASE_TTL, COSMOGEN_TEST_TOKEN_WAIT_TIMEOUT: seconds (short leases for crash tests);
- COSMOGEN_TEST_TOKEN_STALL: `POINT:SECONDS` makes the first refresh stop at POINT, print
  `STALLED POINT` and sleep SECONDS (`inf`: until killed). Points: `after-reread` (holding the lease,
  before the token request) and `after-response` (the token endpoint answered, nothing committed yet).
  The stall lives here, in a subclass, not as a branch in the product code.

Prints `READY <pid>`; then for each stdin line `go SEED` it waits a random 0-20 ms (from SEED), asks with
COROUTINES coroutines at once (each after its own 0-5 ms) and prints one JSON line: {"tokens": {digest:
count}, "errors": [{"action", "message"}]}. Digests are `token_digest` (a SHA-256 prefix), never tokens.
`quit` ends it. Egress is allowed to 127.0.0.1 only (the simulator).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import os
import random
import sys
from collections import Counter
from datetime import timedelta
from typing import Any

from cosmogen.domain.bindings import RenderedRequest
from cosmogen.domain.tokens import RefreshPolicy
from cosmogen.integrations.accounts import VaultOpener
from cosmogen.integrations.connections import AccountUnavailable
from cosmogen.integrations.egress import EgressPolicy
from cosmogen.integrations.http import HttpClient, HttpResponse
from cosmogen.integrations.tokens import Stored, TokenManager
from cosmogen.store import Database
from cosmogen.testing.oauth_accounts import KEYS_ENV, open_vault

STALL_ENV = "COSMOGEN_TEST_TOKEN_STALL"
TTL_ENV = "COSMOGEN_TEST_TOKEN_LEASE_TTL"
WAIT_ENV = "COSMOGEN_TEST_TOKEN_WAIT_TIMEOUT"
POINTS = ("after-reread", "after-response")


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()[:16]


class Stall:
    """Stops the first refresh that reaches `point` for `seconds`, once."""

    def __init__(self, spec: str | None) -> None:
        self.point: str | None = None
        self.seconds = 0.0
        if spec:
            point, _, seconds = spec.partition(":")
            if point not in POINTS:
                raise SystemExit(f"{STALL_ENV}: unknown point {point!r}; one of {', '.join(POINTS)}")
            self.point, self.seconds = point, float(seconds or "inf")

    async def at(self, point: str) -> None:
        if point != self.point:
            return
        self.point = None
        print(f"STALLED {point}", flush=True)
        await asyncio.sleep(self.seconds if math.isfinite(self.seconds) else 10**9)


class StallingTokens(TokenManager):
    stall: Stall

    async def _reread(self, account_id: str) -> Stored:
        stored = await super()._reread(account_id)
        await self.stall.at("after-reread")
        return stored


class StallingHttp(HttpClient):
    stall: Stall

    async def send(self, request: RenderedRequest, **options: Any) -> HttpResponse:
        response = await super().send(request, **options)
        if request.url.endswith("/oauth/token"):
            await self.stall.at("after-response")
        return response


async def serve(url: str, account_id: str, coroutines: int) -> None:
    db = Database.open(url=url)
    keyring = os.environ[KEYS_ENV]
    http = StallingHttp(EgressPolicy.from_strings(networks="127.0.0.1/32"))
    stall = Stall(os.environ.get(STALL_ENV))
    http.stall = stall
    await http.start()
    defaults = RefreshPolicy()
    policy = RefreshPolicy(
        lease_ttl=timedelta(seconds=float(os.environ.get(TTL_ENV, defaults.lease_ttl.total_seconds()))),
        wait_timeout=timedelta(
            seconds=float(os.environ.get(WAIT_ENV, defaults.wait_timeout.total_seconds()))
        ),
        poll_interval=timedelta(milliseconds=20),
    )
    tokens = StallingTokens(db, VaultOpener(lambda: open_vault(db, keyring)), http, policy=policy)
    tokens.stall = stall
    print(f"READY {os.getpid()}", flush=True)
    try:
        while True:
            line = (await asyncio.to_thread(sys.stdin.readline)).split()
            if not line or line[0] == "quit":
                return
            rng = random.Random(int(line[1]) * 1000 + os.getpid())  # noqa: S311 - start offsets, not security
            await asyncio.sleep(rng.uniform(0, 0.02))

            async def ask(offset: float) -> str:
                await asyncio.sleep(offset)
                return (await tokens.access_token(account_id)).reveal()

            results = await asyncio.gather(
                *(ask(rng.uniform(0, 0.005)) for _ in range(coroutines)), return_exceptions=True
            )
            got = Counter(token_digest(r) for r in results if isinstance(r, str))
            errors = [
                {"action": r.action.value, "message": str(r)}
                if isinstance(r, AccountUnavailable)
                else {"action": "crash", "message": repr(r)}
                for r in results
                if not isinstance(r, str)
            ]
            print(json.dumps({"tokens": dict(got), "errors": errors}), flush=True)
    finally:
        await tokens.close()
        await http.close()
        db.close()


if __name__ == "__main__":
    asyncio.run(serve(sys.argv[1], sys.argv[2], int(sys.argv[3])))
