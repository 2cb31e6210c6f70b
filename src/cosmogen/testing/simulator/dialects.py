"""How each provider words its errors. Bodies and statuses follow the providers' current documentation;
where the simulator departs from the real service, the docstring says so."""

from __future__ import annotations

import math
from http import HTTPStatus
from typing import Any, Literal

from cosmogen.testing.simulator.faults import Fault
from cosmogen.testing.simulator.reply import Reply

# missing/invalid/expired/revoked credentials, and "echo": a 401 repeating what was sent (leak tests)
AuthReason = Literal["missing", "invalid", "expired", "revoked", "echo"]
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def rate_headers(retry_after: float | None, reset_at: float | None) -> dict[str, str]:
    headers: dict[str, str] = {}
    if retry_after is not None:
        # Retry-After is whole seconds (RFC 9110); retry-after-ms carries the exact wait, as OpenAI does.
        # Rounded up, less float noise: a wait of 0.05000000001 s is 50 ms.
        headers["Retry-After"] = str(math.ceil(retry_after - 1e-9))
        headers["retry-after-ms"] = str(math.ceil(retry_after * 1000 - 1e-6))
    if reset_at is not None:
        headers["x-ratelimit-reset"] = str(math.ceil(reset_at))  # epoch seconds, as GitHub and X send it
    return headers


def phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


class Dialect:
    """The generic shape (webhooks, unknown routes): `{"error": code, "message": ...}`."""

    name = "generic"
    # The headers an accepted request's answer reports its rate-limit headroom in: (limit, remaining).
    quota_headers = ("x-ratelimit-limit", "x-ratelimit-remaining")

    def __init__(self) -> None:
        self.serial = 0  # for ids the errors carry (fbtrace_id), counted so they are deterministic

    def error(self, status: int, code: str, message: str, *, outcome: str = "") -> Reply:
        return Reply(status, {"error": code, "message": message}, outcome=outcome)

    def auth_error(self, reason: AuthReason, detail: str) -> Reply:
        message = f"invalid credentials: {detail}" if reason == "echo" else f"credentials {reason}"
        return self.error(401, "unauthorized", message, outcome="unauthorized")

    def rate_limited(self, retry_after: float | None, reset_at: float | None) -> Reply:
        reply = self.error(429, "rate_limited", "too many requests", outcome="rate_limited")
        reply.headers.update(rate_headers(retry_after, reset_at))
        return reply

    def status_error(self, status: int) -> Reply:
        return self.error(status, "server_error" if status >= 500 else "error", phrase(status))


class OpenAI(Dialect):
    """`{"error": {"message", "type", "param", "code"}}`."""

    name = "openai"
    quota_headers = ("x-ratelimit-limit-requests", "x-ratelimit-remaining-requests")

    def error(
        self,
        status: int,
        code: str,
        message: str,
        *,
        outcome: str = "",
        type_: str = "invalid_request_error",
        param: str | None = None,
    ) -> Reply:
        body = {"error": {"message": message, "type": type_, "param": param, "code": code or None}}
        return Reply(status, body, outcome=outcome)

    def auth_error(self, reason: AuthReason, detail: str) -> Reply:
        code, message = {
            "missing": (
                "",
                "You didn't provide an API key. You need to provide your API key in an Authorization "
                "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
            ),
            # Like OpenAI, the key is masked; only the echo fault repeats it whole.
            "invalid": ("invalid_api_key", f"Incorrect API key provided: {mask(detail)}."),
            "expired": ("token_expired", "The access token provided has expired."),
            "revoked": ("token_revoked", "The access token provided has been revoked."),
            "echo": ("invalid_api_key", f"Invalid authentication: {detail}"),
        }[reason]
        return self.error(401, code, message, outcome="unauthorized")

    def rate_limited(self, retry_after: float | None, reset_at: float | None) -> Reply:
        wait = f" Please try again in {retry_after:g}s." if retry_after is not None else ""
        reply = self.error(
            429, "rate_limit_exceeded", f"Rate limit reached for requests.{wait}", type_="requests"
        )
        reply.outcome = "rate_limited"
        reply.headers.update(rate_headers(retry_after, reset_at))
        if retry_after is not None:
            reply.headers["x-ratelimit-reset-requests"] = f"{retry_after:g}s"
        return reply

    def status_error(self, status: int) -> Reply:
        if status == 503:
            message = "The engine is currently overloaded, please try again later."
        elif status >= 500:
            message = "The server had an error while processing your request. Sorry about that!"
        else:
            message = phrase(status)
        return self.error(
            status, "", message, type_="server_error" if status >= 500 else "invalid_request_error"
        )


