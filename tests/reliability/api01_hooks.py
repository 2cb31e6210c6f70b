"""Schemathesis hooks for API-01, loaded by the `st` process (SCHEMATHESIS_HOOKS names this module).

The harness keeps its own footing: the API token Schemathesis authenticates with, and the owner it
belongs to, are never revoked, demoted or removed by a generated request (an admin may do all three, and
Schemathesis learns their ids from GET /api/v1/tokens and /me). Such a request is sent with an id that
names nothing instead, and answers 404 like any unknown id. COSMOGEN_API01_KEEP lists the ids.
"""

from __future__ import annotations

import os
from typing import Any

import schemathesis

UNKNOWN = "0" * 26


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    keep = set(os.environ.get("COSMOGEN_API01_KEEP", "").split(","))
    parameters = case.path_parameters or {}
    for name in ("token_id", "user_id"):
        if parameters.get(name) in keep:
            parameters[name] = UNKNOWN
