from datetime import UTC, datetime

import pytest

from cosmogen.integrations.retry import Failure, RetryPolicy, Verdict, classify, parse_retry_after, repeatable


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


def test_backoff_doubles_with_bounded_jitter() -> None:
    policy = RetryPolicy()
    assert [policy.backoff(n, 0.5) for n in (1, 2, 3)] == [1.0, 2.0, 4.0]
    assert policy.backoff(1, 0.0) == pytest.approx(0.8)
    assert policy.backoff(1, 0.999999) == pytest.approx(1.2, abs=1e-5)
    assert policy.backoff(30, 0.5) == 60.0


def test_retry_after_wins_and_is_capped() -> None:
    policy = RetryPolicy()
    assert policy.backoff(1, 0.5, retry_after=7.0) == 7.0
    assert policy.backoff(1, 0.5, retry_after=10_000.0) == 60.0


def test_parse_retry_after() -> None:
    now = datetime(2026, 11, 28, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("5", now) == 5.0
    assert parse_retry_after("Sat, 28 Nov 2026 12:00:30 GMT", now) == 30.0
    assert parse_retry_after("Sat, 28 Nov 2026 11:00:00 GMT", now) == 0.0
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after(None, now) is None