class Anthropic(Dialect):
    """`{"type": "error", "error": {"type", "message"}}`; 529 is `overloaded_error`."""

    name = "anthropic"
    quota_headers = ("anthropic-ratelimit-requests-limit", "anthropic-ratelimit-requests-remaining")

    def error(self, status: int, code: str, message: str, *, outcome: str = "") -> Reply:
        return Reply(status, {"type": "error", "error": {"type": code, "message": message}}, outcome=outcome)

    def auth_error(self, reason: AuthReason, detail: str) -> Reply:
        message = {
            "missing": "x-api-key header is required",
            "invalid": "invalid x-api-key",
            "expired": "OAuth token has expired",
            "revoked": "OAuth token has been revoked",
            "echo": f"invalid x-api-key: {detail}",
        }[reason]
        return self.error(401, "authentication_error", message, outcome="unauthorized")

    def rate_limited(self, retry_after: float | None, reset_at: float | None) -> Reply:
        reply = self.error(429, "rate_limit_error", "Number of requests has exceeded your rate limit")
        reply.outcome = "rate_limited"
        reply.headers.update(rate_headers(retry_after, reset_at))
        return reply

    def status_error(self, status: int) -> Reply:
        if status == 529:
            return self.error(529, "overloaded_error", "Overloaded")
        if status >= 500:
            return self.error(status, "api_error", "Internal server error")
        code = {403: "permission_error", 404: "not_found_error", 413: "request_too_large"}.get(
            status, "invalid_request_error"
        )
        return self.error(status, code, phrase(status))


class Slack(Dialect):
    """HTTP 200 with `{"ok": false, "error": "..."}` for every refusal, as Slack does, except rate limits:
    Slack answers those with HTTP 429, `Retry-After` and `"error": "ratelimited"`."""

    name = "slack"

    def error(self, status: int, code: str, message: str = "", *, outcome: str = "") -> Reply:
        body: dict[str, Any] = {"ok": False, "error": code}
        if message:
            body["response_metadata"] = {"messages": [message]}
        return Reply(status, body, outcome=outcome or "error")

    def auth_error(self, reason: AuthReason, detail: str) -> Reply:
        if reason == "echo":
            return self.error(
                401, "invalid_auth", f"[ERROR] invalid credentials: {detail}", outcome="unauthorized"
            )
        code = {
            "missing": "not_authed",
            "invalid": "invalid_auth",
            "expired": "token_expired",
            "revoked": "token_revoked",
        }[reason]
        return self.error(200, code, outcome="unauthorized")

    def rate_limited(self, retry_after: float | None, reset_at: float | None) -> Reply:
        reply = self.error(429, "ratelimited", outcome="rate_limited")
        reply.headers.update(rate_headers(retry_after, reset_at))
        return reply

    def status_error(self, status: int) -> Reply:
        return self.error(status, "internal_error" if status >= 500 else "request_failed", phrase(status))


class X(Dialect):
    """RFC 7807 problem details, as the X API v2 sends them (`application/problem+json`)."""

    name = "x"
    quota_headers = ("x-rate-limit-limit", "x-rate-limit-remaining")

    def error(self, status: int, code: str, message: str, *, outcome: str = "", title: str = "") -> Reply:
        body = {
            "title": title or phrase(status),
            "detail": message,
            "type": code or "about:blank",
            "status": status,
        }
        return Reply(status, body, outcome=outcome, content_type="application/problem+json")

    def auth_error(self, reason: AuthReason, detail: str) -> Reply:
        message = f"Unauthorized: {detail}" if reason == "echo" else "Unauthorized"
        return self.error(401, "about:blank", message, outcome="unauthorized")

    def rate_limited(self, retry_after: float | None, reset_at: float | None) -> Reply:
        reply = self.error(429, "about:blank", "Too Many Requests", outcome="rate_limited")
        reply.headers.update(rate_headers(retry_after, reset_at))
        reply.headers["x-rate-limit-remaining"] = "0"
        if reset_at is not None:
            reply.headers["x-rate-limit-reset"] = str(math.ceil(reset_at))  # X's own spelling
        return reply

    def status_error(self, status: int) -> Reply:
        return self.error(status, "about:blank", phrase(status))


