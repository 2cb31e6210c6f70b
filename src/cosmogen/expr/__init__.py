"""User expressions: a pure-Python CEL subset with budgets, and `{{ cel }}` templates.

See docs/expressions.md for the language reference and the deviations from CEL.
"""

from ._expression import Expression, compile_expression
from ._types import CelType, TypeIssue, type_of_value
from .budgets import DEFAULT_BUDGETS, Budgets
from .errors import CompileError, EvalError, ExprError, Position
from .template import Template, compile_template

__all__ = [
    "DEFAULT_BUDGETS",
    "Budgets",
    "CelType",
    "CompileError",
    "EvalError",
    "ExprError",
    "Expression",
    "Position",
    "Template",
    "TypeIssue",
    "compile_expression",
    "compile_template",
    "type_of_value",
]
