"""The run state machine: which transitions are legal, decided in one place.

queued -> running -> (paused) -> succeeded | failed | cancelled | needs_attention

Terminal states stay terminal: "retry from the failed node" and "re-run" make a new run that points at
its parent, so a run's history is never rewritten.
"""

from __future__ import annotations

from enum import StrEnum


class RunStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    PAUSED = "paused"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    NEEDS_ATTENTION = "needs_attention"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


class RunAction(StrEnum):
    """What a person (or a process on their behalf) asks of a run."""

    PAUSE = "pause"
    RESUME = "resume"
    CANCEL = "cancel"
    RETRY_ANYWAY = "retry_anyway"  # resend an ambiguous side effect
    MARK_DONE = "mark_done"  # accept that an ambiguous side effect happened


TERMINAL = frozenset({RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED})

TRANSITIONS: dict[RunStatus, frozenset[RunStatus]] = {
    RunStatus.QUEUED: frozenset({RunStatus.RUNNING, RunStatus.CANCELLED, RunStatus.PAUSED}),
    RunStatus.RUNNING: frozenset(
        {
            RunStatus.PAUSED,
            RunStatus.SUCCEEDED,
            RunStatus.FAILED,
            RunStatus.CANCELLED,
            RunStatus.NEEDS_ATTENTION,
            # a crashed process's run is picked up again
            RunStatus.QUEUED,
        }
    ),
    RunStatus.PAUSED: frozenset({RunStatus.QUEUED, RunStatus.CANCELLED}),
    RunStatus.NEEDS_ATTENTION: frozenset({RunStatus.QUEUED, RunStatus.CANCELLED}),
    RunStatus.SUCCEEDED: frozenset(),
    RunStatus.FAILED: frozenset(),
    RunStatus.CANCELLED: frozenset(),
}


class IllegalTransition(Exception):
    def __init__(self, current: RunStatus, wanted: RunStatus | RunAction) -> None:
        self.current = current
        self.wanted = wanted
        allowed = ", ".join(sorted(a.value for a in allowed_actions(current))) or "none (the run has ended)"
        super().__init__(f"a {current.value} run cannot {wanted.value}; possible now: {allowed}")


def can_transition(current: RunStatus, target: RunStatus) -> bool:
    return target in TRANSITIONS[current]


def check_transition(current: RunStatus, target: RunStatus) -> RunStatus:
    if not can_transition(current, target):
        raise IllegalTransition(current, target)
    return target


def allowed_actions(current: RunStatus) -> frozenset[RunAction]:
    if current is RunStatus.QUEUED:
        return frozenset({RunAction.PAUSE, RunAction.CANCEL})
    if current is RunStatus.RUNNING:
        return frozenset({RunAction.PAUSE, RunAction.CANCEL})
    if current is RunStatus.PAUSED:
        return frozenset({RunAction.RESUME, RunAction.CANCEL})
    if current is RunStatus.NEEDS_ATTENTION:
        return frozenset({RunAction.RETRY_ANYWAY, RunAction.MARK_DONE, RunAction.CANCEL})
    return frozenset()


def check_action(current: RunStatus, action: RunAction) -> None:
    if action not in allowed_actions(current):
        raise IllegalTransition(current, action)
