from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cosmogen.integrations.retry import (
    MAX_RETRY_AFTER_S,
    Failure,
    RetryPolicy,
    Verdict,
    classify,
    parse_retry_after,
    repeatable,
)


@pytest.mark.parametrize("status", [200, 201, 204, 301])
def test_success(status: int) -> None:
    assert classify(status, None, repeatable_request=False) is Verdict.SUCCESS


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 422])
def test_client_errors_never_retry(status: int) -> None:
    assert classify(status, None, repeatable_request=True) is Verdict.FAIL


@pytest.mark.parametrize("status", [408, 425, 429, 500, 502, 503, 504])
def test_retryable_statuses_retry_when_the_request_is_repeatable(status: int) -> None:
    assert classify(status, None, repeatable_request=True) is Verdict.RETRY


@pytest.mark.parametrize(
    ("status", "verdict"),
    [
        (429, Verdict.RETRY),
        (503, Verdict.RETRY),
        (500, Verdict.FAIL),
        (502, Verdict.FAIL),
        (504, Verdict.FAIL),
    ],
)
def test_unrepeatable_post_retries_only_when_the_server_cannot_have_acted(
    status: int, verdict: Verdict
) -> None:
    assert classify(status, None, repeatable_request=False) is verdict


def test_transport_failures() -> None:
    assert classify(None, Failure.CONNECT, repeatable_request=False) is Verdict.RETRY
    assert classify(None, Failure.TIMEOUT, repeatable_request=False) is Verdict.FAIL
    assert classify(None, Failure.TIMEOUT, repeatable_request=True) is Verdict.RETRY
    assert classify(None, Failure.DISCONNECT, repeatable_request=True) is Verdict.RETRY


def test_repeatable_methods_and_keys() -> None:
    assert repeatable("get", False)
    assert repeatable("PUT", False)
    assert not repeatable("POST", False)
    assert repeatable("POST", True)


def test_backoff_is_equal_jitter_under_caps_of_1_2_4_seconds() -> None:
    policy = RetryPolicy()
    assert [policy.cap(n) for n in (1, 2, 3)] == [1.0, 2.0, 4.0]
    assert [policy.backoff(n, 0.0) for n in (1, 2, 3)] == [0.5, 1.0, 2.0]  # the floor: half the cap
    assert [policy.backoff(n, 0.5) for n in (1, 2, 3)] == [0.75, 1.5, 3.0]
    assert policy.backoff(3, 0.999999) == pytest.approx(4.0, abs=1e-5)
    assert policy.cap(7) == 60.0 and policy.cap(10_000) == 60.0  # capped, and no overflow
    assert 30.0 <= policy.backoff(30, 0.3) <= 60.0


@given(st.integers(1, 4), st.floats(0.0, 1.0, exclude_max=True), st.floats(0.0, 1.0, exclude_max=True))
def test_backoff_grows_exponentially_within_its_interval(n: int, u: float, v: float) -> None:
    policy = RetryPolicy()
    cap = 2.0 ** (n - 1)
    wait = policy.backoff(n, u)
    assert cap / 2 <= wait <= cap <= 60.0
    # Any draw for retry n+1 is at least any draw for retry n: the floor doubles with the cap.
    assert policy.backoff(n + 1, v) >= wait


def test_retry_after_replaces_the_backoff_and_is_never_shortened_below_an_hour() -> None:
    policy = RetryPolicy()
    assert policy.backoff(1, 0.5, retry_after=7.0) == 7.0
    assert policy.backoff(3, 0.5, retry_after=0.0) == 0.0
    assert policy.backoff(1, 0.5, retry_after=120.0) == 120.0  # above the 60 s cap: still obeyed
    assert policy.backoff(1, 0.5, retry_after=10_000_000.0) == MAX_RETRY_AFTER_S == 3600.0


@pytest.mark.parametrize(
    ("settings", "problem"),
    [
        ({"max_retries": 5}, "max_retries must be a whole number from 0 to 4 (at most 5 attempts in all)"),
        ({"max_retries": -1}, "max_retries"),
        ({"max_delay": 61.0}, "max_delay must be more than 0 and at most 60 s"),
        ({"base_delay": 0.0}, "base_delay must be more than 0"),
        ({"factor": 0.5}, "factor must be from 1 to 10"),
    ],
)
def test_a_policy_beyond_5_attempts_or_60_s_is_refused(settings: dict[str, float], problem: str) -> None:
    with pytest.raises(ValueError, match="invalid retry policy") as info:
        RetryPolicy(**settings)  # type: ignore[arg-type]
    assert problem in str(info.value)
    assert RetryPolicy(max_retries=4).max_retries == 4 and RetryPolicy(max_retries=0).max_retries == 0


def test_parse_retry_after() -> None:
    now = datetime(2026, 11, 28, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("5", now) == 5.0
    assert parse_retry_after("Sat, 28 Nov 2026 12:00:30 GMT", now) == 30.0
    assert parse_retry_after("Sat, 28 Nov 2026 11:00:00 GMT", now) == 0.0
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after(None, now) is None
