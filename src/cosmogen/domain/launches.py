"""Launches: the deployment status machine and the launch configuration. Pure.

A launch pins one saved version of a universe with a configuration and its triggers.

    draft --go_live--> live --pause--> paused --archive--> archived
      ^                  ^  <--resume--   |
      +------stop--------+-------stop-----+        (draft can also be archived)

`stop` returns a live or paused launch to draft (its triggers stop and its unfinished runs are cancelled);
`archived` is read-only: nothing leaves it.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Any


class LaunchStatus(StrEnum):
    DRAFT = "draft"
    LIVE = "live"
    PAUSED = "paused"
    ARCHIVED = "archived"


class LaunchAction(StrEnum):
    GO_LIVE = "go_live"
    PAUSE = "pause"
    RESUME = "resume"
    STOP = "stop"
    ARCHIVE = "archive"


class TelemetryLevel(StrEnum):
    MINIMAL = "minimal"  # run status only
    STANDARD = "standard"  # per-node events
    VERBOSE = "verbose"  # per-node events with redacted payloads


class NotifyChannel(StrEnum):
    EMAIL = "email"
    SLACK = "slack"
    TEAMS = "teams"
    WEBHOOK = "webhook"
    IN_APP = "in-app"


_TRANSITIONS: Mapping[LaunchStatus, Mapping[LaunchAction, LaunchStatus]] = MappingProxyType(
    {
        LaunchStatus.DRAFT: MappingProxyType(
            {LaunchAction.GO_LIVE: LaunchStatus.LIVE, LaunchAction.ARCHIVE: LaunchStatus.ARCHIVED}
        ),
        LaunchStatus.LIVE: MappingProxyType(
            {LaunchAction.PAUSE: LaunchStatus.PAUSED, LaunchAction.STOP: LaunchStatus.DRAFT}
        ),
        LaunchStatus.PAUSED: MappingProxyType(
            {
                LaunchAction.RESUME: LaunchStatus.LIVE,
                LaunchAction.STOP: LaunchStatus.DRAFT,
                LaunchAction.ARCHIVE: LaunchStatus.ARCHIVED,
            }
        ),
        LaunchStatus.ARCHIVED: MappingProxyType({}),
    }
)

# Which launch speaks for its universe's deployment status: the most active one.
_ACTIVITY = (LaunchStatus.ARCHIVED, LaunchStatus.DRAFT, LaunchStatus.PAUSED, LaunchStatus.LIVE)


class IllegalLaunchTransition(Exception):
    def __init__(self, current: LaunchStatus, action: LaunchAction) -> None:
        self.current = current
        self.action = action
        allowed = ", ".join(sorted(a.value for a in allowed_actions(current)))
        hint = (
            f"possible now: {allowed}" if allowed else "an archived launch is read-only; create a new launch"
        )
        if current is LaunchStatus.LIVE and action is LaunchAction.ARCHIVE:
            hint = "pause or stop it first; " + hint
        super().__init__(f"a {current.value} launch cannot {action.value}; {hint}")


def allowed_actions(current: LaunchStatus) -> frozenset[LaunchAction]:
    return frozenset(_TRANSITIONS[current])


def apply_action(current: LaunchStatus, action: LaunchAction) -> LaunchStatus:
    """The status after `action`, or IllegalLaunchTransition saying what is possible instead."""
    target = _TRANSITIONS[current].get(action)
    if target is None:
        raise IllegalLaunchTransition(current, action)
    return target


def universe_deployment_status(launch_statuses: Iterable[LaunchStatus]) -> LaunchStatus:
    """A universe shows its most active launch (live > paused > draft > archived); no launch means draft."""
    return max(launch_statuses, key=_ACTIVITY.index, default=LaunchStatus.DRAFT)


# --- configuration --------------------------------------------------------------------------------


class LaunchConfigError(ValueError):
    """A launch configuration we cannot use; `problems` says what is wrong with each field and the fix."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid launch config: " + "; ".join(problems))


@dataclass(frozen=True, slots=True)
class Notify:
    channel: NotifyChannel
    target: str

    def to_dict(self) -> dict[str, str]:
        return {"channel": self.channel.value, "target": self.target}


@dataclass(frozen=True, slots=True)
class LaunchConfig:
    # A launch is a dry run unless it says otherwise, as in the Launch Center (seed spec 4.2).
    dry_run: bool = True
    binding_overrides: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    entry_node: str | None = None
    telemetry_level: TelemetryLevel = TelemetryLevel.STANDARD
    notify: tuple[Notify, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "binding_overrides": dict(self.binding_overrides),
            "entry_node": self.entry_node,
            "telemetry_level": self.telemetry_level.value,
            "notify": [n.to_dict() for n in self.notify],
        }


