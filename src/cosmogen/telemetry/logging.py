"""Logs as one JSON object per line, with secrets scrubbed out of every record.

`configure_logging` (called by `cosmogen serve` and `cosmogen worker`) puts one handler on the root logger:
- `JsonFormatter`: `{"ts", "level", "logger", "message", ...extra fields, "exc"}`; `json.dumps` with ASCII
  output escapes newlines, carriage returns, ANSI escapes and every other control or non-ASCII character,
  so a node name or input holding `\\n{"level": "error", ...}` stays inside its own record's string and
  can never start a line of its own (LEAK-02);
- `Redactor`: a filter that scrubs the message (after %-formatting), its extra fields, the exception text
  and the stack of every record by format: `Authorization: ...` and Bearer values, secret-named query,
  form and JSON fields (`access_token=***`), and tokens shaped like OpenAI or Anthropic keys (`sk-...`),
  Slack (`xox?-...`), our API tokens (`cg_...`), Google and Meta tokens. Values are scrubbed by what they
  look like, so a secret with no recognisable shape in free text is not caught here: the code paths that
  hold secrets keep them in `Secret` and out of messages in the first place (LEAK-01).

Some libraries are kept at WARNING whatever the level: `sqlalchemy.engine` (its INFO is every statement
with its parameters), and the access logs of uvicorn and aiohttp (request lines with query strings);
`procrastinate` (a line per queued run) speaks below WARNING only at DEBUG.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TextIO

MASK = "***"
_LEVELS = ("debug", "info", "warning", "error", "critical")
_FORMATS = ("json", "text")
_QUIET = ("sqlalchemy.engine", "uvicorn.access", "aiohttp.access")
# Chatty at INFO (a line per queue job, i.e. per run): shown at DEBUG only.
_QUIET_UNLESS_DEBUG = ("procrastinate",)
# Attributes every LogRecord has; anything else on a record came from `extra=` and is a field of its own.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}

_WORDS = r"(?:token|secret|password|passwd|apikey|api_key|api-key|signature|auth|code_verifier|cookie)"
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # Headers as text: `Authorization: Bearer abc`, `authorization=Basic abc`, `Cookie: a=b; c=d`.
    (
        re.compile(r"(?i)\b((?:proxy-)?authorization|cookie|set-cookie|x-api-key)(\s*[:=]\s*)[^\r\n,}]+"),
        rf"\1\2{MASK}",
    ),
    (re.compile(r"(?i)\b(bearer|basic)(\s+)[A-Za-z0-9._~+/=-]{6,}"), rf"\1\2{MASK}"),
    # JSON or Python-repr fields with a secret-looking name: "access_token": "..." / 'api_key': '...'.
    (
        re.compile(rf"""(?i)(["'][\w.-]*{_WORDS}[\w.-]*["']\s*:\s*)(["'])(?:\\.|(?!\2).)*\2"""),
        rf"\1\2{MASK}\2",
    ),
    # Query strings and forms: access_token=..., client_secret=..., ?api-key=...
    (re.compile(rf"(?i)\b([\w.-]*{_WORDS}[\w.-]*=)[^&\s\"'<>#,;)]+"), rf"\1{MASK}"),
    # Shapes of provider keys and tokens, wherever they stand.
    (re.compile(r"\bsk-[A-Za-z0-9_-]{6,}"), f"sk-{MASK}"),
    (re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{6,}"), f"xox-{MASK}"),
    (re.compile(r"\bcg_[A-Za-z0-9_-]{6,}"), f"cg_{MASK}"),
    (re.compile(r"\bya29\.[A-Za-z0-9._-]{6,}"), f"ya29.{MASK}"),
    (re.compile(r"\b1//0[A-Za-z0-9_-]{6,}"), f"1//{MASK}"),
    (re.compile(r"\bGOCSPX-[A-Za-z0-9_-]{6,}"), f"GOCSPX-{MASK}"),
    (re.compile(r"\bwhsec_[A-Za-z0-9_+/=-]{6,}"), f"whsec_{MASK}"),
    (re.compile(r"\bEAA[A-Za-z0-9]{16,}"), f"EAA{MASK}"),
    (re.compile(r"\bA{16,}[A-Za-z0-9%]{8,}"), MASK),  # X (Twitter) app bearer tokens
)


def redact(text: str) -> str:
    """`text` with every secret-shaped piece masked (see the module docstring)."""
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class LogSettingError(ValueError):
    """COSMOGEN_LOG_LEVEL or COSMOGEN_LOG_FORMAT has a value we cannot use."""


@dataclass(frozen=True, slots=True)
class LogSettings:
    level: str = "info"
    json: bool = True

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> LogSettings:
        level = env.get("COSMOGEN_LOG_LEVEL", "info").strip().lower() or "info"
        if level not in _LEVELS:
            raise LogSettingError(f"COSMOGEN_LOG_LEVEL must be one of {', '.join(_LEVELS)}, not {level!r}")
        shape = env.get("COSMOGEN_LOG_FORMAT", "json").strip().lower() or "json"
        if shape not in _FORMATS:
            raise LogSettingError(f"COSMOGEN_LOG_FORMAT must be json or text, not {shape!r}")
        return cls(level, shape == "json")


class Redactor(logging.Filter):
    """Scrubs a record in place (message with its arguments, extra fields, exception and stack text);
    never drops one."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: keep what can be shown, never the arguments
            message = f"{record.msg!s} (unformattable arguments dropped)"
        record.msg, record.args = redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        for name, value in list(record.__dict__.items()):
            if name not in _STANDARD and not name.startswith("_"):
                record.__dict__[name] = _redacted(value)
        return True


def _redacted(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {str(k): _redacted(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redacted(v) for v in value]
    if value is None or isinstance(value, bool | int | float):
        return value
    return redact(str(value))


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (ASCII only: nothing in it can end the line)."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name, value in record.__dict__.items():
            if name not in _STANDARD and not name.startswith("_") and name not in data:
                data[name] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            data["exc"] = record.exc_text
        if record.stack_info:
            data["stack"] = record.stack_info
        return json.dumps(data, ensure_ascii=True, default=str)


class TextFormatter(logging.Formatter):
    """For a person at a terminal: control characters shown escaped, so a record is still one line."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        return _escape_controls(super().format(record))


def _escape_controls(text: str) -> str:
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode() for ch in text)


def configure_logging(level: str = "info", *, json: bool = True, stream: TextIO | None = None) -> None:
    """The root logger writes to stderr through the redactor, as JSON (or text); replaces its handlers."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(Redactor())
    handler.setFormatter(JsonFormatter() if json else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in _QUIET:
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
    for name in _QUIET_UNLESS_DEBUG:
        logging.getLogger(name).setLevel(root.level if root.level <= logging.DEBUG else logging.WARNING)
    logging.captureWarnings(True)
