"""The per-workspace request bucket on a handed-in clock: a burst, then the average rate, a wait that
says when the next request may go, workspaces apart, and nothing that stays closed."""

from __future__ import annotations

import pytest

from cosmogen.domain.request_rate import Buckets, RatePolicy


def test_burst_then_rate_and_retry_after() -> None:
    buckets = Buckets(RatePolicy(per_minute=60, burst=10))
    assert [buckets.take("a", 0.0) for _ in range(10)] == [0] * 10
    assert buckets.take("a", 0.0) == 1  # one a second: 1 s until the next
    assert buckets.take("b", 0.0) == 0  # another workspace has its own bucket
    assert buckets.take("a", 0.5) == 1
    assert buckets.take("a", 1.0) == 0
    assert buckets.take("a", 1.0) == 1
    # Over a long stretch at most burst + rate * time go through.
    allowed = sum(buckets.take("c", t / 10) == 0 for t in range(600))  # 60 s, 10 tries a second
    assert allowed == 10 + 59  # the burst, then one a second (the 60th second's lands at t=60.0)


def test_slow_rates_wait_longer_and_the_policy_is_checked() -> None:
    buckets = Buckets(RatePolicy(per_minute=6, burst=1))
    assert buckets.take("a", 0.0) == 0 and buckets.take("a", 0.0) == 10
    assert buckets.take("a", 10.0) == 0
    with pytest.raises(ValueError, match="at least 1"):
        RatePolicy(per_minute=0)