class Graph(Dialect):
    """Meta Graph API: `{"error": {"message", "type", "code", "error_subcode", "fbtrace_id"}}`; token
    errors are HTTP 400 with code 190, as Graph sends them. Departure: rate limits are HTTP 429 here
    (Graph uses codes 4/17/32 with other statuses), so the retry path is exercised uniformly."""

    name = "instagram"

    def error(
        self,
        status: int,
        code: str,
        message: str,
        *,
        outcome: str = "",
        type_: str = "OAuthException",
        subcode: int | None = None,
        transient: bool | None = None,
    ) -> Reply:
        self.serial += 1
        error: dict[str, Any] = {
            "message": message,
            "type": type_,
            "code": int(code) if code.isdigit() else code,
        }
        if subcode is not None:
            error["error_subcode"] = subcode
        if transient is not None:
            error["is_transient"] = transient
        error["fbtrace_id"] = f"SIMtrace{self.serial:06d}"
        return Reply(status, {"error": error}, outcome=outcome)

    def auth_error(self, reason: AuthReason, detail: str) -> Reply:
        if reason == "missing":
            message = "An active access token must be used to query information about the current user."
            return self.error(400, "2500", message, outcome="unauthorized")
        status, subcode, message = {
            "invalid": (400, None, "Invalid OAuth access token - Cannot parse access token"),
            "expired": (400, 463, "Error validating access token: Session has expired"),
            "revoked": (400, 458, "Error validating access token: The user has not authorized application."),
            "echo": (401, None, f"Invalid OAuth access token: {detail}"),
        }[reason]
        return self.error(status, "190", message, subcode=subcode, outcome="unauthorized")

    def rate_limited(self, retry_after: float | None, reset_at: float | None) -> Reply:
        reply = self.error(429, "4", "(#4) Application request limit reached", transient=True)
        reply.outcome = "rate_limited"
        reply.headers.update(rate_headers(retry_after, reset_at))
        return reply

    def status_error(self, status: int) -> Reply:
        if status >= 500:
            message = "An unexpected error has occurred. Please retry your request later."
            return self.error(status, "2", message, transient=True)
        return self.error(status, "1", phrase(status))


class OAuth(Dialect):
    """RFC 6749 §5.2: `{"error", "error_description"}`, never cached."""

    name = "oauth"

    def error(self, status: int, code: str, message: str, *, outcome: str = "") -> Reply:
        body = {"error": code, "error_description": message}
        return Reply(status, body, headers=dict(NO_STORE), outcome=outcome)

    def auth_error(self, reason: AuthReason, detail: str) -> Reply:
        if reason == "expired":
            return self.error(400, "invalid_grant", "The refresh token has expired", outcome="unauthorized")
        if reason == "revoked":
            return self.error(
                400, "invalid_grant", "Token has been expired or revoked.", outcome="unauthorized"
            )
        message = (
            f"Client authentication failed: {detail}" if reason == "echo" else "Client authentication failed"
        )
        reply = self.error(401, "invalid_client", message, outcome="unauthorized")
        reply.headers["WWW-Authenticate"] = 'Basic realm="cosmogen-simulator"'
        return reply

    def rate_limited(self, retry_after: float | None, reset_at: float | None) -> Reply:
        reply = self.error(429, "temporarily_unavailable", "Too many requests", outcome="rate_limited")
        reply.headers.update(rate_headers(retry_after, reset_at))
        return reply

    def status_error(self, status: int) -> Reply:
        code = (
            "temporarily_unavailable"
            if status == 503
            else "server_error"
            if status >= 500
            else "invalid_request"
        )
        return self.error(status, code, phrase(status))


def fault_reply(dialect: Dialect, fault: Fault, echo: str, wall_now: float) -> Reply:
    """The answer a scripted fault gives, in the route's dialect (`delay` is handled by the caller)."""
    if fault.kind == "rate_limit":
        reset_at = None if fault.reset_after is None else wall_now + fault.reset_after
        reply = dialect.rate_limited(fault.retry_after, reset_at)
        reply.status = fault.status
    elif fault.kind == "status":
        reply = dialect.status_error(fault.status)
    elif fault.kind == "token_expired":
        reply = dialect.auth_error("expired", "")
    elif fault.kind == "revoked":
        reply = dialect.auth_error("revoked", "")
    elif fault.kind == "invalid_grant":
        reply = OAuth().error(400, "invalid_grant", fault.message or "invalid_grant")
    elif fault.kind == "echo_auth":
        # The refusal's body repeating the credentials, with the fault's status: 401 (`Fault.echo_auth()`),
        # or a 5xx that a client retries, e.g. `Fault("echo_auth", status=500)`.
        reply = dialect.auth_error("echo", echo)
        reply.status = fault.status
    else:  # pragma: no cover - "delay" never reaches here
        raise ValueError(f"no reply for fault kind {fault.kind}")
    if fault.message and fault.kind not in ("invalid_grant", "echo_auth"):
        reply.headers["x-simulator-message"] = fault.message
    reply.outcome = "fault"
    return reply


def mask(secret: str) -> str:
    if len(secret) <= 8:
        return "*" * len(secret)
    return secret[:3] + "*" * (len(secret) - 7) + secret[-4:]
