"""API-09: login throttling and account enumeration.

On a moved clock, on SQLite and PostgreSQL (identity/throttle.py with domain/login_throttle.py): 150
wrong passwords on one account from five addresses meet a wait from the 6th consecutive failure on (well
before the 100th), rising and capped at 15 minutes; the right password is let through once the wait is
over (no permanent lockout) and a success resets the count; 1,000 attempts from one address across
accounts close that address after 50 failures while another address still gets through.

Over real HTTP against `cosmogen serve`, from several loopback source addresses: an unknown email and a
wrong password get byte-identical answers; a throttled attempt answers 429 with Retry-After, the same
for a known and an unknown email, and is not checked even with the right password; the per-address
limit engages; every attempt is in the log, never a password.
"""

from __future__ import annotations

import http.client
import itertools
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update
from tests.integration.api.sessions_support import OWNER, create_owner
from tests.integration.conftest import serving

from cosmogen.domain.login_throttle import ThrottlePolicy
from cosmogen.identity import throttle
from cosmogen.store import Database, migrate
from cosmogen.store.tables import login_throttle

POLICY = ThrottlePolicy()


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    if request.param == "sqlite":
        opened = Database.open(data_dir=tmp_path)
        migrate.upgrade(opened)
    else:
        opened = Database.open(url=request.getfixturevalue("clean_pg_url"))
    try:
        yield opened
    finally:
        opened.close()


def _wait(db: Database, keys: list[str], now: datetime) -> timedelta:
    with db.engine.connect() as conn:
        return throttle.wait_for(conn, keys, now)


def _fail(db: Database, account: str, address: str, now: datetime) -> None:
    with db.engine.begin() as conn:
        throttle.record_failure(POLICY, account, address, now)(conn)


def test_rising_wait_per_account_no_lockout_and_reset(db: Database) -> None:
    account = throttle.account_key("victim@example.com")
    addresses = [throttle.ip_key(f"198.51.100.{i}") for i in range(5)]
    now = datetime(2026, 1, 1, tzinfo=UTC)
    waits = []
    for attempt in range(150):
        address = addresses[attempt % 5]
        wait = _wait(db, [account, address], now)
        now += wait  # an attacker who waits out every delay: the most attempts the policy allows
        _fail(db, account, address, now)
        waits.append(_wait(db, [account], now))
    first = next(i for i, w in enumerate(waits, start=1) if w > timedelta(0))
    assert first == 6 <= 100
    assert all(a <= b for a, b in itertools.pairwise(waits))  # rising, never falling
    assert waits[5] == timedelta(seconds=1) and waits[6] == timedelta(seconds=2)
    assert max(waits) == timedelta(minutes=15) == waits[-1]  # capped: never permanent
    # 150 failures in: the attacker spent this long (the policy's whole point).
    assert now - datetime(2026, 1, 1, tzinfo=UTC) > timedelta(hours=30)
    # After the wait, the right password is checked (the caller of wait_for goes on); a success resets.
    assert _wait(db, [account], now + timedelta(minutes=15)) == timedelta(0)
    with db.engine.begin() as conn:
        throttle.record_success(account)(conn)
    assert _wait(db, [account], now) == timedelta(0)
    _fail(db, account, addresses[0], now)
    assert _wait(db, [account], now) == timedelta(0)  # counting starts over from 1


def test_one_address_across_accounts_is_closed_after_50_failures(db: Database) -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    noisy, other = throttle.ip_key("203.0.113.9"), throttle.ip_key("203.0.113.10")
    closed_at = None
    for attempt in range(1000):
        account = throttle.account_key(f"user{attempt}@example.com")
        if _wait(db, [account, noisy], now) > timedelta(0):
            closed_at = closed_at or attempt
            continue
        _fail(db, account, noisy, now)
        now += timedelta(milliseconds=100)
    assert closed_at == POLICY.ip_max_failures == 50
    assert _wait(db, [throttle.account_key("fresh@example.com"), other], now) == timedelta(0)
    # The window ends: the address may try again.
    assert _wait(db, [noisy], datetime(2026, 1, 1, tzinfo=UTC) + POLICY.ip_window) == timedelta(0)


def _login(url: str, email: str, password: str, source: str) -> tuple[int, dict[str, str], bytes]:
    """A login from a given loopback source address; the raw answer."""
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30, source_address=(source, 0))
    try:
        body = json.dumps({"email": email, "password": password})
        conn.request("POST", "/api/v1/session", body=body, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def test_over_http_identical_answers_429_and_logs(tmp_path: Path) -> None:
    log = tmp_path / "serve.log"
    with serving(tmp_path) as (url, _):
        create_owner(url, log)
        wrong = _login(url, OWNER[0], "not the password at all", "127.0.0.2")
        unknown = _login(url, "nobody@example.com", "not the password at all", "127.0.0.3")
        assert wrong[0] == unknown[0] == 401
        assert wrong[2] == unknown[2]  # byte-identical body
        assert {k: v for k, v in wrong[1].items() if k != "date"} == {
            k: v for k, v in unknown[1].items() if k != "date"
        }
        # Keep failing both (waiting out each delay) to 9 failures, a wait of 8 s: then the right password
        # is not even checked, and a known and an unknown email get the same 429.
        seen = {401: 2, 429: 0}
        failures = {OWNER[0]: 1, "nobody@example.com": 1}
        attempt = 0
        while min(failures.values()) < 9:
            for email in failures:
                if failures[email] >= 9:
                    continue
                attempt += 1
                status, headers, _ = _login(url, email, f"wrong password {attempt}", f"127.0.1.{attempt}")
                seen[status] += 1
                if status == 401:
                    failures[email] += 1
                else:
                    assert status == 429 and 1 <= int(headers["retry-after"]) <= 4
                    time.sleep(float(headers["retry-after"]))
        right = _login(url, OWNER[0], OWNER[1], "127.0.0.32")
        ghost = _login(url, "nobody@example.com", OWNER[1], "127.0.0.33")
        assert right[0] == ghost[0] == 429 and right[2] == ghost[2]
        assert 1 <= int(right[1]["retry-after"]) <= 8
        seen[429] += 2
        # The wait ends (moved in the store: the server's clock is real): the right password works
        # and resets the account's count.
        db = Database.open(data_dir=tmp_path / "cosmogen-data")
        try:
            with db.engine.begin() as conn:
                conn.execute(
                    update(login_throttle).values(locked_until=datetime.now(UTC) - timedelta(seconds=1))
                )
            assert _login(url, OWNER[0], OWNER[1], "127.0.0.34")[0] == 200
            with db.engine.connect() as conn:
                keys = set(conn.execute(select(login_throttle.c.key)).scalars())
        finally:
            db.close()
        assert (
            throttle.account_key(OWNER[0]) not in keys and throttle.account_key("nobody@example.com") in keys
        )
        # One address across many accounts: closed after 50 failures; another address is not.
        statuses = [_login(url, f"spray{i}@example.com", "guess-guess", "127.0.0.99")[0] for i in range(52)]
        assert statuses[:50] == [401] * 50 and statuses[50:] == [429, 429]
        assert _login(url, "spray99@example.com", "guess-guess", "127.0.0.98")[0] == 401
    text = log.read_text()
    assert text.count("login failed for") == seen[401] + 50 + 1
    assert text.count("login throttled for") == seen[429] + 2 and text.count("login succeeded for") == 1
    assert "from 127.0.0.99" in text and "nobody@example.com" in text
    for secret in (OWNER[1], "not the password at all", "guess-guess", "wrong password"):
        assert secret not in text
