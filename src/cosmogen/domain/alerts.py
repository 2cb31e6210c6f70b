"""Alerts and notifications: rule kinds, channel settings, which rules a condition matches, the dedup
decision, retry timing and the message. Pure: the dispatcher (runtime/alerts.py) reads and writes.

A *condition* is something worth telling someone: a run failed or needs attention, an account's token
refresh failed or its grant is lost or about to run out, a universe's calls fail above a threshold, a
rate limit is saturated. A *rule* of the workspace says which conditions (kind, optionally one universe)
go to which channels. One condition and one rule make one notification (one in-app row and one delivery
per channel), unless the same `dedup_key` was notified within the rule's `dedup_window_s`: then it only
counts as a repeat of that notification.

The dedup key is (rule, kind, subject): the subject is the universe and the run's error code for run
conditions (so a universe failing the same way every minute alerts once per window), the account and
its error code for token conditions, the universe for error rates, the limiter key for saturation.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit


class RuleKind(StrEnum):
    RUN_FAILED = "run_failed"
    RUN_NEEDS_ATTENTION = "run_needs_attention"
    TOKEN_REFRESH_FAILED = "token_refresh_failed"  # noqa: S105 (a kind, not a secret); a refresh failed (transient or client error)
    GRANT_EXPIRING = "grant_expiring"  # the grant is lost (needs_reauth), or its token runs out soon
    ERROR_RATE = "error_rate"  # failed calls / completed calls over a window above a threshold
    RATE_LIMIT_SATURATED = "rate_limit_saturated"  # a provider answered 429: its key is blocked


class ChannelKind(StrEnum):
    WEBHOOK = "webhook"
    SLACK = "slack"
    EMAIL = "email"


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"


RUN_KINDS = {"failed": RuleKind.RUN_FAILED, "needs_attention": RuleKind.RUN_NEEDS_ATTENTION}
# Launch `notify` channels are told when a run of the launch ends, whatever the end.
FINISHED_RUN_STATUSES = frozenset({"succeeded", "failed", "cancelled"})

MIN_DEDUP_S = 0
MAX_DEDUP_S = 7 * 86_400
DEFAULT_DEDUP_S = 900
DEFAULT_ERROR_WINDOW_S = 300
DEFAULT_MIN_CALLS = 5
DEFAULT_HORIZON_S = 86_400
MAX_ATTEMPTS = 5  # a delivery is tried this often, then marked failed
RETRY_BASE_S = 2.0
RETRY_CAP_S = 300.0
MAX_CHANNELS_PER_RULE = 20
MAX_RECIPIENTS = 20

_EMAIL = re.compile(r"[^@\s<>,;]{1,64}@[A-Za-z0-9.-]{1,253}\.[A-Za-z]{2,63}")
_HOST = re.compile(r"[A-Za-z0-9.-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\]|[0-9A-Fa-f:.]{2,45}")


class AlertConfigError(ValueError):
    """A rule or channel we cannot use; `problems` name each field, what is wrong and the fix."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


# --- rules ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Rule:
    id: str
    kind: RuleKind
    channel_ids: tuple[str, ...] = ()
    in_app: bool = True
    universe_id: str | None = None  # None: every universe of the workspace
    dedup_window_s: int = DEFAULT_DEDUP_S
    threshold: float | None = None  # error_rate: the fraction of failed calls (0 < t <= 1)
    window_s: int = DEFAULT_ERROR_WINDOW_S  # error_rate: the window the rate is taken over
    min_calls: int = DEFAULT_MIN_CALLS  # error_rate: fewer completed calls than this never alert
    horizon_s: int = DEFAULT_HORIZON_S  # grant_expiring: alert this long before a token expires
    enabled: bool = True

    def params(self) -> dict[str, Any]:
        """The kind-specific settings, as stored (alert_rules.params)."""
        if self.kind is RuleKind.ERROR_RATE:
            return {"threshold": self.threshold, "window_s": self.window_s, "min_calls": self.min_calls}
        if self.kind is RuleKind.GRANT_EXPIRING:
            return {"horizon_s": self.horizon_s}
        return {}


