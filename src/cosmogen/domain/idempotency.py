"""Idempotency keys on our own POST endpoints (reliability DUR-11, A1.7: the IETF Idempotency-Key draft).

Pure decisions; the store is runtime/idempotency.py. A request that carries `Idempotency-Key: <key>`:

- first time: it proceeds, and its result is stored under (workspace, scope, key) for `ttl` (24 h);
- again with the same body: the stored result, and nothing is done a second time;
- again with another body: 422 (a key names one request; reusing it for another is a client bug);
- again while the first is still in flight: 409 (retry later);
- without a key where the endpoint requires one: 400.

Keys are scoped by workspace (a composite key): another workspace sending the same key is a new request,
and can never read this workspace's stored result. `scope` names the endpoint (e.g. "webhook:<trigger>",
"POST /runs"), so one key used on two endpoints is two requests.

The request fingerprint is the SHA-256 of the canonical JSON of the body (sorted keys, no insignificant
whitespace): the same JSON re-serialised by a retrying client is the same request.

An in-flight claim holds a lease (60 s): a request whose process died mid-way frees its key once the
lease ends, instead of answering 409 until the key expires.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

HEADER = "Idempotency-Key"
MAX_KEY_CHARS = 255
DEFAULT_TTL = timedelta(hours=24)
DEFAULT_LEASE = timedelta(seconds=60)


class IdempotencyKeyError(ValueError):
    """A missing (where required) or malformed key: answered with 400, `code` and the message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def parse_key(raw: str | None, *, required: bool) -> str | None:
    """The key from the header's value. The draft makes it a Structured Field string (`"abc"`); a bare
    token is accepted too, as Stripe and most clients send it."""
    if raw is None:
        if required:
            raise IdempotencyKeyError(
                "idempotency_key_missing",
                f"this endpoint requires an {HEADER} header: a unique value per logical request (e.g. a "
                "UUID), the same on every retry of that request",
            )
        return None
    key = raw.strip()
    if len(key) >= 2 and key[0] == key[-1] == '"':
        key = key[1:-1]
    if not key or len(key) > MAX_KEY_CHARS or not key.isprintable() or not key.isascii():
        raise IdempotencyKeyError(
            "idempotency_key_invalid",
            f"{HEADER} must be 1 to {MAX_KEY_CHARS} printable ASCII characters (e.g. a UUID)",
        )
    return key


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def fingerprint(value: Any) -> str:
    """sha256 of the canonical JSON of the request body."""
    return hashlib.sha256(canonical_json(value)).hexdigest()


class Verdict(StrEnum):
    PROCEED = "proceed"  # do the work, then store its result
    REPLAY = "replay"  # answer with the stored result
    MISMATCH = "mismatch"  # 422: the key was used for another request
    IN_FLIGHT = "in_flight"  # 409: the first request with this key has not finished


@dataclass(frozen=True, slots=True)
class StoredKey:
    """What the store holds for one (workspace, scope, key)."""

    fingerprint: str
    completed: bool
    lease_until: datetime | None
    expires_at: datetime


def decide(existing: StoredKey | None, request_fingerprint: str, now: datetime) -> Verdict:
    """What to do with a request, given what the store holds for its key (None: nothing)."""
    if existing is None or existing.expires_at <= now:
        return Verdict.PROCEED  # an expired key is forgotten: this is a new request
    if existing.fingerprint != request_fingerprint:
        return Verdict.MISMATCH
    if existing.completed:
        return Verdict.REPLAY
    if existing.lease_until is not None and existing.lease_until <= now:
        return Verdict.PROCEED  # the holder died or hung past its lease: take the key over
    return Verdict.IN_FLIGHT
