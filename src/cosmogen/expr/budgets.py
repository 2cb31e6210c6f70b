"""Resource limits for compiling and evaluating expressions."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DEFAULT_BUDGETS", "Budgets"]


@dataclass(frozen=True, slots=True)
class Budgets:
    """Limits enforced with typed errors; see docs/expressions.md "Budgets".

    max_source_chars: longest accepted source (CompileError "too_long").
    max_depth: nesting of parentheses, brackets, braces, unary operators, calls and member chains
        (CompileError "too_deep"); the syntax tree as a whole may be at most 4 x max_depth tall,
        which bounds long operator chains such as `a + a + ... + a`.
    max_cost: evaluation cost units (EvalError "cost_exceeded"): one per comprehension iteration,
        one per element for list scans and comparisons, one per 64 characters or 8 elements produced,
        one per KiB scanned by string functions.
    max_result_bytes: approximate size of any produced string, list or map and of the final result
        (EvalError "result_too_large"); strings count their length, containers 8 bytes per element.
    max_comprehension_nesting: macros such as map/filter nested deeper fail to compile ("too_deep").
    max_regex_cost: RE2 program size x subject length allowed per matches() call ("cost_exceeded");
        about 8 ms in the worst case measured here.
    max_regex_chars: longest regular expression accepted by matches().
    """

    max_source_chars: int = 8192
    max_depth: int = 64
    max_cost: int = 100_000
    max_result_bytes: int = 1 << 20
    max_comprehension_nesting: int = 3
    max_regex_cost: int = 1_000_000
    max_regex_chars: int = 2048


DEFAULT_BUDGETS = Budgets()
