"""Atheris harness for cosmogen.expr (EXP-04).

Input layout (FuzzedDataProvider consumes from the front):
    byte 0  mode: 0 expression, 1 template, 2 expression under tight budgets, 3 check + evaluate
    byte 1  which fixed entity state to use when the input carries no JSON state
    rest    expression text (UTF-8, errors replaced), optionally followed by NUL and a JSON object
            used as the entity state

Crash = any exception other than ExprError, an EvalError with code "internal", an audit event
(exec, compile, import, open, os.*, subprocess.*, object.__getattr__) during the call, a non-JSON
result, a result over 1 MiB, or more than 1 s of CPU for one input.

    .venv/bin/python tests/fuzz/expr_fuzz.py -runs=100000 -max_len=512 /tmp/new tests/fuzz/corpus/expr
    .venv/bin/python tests/fuzz/expr_fuzz.py --write-seeds tests/fuzz/corpus/expr
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shlex
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

FORBIDDEN_EVENT_PREFIXES = ("exec", "compile", "import", "open", "os.", "subprocess.", "object.__getattr__")
_recording: list[bool] = [False]
_events: list[str] = []
_installed: list[bool] = [False]


def _hook(event: str, args: tuple[Any, ...]) -> None:
    if _recording[0] and event.startswith(FORBIDDEN_EVENT_PREFIXES):
        _events.append(event)


def install_audit_hook() -> None:
    """Install the recorder once per process; it records only while a call is being checked."""
    if not _installed[0]:
        sys.addaudithook(_hook)
        _installed[0] = True


@contextlib.contextmanager
def audit_recording() -> Iterator[list[str]]:
    """Record forbidden audit events raised inside the block; yields the (live) list of events."""
    install_audit_hook()
    _events.clear()
    _recording[0] = True
    try:
        yield _events
    finally:
        _recording[0] = False


STATES: list[dict[str, Any]] = [
    {
        "balance": 150,
        "tier": "gold",
        "tags": ["vip", "eu", "beta"],
        "nested": {"a": {"b": {"c": 1}}, "list": [1, 2, 3], "name": "x"},
        "entity": {"id": "acct-1", "properties": {"balance": 150, "tier": "gold"}},
        "event": {"type": "deposit", "amount": 25.5},
    },
    {"balance": -3, "tier": "", "tags": [], "nested": {}, "x": 1.5, "s": "aaaa", "n": None, "ok": True},
    {"l": list(range(50)), "s": "a" * 200 + "!", "m": {str(i): i for i in range(20)}, "balance": 0},
    {},
]

ESCAPES = [
    # D.2 Introspection
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
    # the same ideas against real entity properties
    "balance.__class__",
    "tier.__class__.__mro__",
    "tags.__class__.__bases__[0].__subclasses__()",
    "nested.__dict__",
    "entity.__class__",
    "tags.__len__()",
    "balance.real",
    "tier.upper()",
    "type(balance)",
    "getattr(tier, '__class__')",
    "nested['__class__']",
    "tags[0].__class__",
    "entity.properties.__globals__",
    "size(tier).__class__",
    "tags.map(t, t.__class__)",
    "tags.filter(t, t.__init__.__globals__ != null)",
    # D.2 Format strings
    "'{0.__class__.__bases__}'.format(x)",
    "'{0.__globals__}'.format(f)",
    "'{0.__class__}'.format(tier)",
    "'{x}'.format_map(nested)",
    "tier.format_map(nested)",
    "f'{x.__class__}'",
    "f'{tier.__class__}'",
    "'%s' % tier",
    "tier % tags",
    "tier.format(balance)",
    # D.2 Code loading
    "__import__('os').system('id')",
    "__builtins__['__import__']",
    "__builtins__.__import__('os')",
    "eval('1')",
    "exec('import os')",
    "compile('1', 'x', 'eval')",
    "open('/etc/passwd')",
    "lambda: 0",
    "[c for c in ().__class__.__base__.__subclasses__()]",
    "__import__('subprocess').run(['id'])",
    "globals()",
    "locals()",
    "vars()",
    "dir()",
    "breakpoint()",
    "import os",
    "os.system('id')",
    "sys.modules",
    "tier.matches('(?P<x>a)(?P=x)')",
    "tier.matches('(?<=a)b')",
]

BOMBS = [
    "9223372036854775807 + 1",
    "-9223372036854775808 - 1",
    "9223372036854775807 * 2",
    "-(-9223372036854775808)",
    "balance * balance * balance * balance * balance * balance * balance * balance * balance * balance",
    "1 / 0",
    "1 % 0",
    "1.5 / 0",
    "-9223372036854775808 / -1",
    "9**9**9",
    "2**10**8",
    "string(10**4301)",
    "'a'*10**9",
    "[0]*10**9",
    "tags.map(a, tags.map(b, tags.map(c, [a, b, c])))",
    "tags.map(a, tags.map(b, tags.map(c, tags.map(d, d))))",
    "l.map(a, l.map(b, l.map(c, c)))",
    "l.map(x, s + s + s + s)",
    "l.map(x, l + l + l)",
    "s.matches('(a+)+$')",
    "s.matches('(a|aa)*b')",
    "s.matches('(.*a){20}')",
    "tier.matches('(a+)+$')",
    "has(nested.a.b.c.d.e)",
    "has(nested.a.b.c)",
    "unknown_fn(1)",
    "size(tags) * 9223372036854775807",
    "int('99999999999999999999')",
    "int(1e300)",
    "double('nan') == double('nan')",
    "math.abs(-9223372036854775808)",
    "[" * 70 + "]" * 70,
    "(" * 70 + "1" + ")" * 70,
    "!" * 70 + "true",
    "-" * 70 + "1",
    "a" + ".b" * 70,
    "x" + " + x" * 300,
    "s.split('').map(c, c + c).join()",
    "l.map(x, string(x)).join(s)",
    "s.replace('a', s)",
]

SAMPLES = [
    "balance + 50",
    "balance < 0",
    "balance < 0 && tier == 'gold'",
    "balance * 1.05",
    "balance / 3",
    "balance % 7",
    "-balance",
    "!(balance > 100)",
    "tier == 'gold' ? balance * 2 : balance",
    "tier + '!'",
    "'tier: ' + tier",
    "size(tags)",
    "tags.size()",
    "'vip' in tags",
    "'a' in nested",
    "tags[0]",
    "tags[10]",
    "nested.a.b.c",
    "nested['a']['b']",
    "has(nested.a)",
    "has(nested.zzz)",
    "entity.properties.balance + event.amount",
    "event.type == 'deposit' && event.amount > 10.0",
    "tags.exists(t, t == 'vip')",
    "tags.all(t, size(t) > 1)",
    "tags.exists_one(t, t.startsWith('v'))",
    "tags.map(t, t.upperAscii())",
    "tags.filter(t, t != 'eu')",
    "tags.map(t, t == 'vip', t + '!')",
    "nested.list.map(x, x * x)",
    "[1, 2, 3].map(x, x * 2)",
    "{'a': 1, 'b': balance}",
    "{'a': 1}.a",
    "int('42') + int(3.9)",
    "double('1.5') + double(2)",
    "string(balance) + string(1.5) + string(true)",
    "bool('true') && bool('0') == false",
    "tier.contains('ol')",
    "tier.endsWith('ld')",
    "tier.matches('^g.*d$')",
    "tier.matches('[')",
    "'  x '.trim()",
    "'a,b,,c'.split(',')",
    "'a,b,c'.split(',', 2)",
    "['a', 'b'].join('-')",
    "'hello'.substring(1, 3)",
    "'hello'.indexOf('l')",
    "'hello'.lastIndexOf('l')",
    "'aaa'.replace('a', 'b', 2)",
    "math.greatest(1, 5, 3)",
    "math.least([3.5, 1, 2])",
    "math.abs(-5) + math.ceil(1.2) + math.floor(1.8) + math.round(2.5)",
    "0x1F + 1u + 1e3 + .5",
    "r'a\\d' + '\\u00e9\\x41\\n'",
    "'''multi\nline'''",
    "null == n",
    "balance == 150.0",
    "[1, 2] == [1, 2] && {'a': [1]} == {'a': [1]}",
    "1 == 'a'",
    "'a' + 1",
    "'a' - 1",
    "balnce + 1",
    "balance +",
    "balance = 1",
    "tier & tags",
    "(balance",
    "[1, 2",
    "{'a' 1}",
    "'unterminated",
    "1 +* 2",
    "a.b.",
    "true ? 1",
    "tags.map(1, 2)",
    "tags.all(x)",
    "has(balance)",
    "size()",
    "foo(1)",
    "x.y(1)",
    "dyn(balance) + 1",
    "[tags, nested, balance, tier, null, true, 1.5]",
    "nested",
    "entity",
    "{'k': tags.map(t, {'t': t})}",
    "tags.map(t, t).filter(t, t > 'b').size()",
    "l.filter(x, x % 2 == 0).map(x, x / 2)",
    "m.all(k, m[k] >= 0)",
    "s.size() > 100 || s.startsWith('b')",
    "ok || (1/0 == 0)",
    "(1/0 == 0) || ok",
    "false && (1/0 == 0)",
    "(1/0 == 0) && false",
    "true && (1/0 == 0)",
    "1 < 'a'",
    "'abc' < 'abd'",
    "true < false",
    "[] + []",
    "{}",
    "[]",
    "''",
    "x",
    "n.a",
]

TEMPLATES = [
    "Hello {{ entity.id }}, your balance is {{ balance }}.",
    "{{ balance }}",
    "  {{ tags }}  ",
    "Tier: {{ tier }} / tags: {{ tags.join(', ') }}",
    "{{ {'a': {'b': 1}} }}",
    "no holes at all",
    "{{ balance + }}",
    "unclosed {{ balance",
    "{{ }}",
    "{{ 1.0 }} {{ 2.5 }} {{ null }} {{ true }}",
    "{{ '{{' }} literal braces {{ '}}' }}",
]


def encode(mode: int, state: int, source: str, state_json: str | None = None) -> bytes:
    body = source.encode("utf-8")
    if state_json is not None:
        body += b"\x00" + state_json.encode("utf-8")
    return bytes([mode, state]) + body


def decode(data: bytes) -> tuple[int, dict[str, Any], str]:
    import atheris

    fdp = atheris.FuzzedDataProvider(data)
    header = fdp.ConsumeBytes(2).ljust(2, b"\x00")
    rest = fdp.ConsumeBytes(fdp.remaining_bytes())
    text, sep, raw_state = rest.partition(b"\x00")
    state: dict[str, Any] = STATES[header[1] % len(STATES)]
    if sep:
        try:
            parsed = json.loads(raw_state.decode("utf-8", "replace"))
        except (ValueError, RecursionError):
            parsed = None
        if isinstance(parsed, dict):
            state = parsed
    return header[0] % 4, state, text.decode("utf-8", "replace")


def run_one(mode: int, state: dict[str, Any], source: str) -> dict[str, Any]:
    """Run one input; return its outcome (value or error code). Raises on any crash condition."""
    from cosmogen.expr import Budgets, CelType, ExprError, compile_expression, compile_template, type_of_value

    types = {k: type_of_value(v) for k, v in state.items()}
    budgets = Budgets(max_cost=2_000, max_result_bytes=4096) if mode == 2 else Budgets()
    outcome: dict[str, Any] = {}
    _events.clear()
    _recording[0] = True
    started = time.thread_time()
    try:
        if mode == 1:
            template = compile_template(source, budgets=budgets)
            template.check(types)
            outcome["value"] = template.render(state)
            outcome["raw"] = template.render_value(state)
        else:
            expr = compile_expression(source, budgets=budgets)
            result_type, issues = expr.check(types)
            if not isinstance(result_type, CelType) or any(
                i.severity not in ("error", "warning") for i in issues
            ):
                raise AssertionError("check() returned something unexpected")
            outcome["value"] = expr.evaluate(state)
    except ExprError as err:
        if err.code == "internal":
            raise AssertionError(f"internal error for {source!r}: {err}") from err
        if not isinstance(str(err), str) or not err.code:
            raise AssertionError("malformed error") from err
        outcome = {"error": err.code, "at": err.position.offset if err.position else None}
    finally:
        _recording[0] = False
        elapsed = time.thread_time() - started
    if _events:
        raise AssertionError(f"audit events {sorted(set(_events))} while evaluating {source!r}")
    if elapsed > 1.0:
        raise AssertionError(f"{elapsed:.2f} s of CPU for {source!r}")
    encoded = json.dumps(outcome, allow_nan=True)  # raises TypeError on any non-JSON object
    if len(encoded) > (1 << 20) + 64:
        raise AssertionError("result larger than 1 MiB")
    return outcome


def TestOneInput(data: bytes) -> None:
    mode, state, source = decode(data)
    run_one(mode, state, source)


def seed_inputs() -> list[bytes]:
    seeds: list[bytes] = []
    for i, src in enumerate(ESCAPES + BOMBS + SAMPLES):
        seeds.append(encode(0, i % 3, src))
        if i % 4 == 0:
            seeds.append(encode(2, i % 3, src))
        if i % 5 == 0:
            seeds.append(encode(3, 0, src, json.dumps(STATES[i % 3])))
    for i, src in enumerate(TEMPLATES):
        seeds.append(encode(1, i % 3, src))
    return seeds


def write_seeds(directory: Path) -> int:
    directory.mkdir(parents=True, exist_ok=True)
    for seed in seed_inputs():
        name = "seed-" + hashlib.sha1(seed, usedforsecurity=False).hexdigest()[:16]
        (directory / name).write_bytes(seed)
    return len(seed_inputs())


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--write-seeds":
        print(write_seeds(Path(sys.argv[2])), "seeds written")
        return
    import atheris

    install_audit_hook()
    with atheris.instrument_imports(include=["cosmogen.expr"]):
        import cosmogen.expr  # noqa: F401

    # libFuzzer re-runs argv[0] through the shell for -merge and -fork; make that the interpreter too.
    argv = [f"{shlex.quote(sys.executable)} {shlex.quote(sys.argv[0])}", *sys.argv[1:]]
    atheris.Setup(argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
