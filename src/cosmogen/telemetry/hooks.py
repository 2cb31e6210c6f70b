"""The hooks the runtime calls at the moments worth measuring. No-ops here, so tests, the CLI and the
benchmarks run without metrics at the cost of a method call; `telemetry.metrics.Metrics` overrides them.

One instance per runtime, built by the composition root (`cosmogen serve`, `cosmogen worker`) and passed
down: no module-level registry. Labels are low-cardinality by construction: provider and capability
names come from the registry, statuses are classes (`2xx`, `timeout`...), never URLs or account names.
Hooks must be quick and must never raise into the code that calls them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping


def status_class(status: int | None, kind: str | None = None) -> str:
    """An HTTP status as its class (`2xx`); no status at all: why there was none (`timeout`)."""
    if status is not None and 100 <= status <= 599:
        return f"{status // 100}xx"
    return kind or "error"


class Hooks:
    """Every hook, doing nothing."""

    def run_finished(self, status: str, seconds: float) -> None:
        """An executor stopped working on a run: it ended, paused, parked or needs a person."""

    def node_finished(self, seconds: float) -> None:
        """One node (its operator and its bindings' calls) is done."""

    def call_finished(
        self, provider: str, capability: str, status: str, seconds: float, attempts: int
    ) -> None:
        """An external call is over (all its attempts): `status` is a class (`2xx`, `5xx`, `timeout`)."""

    def rate_limit_wait(self, provider: str, reason: str, seconds: float) -> None:
        """A call waited for a shared rate limit (`rate_limit`) or a 429's Retry-After (`retry_after`)."""

    def token_refresh(self, provider: str, outcome: str) -> None:
        """An OAuth refresh-token grant was sent: `ok`, or the refusal's kind (`invalid_grant`...)."""

    def commit(self, seconds: float, size: int) -> None:
        """The group-commit writer committed `size` writes in one transaction (called on its thread)."""

    def stream_subscribed(self, delta: int) -> None:
        """An event-stream subscriber came (+1) or went (-1)."""

    def stream_lag(self, seconds: float) -> None:
        """The live feed handed an event to its subscribers this long after the journal wrote it (so
        including the group commit; the WebSocket send after it is not counted)."""

    def backup_finished(self, ok: bool, seconds: float) -> None:
        """A scheduled backup (runtime/backups.py) was written, or failed (`ok` False)."""

    def watch(self, in_flight: Callable[[], int], runs_by_status: Callable[[], Mapping[str, int]]) -> None:
        """The runtime offers gauges read at scrape time: its runs in flight, and all runs by status."""
