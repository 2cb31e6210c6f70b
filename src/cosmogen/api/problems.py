"""Errors as RFC 9457 problem+json: a stable `code`, a human `detail`, a `hint` saying what to do.

Never a stack trace, never the request's own values (a validation error names the field and the rule,
not what was sent: it may be a secret). An unexpected error answers 500 with a correlation id that is
also in the log line, so an operator can find it and the client learns nothing else.
"""

from __future__ import annotations

import logging
import secrets
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse, Response
from starlette.routing import Match

PROBLEM_JSON = "application/problem+json"
log = logging.getLogger(__name__)


class Problem(Exception):
    """Raise to answer with a problem document."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        *,
        hint: str | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.hint = hint
        self.headers = headers or {}
        self.extra = extra or {}

    def response(self) -> JSONResponse:
        return problem_response(self.status, self.code, self.detail, hint=self.hint, headers=self.headers,
                                extra=self.extra)  # fmt: skip


def problem_response(
    status: int,
    code: str,
    detail: str,
    *,
    hint: str | None = None,
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {"type": "about:blank", "status": status, "code": code, "detail": detail}
    if hint:
        body["hint"] = hint
    body.update(extra or {})
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_JSON)


# What every error answer looks like, for /openapi.json: clients and Schemathesis (API-01) check answers
# against it. Extra members (`errors`, `diagnostics`, `correlation_id`...) are allowed.
_PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "type": "object",
    "required": ["type", "status", "code", "detail"],
    "properties": {
        "type": {"type": "string"},
        "status": {"type": "integer"},
        "code": {"type": "string", "description": "stable, for programs"},
        "detail": {"type": "string", "description": "what is wrong, for people"},
        "hint": {"type": "string", "description": "what to do about it"},
    },
    "additionalProperties": True,
}
_DESCRIPTIONS = {
    400: "The request cannot be read (a body that is not JSON, a cursor this server did not hand out...)",
    401: "No credential, or one that is wrong, expired or revoked",
    403: "The caller's role does not allow it, or a browser request failed the CSRF check",
    404: "Nothing with this id in the caller's workspace",
    409: "The object's state does not allow it now",
    410: "Gone for good",
    413: "The body is over 1 MiB",
    422: "The request does not match the schema or the rules; the problem says which field and why",
    429: "Too many requests or failed sign-ins; see Retry-After",
    503: "Not ready or not available",
}

# The errors an authenticated route can always answer: no or a bad credential, a role or CSRF refusal,
# a request that does not match the schema, the workspace's request rate.
AUTHENTICATED = (401, 403, 422, 429)
# Routes that read a JSON body can also answer: not JSON (400), over the size limit (413).
WITH_BODY = (400, 413)


def problem_responses(
    *statuses: int, described: dict[int, str] | None = None
) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route or router: each status answers a problem document (application/problem+json).
    `described` words a status for this route (a route's entry replaces its router's for that status)."""
    words = {**_DESCRIPTIONS, **(described or {})}
    every = sorted({*statuses, *(described or {})})
    return {
        status: {"description": words[status], "content": {PROBLEM_JSON: {"schema": dict(_PROBLEM_SCHEMA)}}}
        for status in every
    }


_STATUS_CODES = {
    400: "bad_request", 401: "unauthenticated", 403: "forbidden", 404: "not_found",
    405: "method_not_allowed", 409: "conflict", 413: "too_large", 415: "unsupported_media_type",
    422: "invalid", 429: "too_many_requests",
}  # fmt: skip


def _allowed(request: Request) -> str:
    """Every method served at this path. Starlette's own 405 names only the first route that matched the
    path, and a path often has one route per method (GET and POST /api/v1/runs)."""
    methods: set[str] = set()
    for route in request.app.router.routes:
        match, _ = route.matches(request.scope)
        if match is not Match.NONE:
            methods |= getattr(route, "methods", None) or set()
    return ", ".join(sorted(methods))


def install(app: FastAPI) -> None:
    """Every error the app can raise becomes a problem document."""

    async def on_problem(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, Problem)
        return exc.response()

    async def on_http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        code = _STATUS_CODES.get(exc.status_code, "error")
        detail = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = _allowed(request)
        return problem_response(exc.status_code, code, detail, headers=headers)

    async def on_invalid(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        # Where and which rule, never the value: `input` and `ctx` may echo a secret.
        errors = [
            {
                "field": ".".join(str(p) for p in e.get("loc", ())),
                "rule": e.get("type"),
                "message": e.get("msg"),
            }
            for e in exc.errors()
        ]
        detail = "the request does not match the schema"
        hint = "fix the fields listed in `errors`"
        return problem_response(422, "invalid", detail, hint=hint, extra={"errors": errors})

    async def on_crash(request: Request, exc: Exception) -> Response:
        correlation = secrets.token_hex(8)
        log.error("unhandled error %s on %s %s: %s", correlation, request.method, request.url.path,
                  type(exc).__name__)  # fmt: skip
        return problem_response(500, "internal", "something went wrong on our side",
                                extra={"correlation_id": correlation})  # fmt: skip

    app.add_exception_handler(Problem, on_problem)
    app.add_exception_handler(HTTPException, on_http)
    app.add_exception_handler(RequestValidationError, on_invalid)
    app.add_exception_handler(Exception, on_crash)
