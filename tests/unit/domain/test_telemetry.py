"""Which run events each telemetry level keeps."""

from __future__ import annotations

import pytest

from cosmogen.domain.launches import TelemetryLevel
from cosmogen.domain.telemetry import keeps_event, shows_payloads

RUN_LEVEL = [
    "run.queued",
    "run.started",
    "run.succeeded",
    "run.failed",
    "run.paused",
    "run.cancelled",
    "run.parked",
    "run.requested",
    "run.resume",
]
PER_NODE = ["node.finished", "effect.intent", "effect.succeeded", "effect.failed", "effect.dry_run"]


@pytest.mark.parametrize("event_type", RUN_LEVEL)
def test_every_level_keeps_run_status_events(event_type: str) -> None:
    assert all(keeps_event(level, event_type) for level in TelemetryLevel)


def test_every_level_keeps_an_ambiguous_effect_because_a_person_must_decide() -> None:
    assert all(keeps_event(level, "effect.ambiguous") for level in TelemetryLevel)


@pytest.mark.parametrize("event_type", PER_NODE)
def test_minimal_drops_per_node_events_and_the_other_levels_keep_them(event_type: str) -> None:
    assert not keeps_event(TelemetryLevel.MINIMAL, event_type)
    assert keeps_event(TelemetryLevel.STANDARD, event_type)
    assert keeps_event(TelemetryLevel.VERBOSE, event_type)


def test_a_prefix_lookalike_is_not_a_run_event() -> None:
    assert not keeps_event(TelemetryLevel.MINIMAL, "runner.started")


def test_only_verbose_shows_payloads() -> None:
    assert [shows_payloads(level) for level in TelemetryLevel] == [False, False, True]
