"""The Idempotency-Key rules (DUR-11) without a database: header parsing, the fingerprint, the verdicts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from cosmogen.domain.idempotency import (
    IdempotencyKeyError,
    StoredKey,
    Verdict,
    canonical_json,
    decide,
    fingerprint,
    parse_key,
)

NOW = datetime(2030, 1, 1, tzinfo=UTC)


def test_keys_are_read_bare_or_as_a_structured_field_string() -> None:
    assert parse_key("8e03978e-40d5-43e8-bc93-6894a57f9324", required=False) == (
        "8e03978e-40d5-43e8-bc93-6894a57f9324"
    )
    assert parse_key('"abc"', required=True) == "abc"
    assert parse_key(None, required=False) is None


@pytest.mark.parametrize(
    ("raw", "required", "code"),
    [
        (None, True, "idempotency_key_missing"),
        ("", False, "idempotency_key_invalid"),
        ('""', False, "idempotency_key_invalid"),
        ("x" * 256, False, "idempotency_key_invalid"),
        ("tab\there", False, "idempotency_key_invalid"),
        ("clé", False, "idempotency_key_invalid"),
    ],
)
def test_a_missing_or_bad_key_says_what_to_send(raw: str | None, required: bool, code: str) -> None:
    with pytest.raises(IdempotencyKeyError) as caught:
        parse_key(raw, required=required)
    assert caught.value.code == code
    assert "Idempotency-Key" in caught.value.message


def test_the_fingerprint_is_sha256_of_canonical_json() -> None:
    assert canonical_json({"b": [1, 2], "a": "é"}) == '{"a":"é","b":[1,2]}'.encode()
    assert fingerprint({"a": 1, "b": 2}) == fingerprint({"b": 2, "a": 1})
    assert fingerprint({"a": 1}) != fingerprint({"a": 2})
    assert fingerprint({"a": 1}) != fingerprint({"a": 1.0})  # 1 and 1.0 are different requests
    assert len(fingerprint(None)) == 64


def _stored(fp: str = "f", *, completed: bool, lease_s: float | None = 30, ttl_s: float = 3600) -> StoredKey:
    lease = None if lease_s is None else NOW + timedelta(seconds=lease_s)
    return StoredKey(fp, completed, lease, NOW + timedelta(seconds=ttl_s))


def test_the_verdicts() -> None:
    assert decide(None, "f", NOW) is Verdict.PROCEED
    assert decide(_stored(completed=True, lease_s=None), "f", NOW) is Verdict.REPLAY
    assert decide(_stored(completed=True, lease_s=None), "g", NOW) is Verdict.MISMATCH
    assert decide(_stored(completed=False), "f", NOW) is Verdict.IN_FLIGHT
    assert decide(_stored(completed=False), "g", NOW) is Verdict.MISMATCH  # another body: 422 even then
    assert decide(_stored(completed=False, lease_s=-1), "f", NOW) is Verdict.PROCEED  # a dead holder
    assert decide(_stored(completed=True, ttl_s=0), "g", NOW) is Verdict.PROCEED  # expired: a new key