def parse_rule(
    rule_id: str,
    kind: object,
    *,
    channel_ids: Sequence[str] = (),
    in_app: bool = True,
    universe_id: str | None = None,
    dedup_window_s: object = DEFAULT_DEDUP_S,
    params: Mapping[str, Any] | None = None,
    enabled: bool = True,
) -> Rule:
    """A rule from its parts (API body or stored row); raises AlertConfigError listing every problem."""
    problems: list[str] = []
    kinds = ", ".join(k.value for k in RuleKind)
    if kind not in {k.value for k in RuleKind}:
        problems.append(f"'kind' must be one of {kinds}, not {kind!r}")
    if not _int_within(dedup_window_s, MIN_DEDUP_S, MAX_DEDUP_S):
        problems.append(
            f"'dedup_window_s' must be a whole number of seconds within {MIN_DEDUP_S}..{MAX_DEDUP_S} "
            "(0: every occurrence notifies)"
        )
    if len(channel_ids) > MAX_CHANNELS_PER_RULE or len(set(channel_ids)) != len(channel_ids):
        problems.append(f"'channel_ids' must name at most {MAX_CHANNELS_PER_RULE} different channels")
    if not channel_ids and not in_app:
        problems.append("a rule needs somewhere to go: list 'channel_ids' or keep 'in_app': true")
    raw = dict(params or {})
    allowed = _PARAMS.get(str(kind), frozenset())
    unknown = sorted(set(raw) - allowed)
    if unknown:
        takes = ", ".join(sorted(allowed)) or "no params"
        problems.append(f"'params' has unknown keys {unknown}; a {kind} rule takes {takes}")
    threshold = raw.get("threshold")
    window_s = raw.get("window_s", DEFAULT_ERROR_WINDOW_S)
    min_calls = raw.get("min_calls", DEFAULT_MIN_CALLS)
    horizon_s = raw.get("horizon_s", DEFAULT_HORIZON_S)
    if kind == RuleKind.ERROR_RATE.value:
        if isinstance(threshold, bool) or not isinstance(threshold, int | float) or not 0 < threshold <= 1:
            problems.append("'params.threshold' must be a fraction of failed calls, 0 < t <= 1 (e.g. 0.2)")
        if not _int_within(window_s, 10, 86_400):
            problems.append("'params.window_s' must be a whole number of seconds within 10..86400")
        if not _int_within(min_calls, 1, 1_000_000):
            problems.append("'params.min_calls' must be a whole number, at least 1")
    if kind == RuleKind.GRANT_EXPIRING.value and not _int_within(horizon_s, 60, 30 * 86_400):
        problems.append("'params.horizon_s' must be a whole number of seconds within 60..2592000")
    if problems:
        raise AlertConfigError(problems)
    return Rule(
        id=rule_id,
        kind=RuleKind(str(kind)),
        channel_ids=tuple(channel_ids),
        in_app=in_app,
        universe_id=universe_id,
        dedup_window_s=int(str(dedup_window_s)),
        threshold=float(threshold) if kind == RuleKind.ERROR_RATE.value and threshold is not None else None,
        window_s=int(window_s),
        min_calls=int(min_calls),
        horizon_s=int(horizon_s),
        enabled=enabled,
    )


_PARAMS = {
    RuleKind.ERROR_RATE.value: frozenset({"threshold", "window_s", "min_calls"}),
    RuleKind.GRANT_EXPIRING.value: frozenset({"horizon_s"}),
}


