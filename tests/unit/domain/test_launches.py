"""The launch status machine and launch configuration validation."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cosmogen.domain.launches import (
    IllegalLaunchTransition,
    LaunchAction,
    LaunchConfig,
    LaunchConfigError,
    LaunchStatus,
    Notify,
    NotifyChannel,
    TelemetryLevel,
    allowed_actions,
    apply_action,
    config_problems_for_document,
    parse_launch_config,
    universe_deployment_status,
)

DRAFT, LIVE, PAUSED, ARCHIVED = LaunchStatus


@pytest.mark.parametrize(
    ("start", "action", "end"),
    [
        (DRAFT, "go_live", LIVE),
        (LIVE, "pause", PAUSED),
        (PAUSED, "resume", LIVE),
        (LIVE, "stop", DRAFT),
        (PAUSED, "stop", DRAFT),
        (PAUSED, "archive", ARCHIVED),
        (DRAFT, "archive", ARCHIVED),
    ],
)
def test_legal_transitions(start: LaunchStatus, action: str, end: LaunchStatus) -> None:
    assert apply_action(start, LaunchAction(action)) is end


@pytest.mark.parametrize(
    ("start", "action", "message"),
    [
        (LIVE, "archive", "a live launch cannot archive; pause or stop it first; possible now: pause, stop"),
        (DRAFT, "pause", "a draft launch cannot pause; possible now: archive, go_live"),
        (PAUSED, "go_live", "a paused launch cannot go_live; possible now: archive, resume, stop"),
        (ARCHIVED, "resume", "an archived launch is read-only; create a new launch"),
        (DRAFT, "stop", "possible now: archive, go_live"),
    ],
)
def test_illegal_transitions_say_what_is_possible(start: LaunchStatus, action: str, message: str) -> None:
    with pytest.raises(IllegalLaunchTransition) as caught:
        apply_action(start, LaunchAction(action))
    assert message in str(caught.value)


@given(st.sampled_from(list(LaunchStatus)), st.lists(st.sampled_from(list(LaunchAction)), max_size=20))
def test_any_sequence_of_actions_follows_allowed_actions_and_archived_is_final(
    start: LaunchStatus, actions: list[LaunchAction]
) -> None:
    status = start
    for action in actions:
        if action in allowed_actions(status):
            status = apply_action(status, action)
        else:
            with pytest.raises(IllegalLaunchTransition):
                apply_action(status, action)
    assert allowed_actions(ARCHIVED) == frozenset()
    if start is ARCHIVED:
        assert status is ARCHIVED


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        ([], DRAFT),
        ([ARCHIVED], ARCHIVED),
        ([ARCHIVED, DRAFT], DRAFT),
        ([DRAFT, PAUSED, ARCHIVED], PAUSED),
        ([PAUSED, LIVE, DRAFT], LIVE),
    ],
)
def test_universe_shows_its_most_active_launch(statuses: list[LaunchStatus], expected: LaunchStatus) -> None:
    assert universe_deployment_status(statuses) is expected


# --- config ---------------------------------------------------------------------------------------


def test_config_defaults_are_a_dry_run_with_standard_telemetry() -> None:
    config = parse_launch_config({})
    assert config == LaunchConfig()
    assert config.dry_run is True
    assert config.telemetry_level is TelemetryLevel.STANDARD
    assert parse_launch_config(None) == config


def test_full_config_parses_and_round_trips() -> None:
    raw = {
        "dry_run": False,
        "binding_overrides": {"notify": "acct_prod"},
        "entry_node": "open",
        "telemetry_level": "verbose",
        "notify": [
            {"channel": "email", "target": "ops@example.com"},
            {"channel": "in-app", "target": "current"},
        ],
    }
    config = parse_launch_config(raw)
    assert config.dry_run is False
    assert dict(config.binding_overrides) == {"notify": "acct_prod"}
    assert config.notify == (
        Notify(NotifyChannel.EMAIL, "ops@example.com"),
        Notify(NotifyChannel.IN_APP, "current"),
    )
    assert config.to_dict() == raw
    assert parse_launch_config(config.to_dict()) == config


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ({"dry_run": "yes"}, "'dry_run' must be true or false, not 'yes'"),
        ({"binding_overrides": ["notify"]}, "'binding_overrides' must map binding ids to account ids"),
        ({"binding_overrides": {"notify": 3}}, "are not binding id -> account id strings"),
        ({"entry_node": ""}, "'entry_node' must be a node id"),
        (
            {"telemetry_level": "loud"},
            "'telemetry_level' must be one of minimal, standard, verbose, not 'loud'",
        ),
        ({"notify": {"channel": "email"}}, "'notify' must be a list of {channel, target} objects"),
        (
            {"notify": [{"channel": "pager", "target": "x"}]},
            "'notify[0].channel' must be one of email, slack",
        ),
        ({"notify": [{"channel": "email", "target": " "}]}, "'notify[0].target' must be a non-empty string"),
        (
            {"notify": [{"channel": "email"}]},
            "'notify[0]' must be an object with exactly 'channel' and 'target'",
        ),
        ({"dryRun": True}, "unknown keys ['dryRun']; the config accepts binding_overrides, dry_run"),
        ([1], "the launch config must be a JSON object"),
    ],
)
def test_bad_config_says_what_is_wrong_and_how_to_fix_it(raw: Any, fragment: str) -> None:
    with pytest.raises(LaunchConfigError) as caught:
        parse_launch_config(raw)
    assert fragment in str(caught.value)


def test_all_config_problems_are_reported_together() -> None:
    with pytest.raises(LaunchConfigError) as caught:
        parse_launch_config({"dry_run": 1, "telemetry_level": "x", "extra": True})
    assert len(caught.value.problems) == 3


def test_config_is_checked_against_the_pinned_document() -> None:
    config = parse_launch_config({"entry_node": "nope", "binding_overrides": {"ghost": "acct"}})
    problems = config_problems_for_document(config, {"open", "spend"}, {"notify"})
    assert problems == [
        "'entry_node' 'nope' is not a node of this version; its nodes: open, spend",
        "'binding_overrides' names bindings ['ghost'] this version does not have; its bindings: notify",
    ]
    assert config_problems_for_document(LaunchConfig(), set(), set()) == []
