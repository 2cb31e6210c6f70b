"""The JSON log handler of telemetry/logging.py on a real logger: one object per line whatever the text,
and secrets scrubbed from message, arguments, extra fields and tracebacks (LEAK-01 for logs: a URL with a
token in its query is logged as `access_token=***`)."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from cosmogen.telemetry.logging import (
    JsonFormatter,
    LogSettingError,
    LogSettings,
    Redactor,
    TextFormatter,
    configure_logging,
)
from cosmogen.testing.canaries import hits, mint


@pytest.fixture
def logged() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    sink = io.StringIO()
    handler = logging.StreamHandler(sink)
    handler.addFilter(Redactor())
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("cosmogen.test.telemetry")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    yield logger, sink
    logger.removeHandler(handler)


def _records(sink: io.StringIO) -> list[dict[str, object]]:
    text = sink.getvalue()
    assert text.endswith("\n")
    return [json.loads(line) for line in text.split("\n")[:-1]]


def test_secrets_are_scrubbed_from_every_part_of_a_record(logged: tuple[logging.Logger, io.StringIO]) -> None:
    logger, sink = logged
    c = mint()
    logger.info("GET https://graph.example/me?fields=id&access_token=%s", c["graph_token"])
    logger.info("sent Authorization: Bearer %s", c["access_token"])
    logger.warning("keys %s %s %s", c["openai"], c["anthropic"], c["slack"])
    logger.info("api token cg_%s", c["x_bearer"][-32:])
    logger.info("form: refresh_token=%s&client_secret=%s", c["refresh_token"], c["client_secret"])
    logger.info("body %s", json.dumps({"password": c["password"], "webhook_secret": c["webhook_secret"]}))
    logger.info("answer", extra={"request": {"headers": f"authorization: Bearer {c['x_bearer']}"}})
    try:
        raise ValueError(f"provider said: invalid token sk-{c['openai'][3:]}")
    except ValueError:
        logger.exception("call failed")
    records = _records(sink)
    assert len(records) == 8
    assert "access_token=***" in str(records[0]["message"])
    assert str(records[0]["message"]).startswith("GET https://graph.example/me?fields=id&")
    assert "sk-***" in str(records[7]["exc"]) and "ValueError" in str(records[7]["exc"])
    assert records[6]["request"] == {"headers": "authorization: ***"}
    needles = {name: value.encode() for name, value in c.items()}
    assert hits(sink.getvalue().encode(), needles, substrings=True) == []


def test_one_record_is_one_line_whatever_it_holds(logged: tuple[logging.Logger, io.StringIO]) -> None:
    logger, sink = logged
    forged = '{"ts": "x", "level": "critical", "logger": "x", "message": "forged"}'
    nasty = f"a\nb\r\n{forged}\x1b[31m\x00\x85\u2028\u2029é"
    logger.info("node %s", nasty, extra={"node": nasty})
    raw = sink.getvalue()
    assert raw.count("\n") == 1 and raw.isascii() and "\x1b" not in raw
    [record] = _records(sink)
    assert record["node"] == nasty and record["message"] == f"node {nasty}"
    assert record["level"] == "info" and record["logger"] == "cosmogen.test.telemetry"

    text = TextFormatter()
    line = text.format(logging.LogRecord("x", logging.INFO, "", 0, "node %s", (nasty,), None))
    assert "\n" not in line and "\r" not in line and "\x1b" not in line and "\u2028" not in line


def test_settings_and_configuration() -> None:
    assert LogSettings.from_env({}) == LogSettings("info", True)
    assert LogSettings.from_env(
        {"COSMOGEN_LOG_LEVEL": "DEBUG", "COSMOGEN_LOG_FORMAT": "text"}
    ) == LogSettings("debug", False)
    with pytest.raises(LogSettingError, match="COSMOGEN_LOG_LEVEL must be one of debug, info"):
        LogSettings.from_env({"COSMOGEN_LOG_LEVEL": "loud"})
    with pytest.raises(LogSettingError, match="COSMOGEN_LOG_FORMAT must be json or text, not 'xml'"):
        LogSettings.from_env({"COSMOGEN_LOG_FORMAT": "xml"})

    root = logging.getLogger()
    kept = (list(root.handlers), root.level, logging.getLogger("sqlalchemy.engine").level)
    sink = io.StringIO()
    try:
        configure_logging("debug", json=True, stream=sink)
        logging.getLogger("sqlalchemy.engine").info("SELECT secret FROM t -- parameters")
        logging.getLogger("cosmogen.anything").debug("kept at %s", "debug")
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in kept[0]:
            root.addHandler(handler)
        root.setLevel(kept[1])
        logging.getLogger("sqlalchemy.engine").setLevel(kept[2])
    [record] = [json.loads(line) for line in sink.getvalue().splitlines()]
    assert record["message"] == "kept at debug"  # SQL echo stays off even at DEBUG
