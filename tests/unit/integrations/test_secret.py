"""Secret: the value shows only through .reveal(); repr, str, format, pickle, json and copies do not leak."""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import pickle

import pytest

from cosmogen.integrations.secret import Secret

VALUE = "sk-canary-4f1d2c3b5a6e7d8c"


def test_every_rendering_is_masked() -> None:
    secret = Secret(VALUE)
    renderings = [
        repr(secret),
        str(secret),
        f"{secret}",
        f"{secret!r}",
        f"{secret:>40}",
        "%s %r" % (secret, secret),  # noqa: UP031 - the old formatting paths too
        "{}".format(secret),  # noqa: UP032
        repr([secret, {"k": secret}]),
    ]
    assert repr(secret) == "Secret('****')"
    for text in renderings:
        assert VALUE not in text
        assert "****" in text


def test_reveal_is_the_only_way_out() -> None:
    assert Secret(VALUE).reveal() == VALUE
    assert not hasattr(Secret(VALUE), "__dict__")


def test_pickle_and_json_refuse_it() -> None:
    with pytest.raises(TypeError, match="cannot be pickled") as info:
        pickle.dumps(Secret(VALUE))
    assert VALUE not in str(info.value)
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        with pytest.raises(TypeError):
            pickle.dumps({"nested": [Secret(VALUE)]}, protocol=protocol)
    with pytest.raises(TypeError) as json_info:
        json.dumps({"api_key": Secret(VALUE)})
    assert VALUE not in str(json_info.value)
    # With a permissive default the value is masked, not revealed.
    assert VALUE not in json.dumps({"api_key": Secret(VALUE)}, default=str)


def test_copies_and_dataclass_dumps_stay_secret() -> None:
    @dataclasses.dataclass
    class Holder:
        token: Secret

    holder = Holder(Secret(VALUE))
    assert copy.copy(holder.token) is holder.token
    assert copy.deepcopy(holder).token.reveal() == VALUE
    assert VALUE not in repr(dataclasses.asdict(holder))
    assert VALUE not in repr(holder)


def test_logging_shows_the_mask(caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("test.secret")
    with caplog.at_level(logging.DEBUG):
        log.warning("token %s and %r", Secret(VALUE), Secret(VALUE))
        log.warning("as a mapping: %(token)s", {"token": Secret(VALUE)})
    assert caplog.records
    assert VALUE not in caplog.text


def test_equality_compares_values_and_nothing_else() -> None:
    assert Secret("a") == Secret("a")
    assert Secret("a") != Secret("b")
    assert Secret("a") != "a"
    with pytest.raises(TypeError):
        hash(Secret("a"))  # a hash would be a side channel (and sets of secrets are not needed)
    assert not Secret("")
    assert Secret("x")


def test_only_text_is_accepted() -> None:
    with pytest.raises(TypeError, match="not bytes"):
        Secret(b"raw")  # type: ignore[arg-type]
