"""EXP-02: the D.2 escape corpus (introspection, format strings, code loading) is refused at compile
time or with an EvalError, with no audit events and no foreign object ever touched."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from cosmogen.expr import CompileError, EvalError, compile_expression, compile_template


def load_harness() -> ModuleType:
    if "expr_fuzz" in sys.modules:
        return sys.modules["expr_fuzz"]
    path = Path(__file__).resolve().parents[1] / "fuzz" / "expr_fuzz.py"
    spec = importlib.util.spec_from_file_location("expr_fuzz", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["expr_fuzz"] = module
    spec.loader.exec_module(module)
    return module


HARNESS = load_harness()


class Canary:
    """A foreign object placed in the state: any use of it beyond type() is recorded."""

    touched: list[str]

    def __init__(self) -> None:
        object.__setattr__(self, "touched", [])

    def __getattribute__(self, name: str) -> Any:
        object.__getattribute__(self, "touched").append(name)
        return object.__getattribute__(self, name)

    def __eq__(self, other: object) -> bool:
        self.touched.append("__eq__")
        return False

    def __hash__(self) -> int:
        object.__getattribute__(self, "touched").append("__hash__")
        return 0

    def __repr__(self) -> str:
        self.touched.append("__repr__")
        return "Canary"


def realistic_states(canary: Canary) -> list[dict[str, Any]]:
    base = HARNESS.STATES[0]
    return [
        dict(base),
        {**base, "x": canary, "f": canary, "g": canary, "c": canary},
        {**base, "nested": {**base["nested"], "obj": canary}, "tags": [*base["tags"], canary]},
    ]


CASES = [(src, i) for src in HARNESS.ESCAPES for i in range(3)]


@pytest.mark.parametrize(("src", "state_index"), CASES)
def test_escape_is_refused_without_side_effects(src: str, state_index: int) -> None:
    canary = Canary()
    state = realistic_states(canary)[state_index]
    outcome = "value"
    with HARNESS.audit_recording() as events:
        try:
            compile_expression(src).evaluate(state)
        except CompileError:
            outcome = "compile_error"
        except EvalError as err:
            outcome = "eval_error" if err.code != "internal" else "internal_error"
        recorded = list(events)
    assert outcome in ("compile_error", "eval_error"), f"{src!r}: {outcome}"
    assert recorded == [], recorded
    assert object.__getattribute__(canary, "touched") == []


@pytest.mark.parametrize("src", HARNESS.ESCAPES)
def test_escape_inside_a_template_is_refused(src: str) -> None:
    with HARNESS.audit_recording() as events:
        with pytest.raises((CompileError, EvalError)):
            compile_template("Dear {{ " + src + " }}").render(HARNESS.STATES[0])
        assert list(events) == []


def test_audit_recorder_works() -> None:
    # The hook must see the events it is meant to catch, otherwise the tests above prove nothing.
    with HARNESS.audit_recording() as events:
        eval("1")  # noqa: S307 (deliberate, to prove the recorder)
        open(__file__).close()
        recorded = list(events)
    assert "exec" in recorded and "open" in recorded
    with HARNESS.audit_recording() as events:
        pass
    assert events == []


def test_corpus_covers_d2() -> None:
    required = {
        "x.__class__",
        "().__class__.__bases__[0].__subclasses__()",
        "f.__globals__",
        "f.func_globals",
        "print.__reduce__()",
        "g().gi_frame.f_globals",
        "c().cr_frame",
        "x.__dict__",
        "type(x)",
        "getattr(x, '__cl' + 'ass__')",
        "'{0.__class__.__bases__}'.format(x)",
        "'{0.__globals__}'.format(f)",
        "f'{x.__class__}'",
        "__import__('os').system('id')",
        "__builtins__['__import__']",
        "eval('1')",
        "exec('import os')",
        "open('/etc/passwd')",
        "lambda: 0",
        "[c for c in ().__class__.__base__.__subclasses__()]",
    }
    assert required <= set(HARNESS.ESCAPES)
    assert any("format_map" in s for s in HARNESS.ESCAPES)
    assert any(s.startswith("compile(") for s in HARNESS.ESCAPES)
