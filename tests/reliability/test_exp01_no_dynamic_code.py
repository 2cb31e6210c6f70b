"""EXP-01: no dynamic code execution anywhere in src/ (checked on the syntax tree, not by grep)."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"
FORBIDDEN_BUILTINS = {"eval", "exec", "compile", "__import__"}
FORBIDDEN_ATTRIBUTE_CALLS = {
    ("pickle", "loads"),
    ("pickle", "load"),
    ("marshal", "loads"),
    ("marshal", "load"),
}


def _dotted(node: ast.expr) -> tuple[str, str] | None:
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
        return node.value.id, node.attr
    return None


def find_dynamic_code(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    hits: list[str] = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        where = f"{path}:{node.lineno}"
        func = node.func
        if isinstance(func, ast.Name) and func.id in FORBIDDEN_BUILTINS:
            hits.append(f"{where}: call to builtin {func.id}()")
        dotted = _dotted(func)
        if dotted in FORBIDDEN_ATTRIBUTE_CALLS:
            hits.append(f"{where}: call to {dotted[0]}.{dotted[1]}()")
        if isinstance(func, ast.Attribute) and func.attr == "__import__":
            hits.append(f"{where}: call to ...__import__()")
        if dotted == ("importlib", "import_module") and not all(
            isinstance(a, ast.Constant) for a in node.args
        ):
            hits.append(f"{where}: importlib.import_module() with a non-constant argument")
        constant_args = all(isinstance(a, ast.Constant) for a in node.args)
        if isinstance(func, ast.Name) and func.id == "import_module" and not constant_args:
            hits.append(f"{where}: import_module() with a non-constant argument")
    return hits


def test_src_has_no_dynamic_code_execution() -> None:
    files = sorted(SRC.rglob("*.py"))
    assert files, "no sources found"
    hits = [hit for path in files for hit in find_dynamic_code(path)]
    assert hits == [], "\n".join(hits)


def test_detector_finds_each_forbidden_form(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import pickle, marshal, importlib, re2\n"
        "eval('1')\nexec('x')\ncompile('1', 'f', 'eval')\n__import__('os')\n"
        "pickle.loads(b'')\nmarshal.loads(b'')\nimportlib.import_module(name)\n"
        "importlib.import_module('json')\nre2.compile('a')\nx.eval\n"
    )
    hits = find_dynamic_code(sample)
    lines = sorted(int(h.split(":")[1]) for h in hits)
    assert lines == [2, 3, 4, 5, 6, 7, 8], hits


def test_expression_engine_has_no_python_re_on_user_patterns() -> None:
    # matches() must go through RE2; only the lexer may use Python's `re` (with constant patterns).
    expr_dir = SRC / "cosmogen" / "expr"
    users = sorted(p.name for p in expr_dir.glob("*.py") if "import re\n" in p.read_text(encoding="utf-8"))
    assert users == ["_lexer.py"]
    assert "import re2" in (expr_dir / "_stdlib.py").read_text(encoding="utf-8")
