"""How much of a run its event log keeps, by a launch's `telemetry_level`. Pure.

- minimal: run-level status events (`run.queued`, `run.started`, `run.succeeded`, `run.paused`, ...) and
  `effect.ambiguous`, which stops a run until a person decides, so it is never hidden;
- standard: every event (per node and per call), as for a run without a launch;
- verbose: every event, and `node.finished` and the call events also carry the node's output and the
  request and response, redacted (the runtime adds them when `shows_payloads` says so).
"""

from __future__ import annotations

from cosmogen.domain.launches import TelemetryLevel

# Kept at every level: each asks a person to act.
_ALWAYS_KEPT = frozenset({"effect.ambiguous"})


def keeps_event(level: TelemetryLevel, event_type: str) -> bool:
    """Whether a run at `level` records an event of `event_type`."""
    if level is TelemetryLevel.MINIMAL:
        return event_type.startswith("run.") or event_type in _ALWAYS_KEPT
    return True


def shows_payloads(level: TelemetryLevel) -> bool:
    """Whether node outputs and (redacted) requests and responses go into the events."""
    return level is TelemetryLevel.VERBOSE
