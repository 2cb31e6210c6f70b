"""Prometheus metrics: one `CollectorRegistry` per `Metrics`, built by the composition root.

Families (all `cosmogen_*`; labels are bounded sets, never URLs, account names or secrets):

- runs: `cosmogen_runs` (gauge, by status, read from the database at scrape time),
  `cosmogen_runs_in_flight`, `cosmogen_runs_finished_total{status}`, `cosmogen_run_duration_seconds`
  and `cosmogen_node_duration_seconds` (histograms);
- external calls: `cosmogen_external_calls_total{provider,capability,status}` (status: `2xx`, `4xx`,
  `5xx`, `timeout`, `connect`, `disconnect`, `egress`...), `cosmogen_external_call_duration_seconds
  {provider,capability}`, `cosmogen_external_call_retries_total{provider,capability}`;
- `cosmogen_rate_limit_waits_total{provider,reason}` and `cosmogen_rate_limit_wait_seconds{provider}`;
- `cosmogen_token_refreshes_total{provider,outcome}` (outcome `ok`, `invalid_grant`, `transient`,
  `client`);
- `cosmogen_journal_commit_seconds`, `cosmogen_journal_commit_group_size`;
- `cosmogen_event_stream_subscribers`, `cosmogen_event_stream_lag_seconds`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from cosmogen.telemetry.hooks import Hooks

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("", "0", "false", "no", "off")
# Seconds: from a pure node (tens of microseconds) to a slow provider call with retries (a minute).
_DURATIONS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
_GROUPS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)

log = logging.getLogger(__name__)


class MetricsSettingError(ValueError):
    """COSMOGEN_METRICS_PUBLIC has a value we cannot read."""


def metrics_public(env: Mapping[str, str]) -> bool:
    """COSMOGEN_METRICS_PUBLIC=1 serves /metrics without a token (for a scraper on a private network)."""
    text = env.get("COSMOGEN_METRICS_PUBLIC", "").strip().lower()
    if text not in _TRUE + _FALSE:
        raise MetricsSettingError(f"COSMOGEN_METRICS_PUBLIC must be 1 or 0, not {text!r}")
    return text in _TRUE


class _Gauges(Collector):
    """Gauges read when scraped: runs in flight, and every run by status (one grouped count)."""

    def __init__(self) -> None:
        self.in_flight: Callable[[], int] | None = None
        self.runs_by_status: Callable[[], Mapping[str, int]] | None = None

    def collect(self) -> Iterator[GaugeMetricFamily]:
        if self.in_flight is not None:
            yield GaugeMetricFamily(
                "cosmogen_runs_in_flight", "Runs this process is executing now", value=self.in_flight()
            )
        if self.runs_by_status is not None:
            family = GaugeMetricFamily("cosmogen_runs", "Runs in the database, by status", labels=["status"])
            try:
                counted = self.runs_by_status()
            except Exception:  # a scrape must answer even when the database does not
                log.warning("counting runs by status for /metrics failed", exc_info=True)
                counted = {}
            for status, count in sorted(counted.items()):
                family.add_metric([status], count)
            yield family


class Metrics(Hooks):
    """The hooks, recording into this instance's own registry; `render()` is the /metrics body."""

    def __init__(self, *, public: bool = False) -> None:
        self.public = public
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self._gauges = _Gauges()
        r.register(self._gauges)
        self.runs_finished = Counter(
            "cosmogen_runs_finished",
            "Runs an executor stopped working on, by the status left",
            ["status"],
            registry=r,
        )
        self.run_seconds = Histogram(
            "cosmogen_run_duration_seconds",
            "Time an executor spent on a run, start to stop",
            buckets=_DURATIONS,
            registry=r,
        )
        self.node_seconds = Histogram(
            "cosmogen_node_duration_seconds",
            "Time one node took, its calls included",
            buckets=_DURATIONS,
            registry=r,
        )
        self.calls = Counter(
            "cosmogen_external_calls",
            "External calls, by provider, capability and status class",
            ["provider", "capability", "status"],
            registry=r,
        )
        self.call_seconds = Histogram(
            "cosmogen_external_call_duration_seconds",
            "External call latency, all attempts and waits",
            ["provider", "capability"],
            buckets=_DURATIONS,
            registry=r,
        )
        self.retries = Counter(
            "cosmogen_external_call_retries",
            "Attempts after the first, by provider and capability",
            ["provider", "capability"],
            registry=r,
        )
        self.waits = Counter(
            "cosmogen_rate_limit_waits",
            "Calls that waited for a rate limit or a Retry-After",
            ["provider", "reason"],
            registry=r,
        )
        self.wait_seconds = Histogram(
            "cosmogen_rate_limit_wait_seconds",
            "How long calls waited for their rate limit",
            ["provider"],
            buckets=_DURATIONS,
            registry=r,
        )
        self.refreshes = Counter(
            "cosmogen_token_refreshes",
            "OAuth refresh-token grants sent, by outcome",
            ["provider", "outcome"],
            registry=r,
        )
        self.commit_seconds = Histogram(
            "cosmogen_journal_commit_seconds",
            "Group-commit transaction time, first write to COMMIT",
            buckets=_DURATIONS,
            registry=r,
        )
        self.commit_size = Histogram(
            "cosmogen_journal_commit_group_size",
            "Writes committed together in one transaction",
            buckets=_GROUPS,
            registry=r,
        )
        self.subscribers = Gauge(
            "cosmogen_event_stream_subscribers", "Event-stream subscribers connected now", registry=r
        )
        self.lag_seconds = Histogram(
            "cosmogen_event_stream_lag_seconds",
            "From an event's journal write (before its commit) to the live feed's hand-off to subscribers",
            buckets=_DURATIONS,
            registry=r,
        )
        self.backups = Counter(
            "cosmogen_backups", "Scheduled backups taken, by outcome (ok, failed)", ["outcome"], registry=r
        )
        self.backup_last_success = Gauge(
            "cosmogen_backup_last_success_timestamp_seconds",
            "Unix time of the last scheduled backup that was written",
            registry=r,
        )

        # Labelled children, looked up once: `labels()` costs more than the update itself.
        self._finished: dict[str, Any] = {}
        self._call_children: dict[tuple[str, str, str], tuple[Any, Any]] = {}

    # --- hooks ------------------------------------------------------------------------------------

    def run_finished(self, status: str, seconds: float) -> None:
        child = self._finished.get(status)
        if child is None:
            child = self._finished[status] = self.runs_finished.labels(status)
        child.inc()
        self.run_seconds.observe(seconds)

    def node_finished(self, seconds: float) -> None:
        self.node_seconds.observe(seconds)

    def call_finished(
        self, provider: str, capability: str, status: str, seconds: float, attempts: int
    ) -> None:
        key = (provider, capability, status)
        children = self._call_children.get(key)
        if children is None:
            children = self._call_children[key] = (
                self.calls.labels(provider, capability, status),
                self.call_seconds.labels(provider, capability),
            )
        children[0].inc()
        children[1].observe(seconds)
        if attempts > 1:
            self.retries.labels(provider, capability).inc(attempts - 1)

    def rate_limit_wait(self, provider: str, reason: str, seconds: float) -> None:
        self.waits.labels(provider, reason).inc()
        self.wait_seconds.labels(provider).observe(seconds)

    def token_refresh(self, provider: str, outcome: str) -> None:
        self.refreshes.labels(provider, outcome).inc()

    def commit(self, seconds: float, size: int) -> None:
        self.commit_seconds.observe(seconds)
        self.commit_size.observe(size)

    def stream_subscribed(self, delta: int) -> None:
        self.subscribers.inc(delta)

    def stream_lag(self, seconds: float) -> None:
        self.lag_seconds.observe(seconds)

    def backup_finished(self, ok: bool, seconds: float) -> None:
        self.backups.labels("ok" if ok else "failed").inc()
        if ok:
            self.backup_last_success.set_to_current_time()

    def watch(self, in_flight: Callable[[], int], runs_by_status: Callable[[], Mapping[str, int]]) -> None:
        self._gauges.in_flight = in_flight
        self._gauges.runs_by_status = runs_by_status

    # --- exposition -------------------------------------------------------------------------------

    def render(self) -> bytes:
        """The text exposition format of everything in this registry."""
        return generate_latest(self.registry)