_CONFIG_KEYS = frozenset({"dry_run", "binding_overrides", "entry_node", "telemetry_level", "notify"})


def parse_launch_config(raw: object) -> LaunchConfig:
    """Build a config from its JSON form; every key is optional. Raises LaunchConfigError (all problems)."""
    if raw is None:
        return LaunchConfig()
    if not isinstance(raw, Mapping):
        raise LaunchConfigError(
            [f"the launch config must be a JSON object such as {{'dry_run': true}}, not {raw!r}"]
        )
    problems: list[str] = []
    unknown = sorted(set(raw) - _CONFIG_KEYS)
    if unknown:
        problems.append(f"unknown keys {unknown}; the config accepts {', '.join(sorted(_CONFIG_KEYS))}")
    dry_run = raw.get("dry_run", True)
    if not isinstance(dry_run, bool):
        problems.append(f"'dry_run' must be true or false, not {dry_run!r}")
    overrides = _overrides(raw.get("binding_overrides", {}), problems)
    entry = raw.get("entry_node")
    if entry is not None and (not isinstance(entry, str) or not entry):
        problems.append(
            f"'entry_node' must be a node id (a non-empty string) or null for all nodes, not {entry!r}"
        )
    level = raw.get("telemetry_level", TelemetryLevel.STANDARD.value)
    if level not in {t.value for t in TelemetryLevel}:
        problems.append(f"'telemetry_level' must be one of minimal, standard, verbose, not {level!r}")
    notify = _notify(raw.get("notify", []), problems)
    if problems:
        raise LaunchConfigError(problems)
    return LaunchConfig(
        dry_run=bool(dry_run),
        binding_overrides=MappingProxyType(overrides),
        entry_node=entry,
        telemetry_level=TelemetryLevel(level),
        notify=notify,
    )


def _overrides(raw: object, problems: list[str]) -> dict[str, str]:
    example = "{'notify': 'acct_prod_slack'}"
    if not isinstance(raw, Mapping):
        problems.append(
            f"'binding_overrides' must map binding ids to account ids, e.g. {example}, not {raw!r}"
        )
        return {}
    bad = [k for k, v in raw.items() if not (isinstance(k, str) and k and isinstance(v, str) and v)]
    if bad:
        problems.append(
            f"'binding_overrides' entries {bad!r} are not binding id -> account id strings; e.g. {example}"
        )
    return {str(k): str(v) for k, v in raw.items()}


def _notify(raw: object, problems: list[str]) -> tuple[Notify, ...]:
    channels = ", ".join(c.value for c in NotifyChannel)
    example = "[{'channel': 'email', 'target': 'ops@example.com'}]"
    if not isinstance(raw, list):
        problems.append(
            f"'notify' must be a list of {{channel, target}} objects, e.g. {example}, not {raw!r}"
        )
        return ()
    found: list[Notify] = []
    for i, item in enumerate(raw):
        if not isinstance(item, Mapping) or set(item) != {"channel", "target"}:
            problems.append(
                f"'notify[{i}]' must be an object with exactly 'channel' and 'target', e.g. {example}"
            )
            continue
        channel, target = item["channel"], item["target"]
        if channel not in {c.value for c in NotifyChannel}:
            problems.append(f"'notify[{i}].channel' must be one of {channels}, not {channel!r}")
        elif not isinstance(target, str) or not target.strip():
            problems.append(
                f"'notify[{i}].target' must be a non-empty string "
                "(an address, channel or URL; 'current' for in-app)"
            )
        else:
            found.append(Notify(NotifyChannel(channel), target))
    return tuple(found)


def config_problems_for_document(
    config: LaunchConfig, node_ids: Collection[str], binding_ids: Collection[str]
) -> list[str]:
    """What in `config` does not fit the pinned version: an entry node or overridden binding it lacks."""
    problems = []
    if config.entry_node is not None and config.entry_node not in node_ids:
        known = ", ".join(sorted(node_ids)) or "none"
        problems.append(
            f"'entry_node' {config.entry_node!r} is not a node of this version; its nodes: {known}"
        )
    unknown = sorted(set(config.binding_overrides) - set(binding_ids))
    if unknown:
        known = ", ".join(sorted(binding_ids)) or "none"
        problems.append(
            f"'binding_overrides' names bindings {unknown} this version does not have; its bindings: {known}"
        )
    return problems