def _int_within(value: object, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


# --- conditions -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Condition:
    kind: RuleKind
    workspace_id: str
    subject: str  # what repeats of "the same" condition share (see the module docstring)
    universe_id: str | None = None
    facts: Mapping[str, Any] = field(default_factory=dict)  # ids, names, codes: never a secret


def run_condition(
    status: str,
    *,
    workspace_id: str,
    run_id: str,
    universe_id: str,
    universe_name: str,
    error: Mapping[str, Any] | None,
    launch_id: str | None,
) -> Condition | None:
    """The condition a run's new status raises: failed and needs_attention do; other statuses do not."""
    kind = RUN_KINDS.get(status)
    if kind is None:
        return None
    code = _error_code(error)
    facts = {
        "run_id": run_id,
        "universe_id": universe_id,
        "universe_name": universe_name,
        "launch_id": launch_id,
        "status": status,
        "error_code": code,
        "error_message": _short(str((error or {}).get("message") or "")),
    }
    return Condition(kind, workspace_id, f"{universe_id}:{code}", universe_id, facts)


def _error_code(error: Mapping[str, Any] | None) -> str:
    if not error:
        return "none"
    for key in ("code", "kind", "reason"):
        value = error.get(key)
        if isinstance(value, str) and value:
            return value
    return "error"


def token_condition(
    *,
    workspace_id: str,
    account_id: str,
    account_name: str,
    provider: str,
    status: str,
    last_error: Mapping[str, Any] | None,
    token_expires_at: datetime | None,
    can_refresh: bool,
    now: datetime,
    horizon: timedelta,
) -> Condition | None:
    """What an OAuth account's row says: a lost grant (needs_reauth) or a token running out that cannot be
    refreshed is `grant_expiring`; any other refresh failure is `token_refresh_failed`."""
    code = (last_error or {}).get("code")
    facts = {"account_id": account_id, "account_name": account_name, "provider": provider}
    if code == "needs_reauth" or status == "expired":
        facts["error_code"] = "needs_reauth"
        return Condition(RuleKind.GRANT_EXPIRING, workspace_id, f"{account_id}:needs_reauth", None, facts)
    if code in ("refresh_failed_transient", "oauth_client_error"):
        facts["error_code"] = str(code)
        facts["error_message"] = _short(str((last_error or {}).get("message") or ""))
        return Condition(RuleKind.TOKEN_REFRESH_FAILED, workspace_id, f"{account_id}:{code}", None, facts)
    if token_expires_at is not None and not can_refresh and token_expires_at - now <= horizon:
        facts["expires_at"] = token_expires_at.isoformat()
        return Condition(RuleKind.GRANT_EXPIRING, workspace_id, f"{account_id}:expiring", None, facts)
    return None


def error_rate_condition(
    *,
    workspace_id: str,
    universe_id: str,
    universe_name: str,
    failed: int,
    completed: int,
    threshold: float,
    min_calls: int,
    window_s: int,
) -> Condition | None:
    """`error_rate` when at least `min_calls` calls completed in the window and the failed share (failed
    or ambiguous, as domain/live_metrics.py counts) is at or above `threshold`."""
    if completed < max(min_calls, 1) or failed / completed < threshold:
        return None
    facts = {
        "universe_id": universe_id,
        "universe_name": universe_name,
        "failed": failed,
        "completed": completed,
        "rate": round(failed / completed, 4),
        "threshold": threshold,
        "window_s": window_s,
    }
    return Condition(RuleKind.ERROR_RATE, workspace_id, universe_id, universe_id, facts)


def saturation_condition(
    *, workspace_id: str, key: str, blocked_until: datetime, now: datetime
) -> Condition | None:
    """`rate_limit_saturated` while a limiter key is blocked by a provider's 429 (integrations/ratelimit)."""
    if blocked_until <= now:
        return None
    facts = {"key": key, "blocked_until": blocked_until.isoformat()}
    return Condition(RuleKind.RATE_LIMIT_SATURATED, workspace_id, key, None, facts)


def matching_rules(rules: Sequence[Rule], condition: Condition) -> list[Rule]:
    """The enabled rules of the condition's kind that cover its universe (a rule without one covers all)."""
    return [
        rule
        for rule in rules
        if rule.enabled
        and rule.kind is condition.kind
        and (rule.universe_id is None or rule.universe_id == condition.universe_id)
    ]


def dedup_key(rule_id: str, condition: Condition) -> str:
    return f"{rule_id}:{condition.kind.value}:{condition.subject}"


def should_notify(last_sent_at: datetime | None, now: datetime, window_s: int) -> bool:
    """Notify unless the same key was notified less than `window_s` ago (0: always notify)."""
    return last_sent_at is None or window_s == 0 or now - last_sent_at >= timedelta(seconds=window_s)


def retry_delay_s(attempts: int) -> float | None:
    """How long after its `attempts`-th failed try a delivery is tried again; None: give up."""
    if attempts >= MAX_ATTEMPTS:
        return None
    return float(min(RETRY_CAP_S, RETRY_BASE_S * 2 ** max(attempts - 1, 0)))


# --- messages -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Message:
    title: str
    text: str


def render(condition: Condition) -> Message:
    """A short title and a plain-text body naming the objects and what to do."""
    f = condition.facts
    kind = condition.kind
    if kind is RuleKind.RUN_FAILED:
        why = f": {f['error_message']}" if f.get("error_message") else ""
        return Message(
            f"Run failed in {f.get('universe_name')}",
            f"Run {f.get('run_id')} of universe {f.get('universe_name')} failed ({f.get('error_code')}){why}."
            " Open the run to see the failing node; retry it once the cause is fixed.",
        )
    if kind is RuleKind.RUN_NEEDS_ATTENTION:
        return Message(
            f"Run needs attention in {f.get('universe_name')}",
            f"Run {f.get('run_id')} of universe {f.get('universe_name')} is waiting for a person "
            f"({f.get('error_code')}). Open the run and resolve it.",
        )
    if kind is RuleKind.TOKEN_REFRESH_FAILED:
        return Message(
            f"Token refresh failed for account {f.get('account_name')}",
            f"Refreshing the {f.get('provider')} token of account {f.get('account_name')} failed "
            f"({f.get('error_code')}): {f.get('error_message') or 'no detail'}. It is retried with backoff; "
            "check the provider's status or the account's OAuth client settings.",
        )
    if kind is RuleKind.GRANT_EXPIRING:
        if f.get("error_code") == "needs_reauth":
            text = (
                f"The {f.get('provider')} grant of account {f.get('account_name')} is no longer valid. "
                "Reconnect the account; runs using it fail until then."
            )
            return Message(f"Account {f.get('account_name')} needs to be reconnected", text)
        return Message(
            f"Account {f.get('account_name')}'s token expires soon",
            f"The {f.get('provider')} token of account {f.get('account_name')} expires at "
            f"{f.get('expires_at')} and cannot be refreshed. Reconnect the account before then.",
        )
    if kind is RuleKind.ERROR_RATE:
        return Message(
            f"Error rate {float(f.get('rate', 0)):.0%} in {f.get('universe_name')}",
            f"{f.get('failed')} of {f.get('completed')} calls of universe {f.get('universe_name')} failed "
            f"in the last {f.get('window_s')} s (threshold {float(f.get('threshold', 0)):.0%}). "
            "Look at the failing calls in its recent runs.",
        )
    return Message(
        f"Rate limit saturated: {f.get('key')}",
        f"The provider answered 429 for {f.get('key')}; calls wait until {f.get('blocked_until')}. "
        "Lower the request rate of the launches using this account, or raise its limit.",
    )


def run_finished_message(
    *, run_id: str, status: str, universe_name: str, launch_id: str, error: Mapping[str, Any] | None
) -> Message:
    """What a launch's `notify` channels get when one of its runs ends."""
    why = f" ({_error_code(error)})" if status == "failed" else ""
    return Message(
        f"Run {status} in {universe_name}",
        f"Run {run_id} of launch {launch_id} (universe {universe_name}) ended: {status}{why}.",
    )


def _short(text: str, limit: int = 500) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --- channels -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChannelSettings:
    kind: ChannelKind
    config: dict[str, Any]  # non-secret settings, stored as JSON and shown by the API
    secret_fields: frozenset[str]  # which secrets this kind keeps in the vault


SECRET_FIELDS = {
    ChannelKind.WEBHOOK: frozenset({"signing_secret"}),
    ChannelKind.SLACK: frozenset(),
    ChannelKind.EMAIL: frozenset({"password"}),
}
_CONFIG_KEYS = {
    ChannelKind.WEBHOOK: frozenset({"url"}),
    ChannelKind.SLACK: frozenset({"account_id", "channel"}),
    ChannelKind.EMAIL: frozenset({"host", "port", "from", "to", "username", "starttls", "ssl"}),
}


def parse_channel(kind: object, raw: object) -> ChannelSettings:
    """A channel's non-secret settings; raises AlertConfigError listing every problem with the fix."""
    kinds = ", ".join(k.value for k in ChannelKind)
    if kind not in {k.value for k in ChannelKind}:
        raise AlertConfigError([f"'kind' must be one of {kinds}, not {kind!r}"])
    which = ChannelKind(str(kind))
    if not isinstance(raw, Mapping):
        raise AlertConfigError(
            [f"'config' must be a JSON object with {', '.join(sorted(_CONFIG_KEYS[which]))}"]
        )
    problems: list[str] = []
    unknown = sorted(set(raw) - _CONFIG_KEYS[which])
    if unknown:
        problems.append(
            f"'config' has unknown keys {unknown}; a {which.value} channel takes "
            f"{', '.join(sorted(_CONFIG_KEYS[which]))} (secrets go in 'secrets')"
        )
    config: dict[str, Any] = {}
    if which is ChannelKind.WEBHOOK:
        url = raw.get("url")
        if not isinstance(url, str) or not webhook_url_ok(url):
            problems.append("'config.url' must be an http(s) URL such as https://hooks.example.com/cosmogen")
        config["url"] = url
    elif which is ChannelKind.SLACK:
        account, channel = raw.get("account_id"), raw.get("channel")
        if not isinstance(account, str) or not account:
            problems.append("'config.account_id' must be the id of a connected Slack account (GET /accounts)")
        if not isinstance(channel, str) or not channel.strip() or len(channel) > 200:
            problems.append("'config.channel' must be a Slack channel id (C0123...) or name (#alerts)")
        config.update(account_id=account, channel=channel)
    else:
        config = _email_config(raw, problems)
    if problems:
        raise AlertConfigError(problems)
    return ChannelSettings(which, config, SECRET_FIELDS[which])


def _email_config(raw: Mapping[str, Any], problems: list[str]) -> dict[str, Any]:
    host, port = raw.get("host"), raw.get("port", 587)
    sender, to = raw.get("from"), raw.get("to")
    username = raw.get("username")
    starttls, ssl = raw.get("starttls", True), raw.get("ssl", False)
    if not isinstance(host, str) or not _HOST.fullmatch(host):
        problems.append("'config.host' must be the SMTP server's host name or address, e.g. smtp.example.com")
    if not _int_within(port, 1, 65_535):
        problems.append("'config.port' must be a TCP port, 1..65535 (587 for STARTTLS, 465 for SSL)")
    if not isinstance(sender, str) or not _EMAIL.fullmatch(sender):
        problems.append("'config.from' must be one email address, e.g. cosmogen@example.com")
    if (
        not isinstance(to, list)
        or not 1 <= len(to) <= MAX_RECIPIENTS
        or not all(isinstance(a, str) and _EMAIL.fullmatch(a) for a in to)
    ):
        problems.append(f"'config.to' must be a list of 1..{MAX_RECIPIENTS} email addresses")
    if username is not None and (not isinstance(username, str) or not username or len(username) > 320):
        problems.append("'config.username' must be the SMTP login name, or left out for no login")
    if not isinstance(starttls, bool) or not isinstance(ssl, bool) or (starttls and ssl):
        problems.append("'config.starttls' and 'config.ssl' are true or false, and not both true")
    return {
        "host": host,
        "port": port,
        "from": sender,
        "to": to,
        "username": username,
        "starttls": starttls,
        "ssl": ssl,
    }


def webhook_url_ok(url: str) -> bool:
    """An http(s) URL with a host and no user information (the egress guard checks where it goes)."""
    if len(url) > 2048:
        return False
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname) and parts.username is None


def email_ok(address: str) -> bool:
    return bool(_EMAIL.fullmatch(address))


def shown_url(url: str) -> str:
    """A webhook URL as the API shows it: scheme, host and port only (paths often carry a token)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rsplit('@', 1)[-1]}/…" if parts.path.strip("/") else url
