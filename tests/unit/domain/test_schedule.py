"""Trigger specs, next ticks, catch-up (DUR-09's numbers) and overlap decisions; plus property tests."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cosmogen.domain.schedule import (
    MISSED_LIST_LIMIT,
    ON_TIME_GRACE_S,
    Catchup,
    CronSpec,
    IntervalSpec,
    ManualSpec,
    Overlap,
    OverlapDecision,
    ScheduledSpec,
    TriggerSpecError,
    WebhookSpec,
    next_fire,
    overlap_decision,
    parse_trigger_spec,
    plan_ticks,
)

T0 = datetime(2030, 1, 1, tzinfo=UTC)


def at(hh: int, mm: int, ss: int = 0) -> datetime:
    return T0.replace(hour=hh, minute=mm, second=ss)


def hhmm(ticks: list[datetime]) -> list[str]:
    return [t.strftime("%H:%M") for t in ticks]


# --- parsing --------------------------------------------------------------------------------------


def test_parses_each_kind_with_defaults_and_round_trips() -> None:
    cron = parse_trigger_spec({"kind": "cron", "expr": "*/5 * * * *"})
    assert cron == CronSpec("*/5 * * * *", "UTC", Catchup.ALL, 900, Overlap.SKIP)
    interval = parse_trigger_spec({"kind": "interval", "every_s": 30, "overlap": "queue", "catchup": "one"})
    assert interval == IntervalSpec(30, Catchup.ONE, 900, Overlap.QUEUE)
    assert parse_trigger_spec({"kind": "manual"}) == ManualSpec()
    assert parse_trigger_spec({"kind": "webhook"}) == WebhookSpec(signed=True, idempotency_key="optional")
    unsigned = parse_trigger_spec({"kind": "webhook", "signed": False, "idempotency_key": "required"})
    assert unsigned == WebhookSpec(signed=False, idempotency_key="required")
    for spec in (cron, interval, ManualSpec(), WebhookSpec(), unsigned):
        assert parse_trigger_spec(spec.to_dict()) == spec


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (
            {"kind": "cron", "expr": "61 * * * *"},
            ["cron expression '61 * * * *' is not valid", "'*/5 * * * *'"],
        ),
        ({"kind": "cron", "expr": "* * * * * *"}, ["has 6 fields", "use five", "'*/5 * * * *'"]),
        ({"kind": "cron", "expr": "0 0 31 2 *"}, ["'0 0 31 2 *' is not valid"]),
        ({"kind": "cron", "expr": ""}, ["'expr' must be a cron expression such as '*/5 * * * *'"]),
        ({"kind": "cron", "expr": "* * * * *", "timezone": "Mars/Base"}, ["unknown timezone 'Mars/Base'"]),
        ({"kind": "cron"}, ["needs ['expr']", "'expr': '*/5 * * * *'"]),
        ({"kind": "interval", "every_s": 0}, ["'every_s' must be a whole number of seconds from 1"]),
        ({"kind": "interval", "every_s": True}, ["'every_s' must be a whole number", "not True"]),
        ({"kind": "interval", "every_s": 1.5}, ["not 1.5"]),
        ({"kind": "interval", "every_s": 5, "catchup": "later"}, ["'catchup' must be one of skip, one, all"]),
        ({"kind": "interval", "every_s": 5, "overlap": "x"}, ["'overlap' must be one of skip, queue, allow"]),
        (
            {"kind": "interval", "every_s": 5, "catchup_window_s": 5},
            ["'catchup_window_s' must be", "from 10"],
        ),
        ({"kind": "webhook", "secret": "x"}, ["unknown keys ['secret']", "allowed: idempotency_key, signed"]),
        ({"kind": "webhook", "signed": "yes"}, ["'signed' must be true or false, not 'yes'"]),
        ({"kind": "webhook", "idempotency_key": "always"}, ["'optional' or 'required', not 'always'"]),
        ({"kind": "manual", "signed": True}, ["unknown keys ['signed']", "none besides 'kind'"]),
        ({"kind": "hourly"}, ["'kind' must be one of manual, interval, cron, webhook, not 'hourly'"]),
        ({}, ["'kind' must be one of"]),
        ("cron", ["must be a JSON object"]),
    ],
)
def test_bad_specs_say_what_is_wrong_and_how_to_fix_it(raw: Any, expected: list[str]) -> None:
    with pytest.raises(TriggerSpecError) as caught:
        parse_trigger_spec(raw)
    for fragment in expected:
        assert fragment in str(caught.value)


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(TriggerSpecError) as caught:
        parse_trigger_spec({"kind": "interval", "every_s": 0, "catchup": "x", "extra": 1})
    assert len(caught.value.problems) == 3


def test_constructing_a_spec_directly_validates_it_too() -> None:
    with pytest.raises(TriggerSpecError, match="has 3 fields"):
        CronSpec("not a cron")
    with pytest.raises(TriggerSpecError, match="'every_s' must be"):
        IntervalSpec(0)


# --- next_fire ------------------------------------------------------------------------------------


def test_next_fire_of_cron_and_interval() -> None:
    every5 = CronSpec("*/5 * * * *")
    assert next_fire(every5, at(0, 0)) == at(0, 5)  # strictly after
    assert next_fire(every5, at(0, 3, 7)) == at(0, 5)
    assert next_fire(IntervalSpec(90), at(0, 0)) == at(0, 1, 30)


def test_cron_in_a_timezone_fires_at_local_time_across_dst() -> None:
    nine = CronSpec("0 9 * * *", timezone="Europe/Berlin")
    assert next_fire(nine, datetime(2030, 1, 10, tzinfo=UTC)) == datetime(2030, 1, 10, 8, tzinfo=UTC)  # CET
    assert next_fire(nine, datetime(2030, 7, 10, tzinfo=UTC)) == datetime(2030, 7, 10, 7, tzinfo=UTC)  # CEST
    assert next_fire(nine, at(0, 0)).tzinfo is UTC


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="naive"):
        next_fire(IntervalSpec(5), datetime(2030, 1, 1))
    with pytest.raises(ValueError, match="naive"):
        plan_ticks(IntervalSpec(5), T0, datetime(2030, 1, 1))


# --- catch-up: DUR-09 -----------------------------------------------------------------------------


def dur09(catchup: str) -> CronSpec:
    return CronSpec("*/5 * * * *", catchup=Catchup(catchup), catchup_window_s=15 * 60)


def test_dur09_all_fires_the_three_ticks_inside_the_window_and_misses_nine() -> None:
    # Fired 00:00, then down until 01:00:30: the trigger was waiting for 00:05.
    plan = plan_ticks(dur09("all"), at(0, 5), at(1, 0, 30))
    assert hhmm(plan.fire) == ["00:50", "00:55", "01:00"]
    assert hhmm(plan.missed) == [f"00:{m:02}" for m in range(5, 50, 5)]  # 00:05 .. 00:45
    assert plan.next_at == at(1, 5)
    assert not plan.missed_truncated


def test_dur09_one_fires_only_the_newest_tick() -> None:
    plan = plan_ticks(dur09("one"), at(0, 5), at(1, 0, 30))
    assert hhmm(plan.fire) == ["01:00"]
    assert len(plan.missed) == 11
    assert plan.next_at == at(1, 5)


def test_dur09_skip_fires_nothing_late() -> None:
    plan = plan_ticks(dur09("skip"), at(0, 5), at(1, 0, 30))
    assert plan.fire == []
    assert len(plan.missed) == 12
    assert plan.next_at == at(1, 5)


@pytest.mark.parametrize("catchup", ["skip", "one", "all"])
def test_a_tick_checked_on_time_fires_whatever_the_catchup(catchup: str) -> None:
    plan = plan_ticks(dur09(catchup), at(0, 5), at(0, 5, ON_TIME_GRACE_S))
    assert plan.fire == [at(0, 5)]
    assert plan.missed == []
    assert plan.next_at == at(0, 10)


def test_nothing_is_due_before_the_planned_tick() -> None:
    plan = plan_ticks(dur09("all"), at(0, 5), at(0, 4, 59))
    assert plan == plan.__class__([], [], at(0, 5))


def test_a_long_outage_lists_a_bounded_number_of_missed_ticks_and_keeps_the_window() -> None:
    spec = CronSpec("* * * * *", catchup_window_s=600)
    plan = plan_ticks(spec, T0, T0 + timedelta(days=365))
    assert len(plan.missed) == MISSED_LIST_LIMIT
    assert plan.missed_truncated
    assert len(plan.fire) == 11  # the ticks of the last 10 minutes, both ends included
    assert plan.next_at == T0 + timedelta(days=365, minutes=1)


def test_a_long_interval_outage_stays_on_the_interval_grid() -> None:
    spec = IntervalSpec(7, catchup=Catchup.ONE, catchup_window_s=60)
    now = T0 + timedelta(days=30, seconds=3)
    plan = plan_ticks(spec, T0, now)
    assert plan.missed_truncated
    [fired] = plan.fire
    assert (fired - T0).total_seconds() % 7 == 0
    assert fired <= now < fired + timedelta(seconds=7) == plan.next_at


# --- overlap --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "in_flight", "pending", "expected"),
    [
        ("skip", 0, False, "start"),
        ("skip", 1, False, "skip"),
        ("queue", 0, False, "start"),
        ("queue", 2, False, "defer"),
        ("queue", 1, True, "skip"),
        ("allow", 5, True, "start"),
    ],
)
def test_overlap_decision(policy: str, in_flight: int, pending: bool, expected: str) -> None:
    assert overlap_decision(Overlap(policy), in_flight, pending) is OverlapDecision(expected)


def test_overlap_refuses_a_negative_count() -> None:
    with pytest.raises(ValueError, match="cannot be negative"):
        overlap_decision(Overlap.SKIP, -1, False)


# --- properties -----------------------------------------------------------------------------------

CRONS = ["*/5 * * * *", "* * * * *", "0 * * * *", "30 2 * * *", "0 9 * * 1-5", "15,45 */3 * * *", "@hourly"]
ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata"]


@st.composite
def scheduled_specs(draw: st.DrawFn) -> ScheduledSpec:
    policy: dict[str, Any] = {
        "catchup": draw(st.sampled_from(list(Catchup))),
        "catchup_window_s": draw(st.integers(ON_TIME_GRACE_S, 6 * 3600)),
        "overlap": draw(st.sampled_from(list(Overlap))),
    }
    if draw(st.booleans()):
        return IntervalSpec(every_s=draw(st.integers(1, 7200)), **policy)
    return CronSpec(draw(st.sampled_from(CRONS)), timezone=draw(st.sampled_from(ZONES)), **policy)


instants = st.datetimes(
    min_value=datetime(2029, 1, 1), max_value=datetime(2031, 12, 31), timezones=st.just(UTC)
)


@settings(max_examples=150, deadline=None)
@given(scheduled_specs(), instants, st.lists(st.integers(0, 4 * 3600), min_size=1, max_size=8))
def test_repeated_planning_fires_each_tick_at_most_once_in_order(
    spec: ScheduledSpec, start: datetime, steps: list[int]
) -> None:
    """A scheduler that plans again and again from `next_at` never sees a tick twice."""
    planned = next_fire(spec, start)
    now = start
    seen: list[datetime] = []
    for step in steps:
        now += timedelta(seconds=step)
        plan = plan_ticks(spec, planned, now)
        assert plan.next_at > now
        assert all(t <= now for t in plan.fire + plan.missed)
        assert set(plan.fire).isdisjoint(plan.missed)
        assert plan.fire == sorted(plan.fire)
        if spec.catchup is not Catchup.ALL:
            assert len(plan.fire) <= 1
        seen += plan.fire
        planned = plan.next_at
    assert all(a < b for a, b in itertools.pairwise(seen)), "ticks strictly increase, never repeat"


@settings(max_examples=150, deadline=None)
@given(scheduled_specs(), instants, st.integers(0, 3 * 3600))
def test_every_due_tick_is_fired_or_missed_and_fired_ones_are_inside_the_window(
    spec: ScheduledSpec, start: datetime, late_s: int
) -> None:
    planned = next_fire(spec, start)
    now = planned + timedelta(seconds=late_s)
    plan = plan_ticks(spec, planned, now)
    due = [planned]
    while (following := next_fire(spec, due[-1])) <= now:
        due.append(following)
    window = timedelta(seconds=ON_TIME_GRACE_S if spec.catchup is Catchup.SKIP else spec.catchup_window_s)
    if plan.missed_truncated:
        # Only the first MISSED_LIST_LIMIT are listed; the unlisted ones are all outside the window.
        listed = set(plan.fire + plan.missed)
        assert plan.missed[:MISSED_LIST_LIMIT] == due[:MISSED_LIST_LIMIT]
        assert all(now - t > window for t in due if t not in listed)
    else:
        assert sorted(plan.fire + plan.missed) == due
    assert all(now - t <= window for t in plan.fire)
    assert plan.next_at == next_fire(spec, due[-1])
