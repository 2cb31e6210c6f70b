"""`GET /oauth/callback/{provider}`: the browser coming back from the authorization server.

Public (no `require`): it is a redirect the browser follows. It still only works for the browser that
started the flow: the flow is bound to the starter's session (or API token) id, and the callback checks
it against the caller's own credential (domain.oauth.callback_refusal: other_session). State is single-use,
expired flows, a missing state, the wrong issuer or another provider's callback are refused before any
token request (OA-09, OA-10). On success: 303 to the flow's `return_to`, already reduced to a same-origin
path by safe_return_to (OA-11), with no token, code or state in the URL. A refusal answers with the reason
(problem+json, or a small HTML page for a browser), never a token (OA-13).
"""

from __future__ import annotations

import asyncio
import html
from typing import Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Request
from sqlalchemy import Connection
from starlette.responses import HTMLResponse, RedirectResponse, Response

from cosmogen.api.audit import record
from cosmogen.api.problems import problem_response, problem_responses
from cosmogen.api.routes.accounts import callback_url, session_binding
from cosmogen.api.security import Authenticator
from cosmogen.domain.oauth import safe_return_to
from cosmogen.integrations.oauth_flow import AuthorizationResponse, ConnectError, complete_connect
from cosmogen.integrations.vault import VaultError
from cosmogen.store.tables import utcnow

router = APIRouter(tags=["accounts"])

# The callback URL carries the code: no cache may keep it, and no Referer may carry it anywhere.
_PRIVATE = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}
_QUERY_KEYS = ("state", "code", "iss", "error", "error_description")
RESUMED = "resumed"
_NOT_OURS = frozenset(
    {"missing_state", "unknown_state", "state_used", "expired", "other_session", "already_connected"}
)


def _page_or_problem(described: dict[int, str]) -> dict[int | str, dict[str, Any]]:
    """Refusals: a page for a browser, a problem document for anything else."""
    found = problem_responses(described=described)
    for entry in found.values():
        entry["content"]["text/html"] = {"schema": {"type": "string"}}
    return found


def _browser(request: Request) -> bool:
    return "text/html" in request.headers.get("accept", "")


def _resume_same_site(provider: str, query: dict[str, str]) -> Response:
    """The session cookie is SameSite=Strict, so the provider's cross-site redirect arrives without it.
    This page sends the browser on to the same callback from our own origin: a same-site navigation,
    which carries the cookie. `resumed` marks the second visit, so a browser without a session gets the
    refusal instead of a loop. No script (the CSP forbids inline scripts); nothing is spent here."""
    target = f"/oauth/callback/{quote(provider[:64], safe='')}?{urlencode({**query, RESUMED: '1'})}"
    page = (
        "<!doctype html><meta charset=utf-8><meta name=referrer content=no-referrer>"
        f'<meta http-equiv="refresh" content="0;url={html.escape(target, quote=True)}">'
        f'<title>Connecting</title><p><a href="{html.escape(target, quote=True)}">Continue</a></p>'
    )
    return HTMLResponse(page, status_code=200, headers=_PRIVATE)


def _refused(request: Request, status: int, code: str, message: str) -> Response:
    if _browser(request):
        page = (
            "<!doctype html><meta charset=utf-8><title>Connection refused</title>"
            f"<h1>The account was not connected</h1><p>{html.escape(message)}</p>"
            '<p><a href="/">Back to cosmogen</a></p>'
        )
        return HTMLResponse(page, status_code=status, headers=_PRIVATE)
    hint = "start connecting again from the browser you are signed in with"
    return problem_response(status, code, message, hint=hint, headers=_PRIVATE)


@router.get(
    "/oauth/callback/{provider}",
    include_in_schema=True,
    summary="OAuth redirect back (browser)",
    # A browser (Accept: text/html) gets pages; anything else gets problem documents.
    responses={
        200: {"description": "A page that resumes the callback from our own origin (a browser without "
                             "its cookie yet)", "content": {"text/html": {"schema": {"type": "string"}}}},
        303: {"description": "Connected: on to the page the connect started from"},
        **_page_or_problem({
            400: "The provider's answer does not complete a flow of this session",
            401: "Not signed in in this browser",
            503: "The credential vault cannot open"}),
    },
    openapi_extra={
        "security": [{"APIKeyCookie": []}, {"HTTPBearer": []}],
        "parameters": [
            {"name": name, "in": "query", "required": False, "schema": {"type": "string"}}
            for name in (*_QUERY_KEYS, RESUMED)
        ],
    },
)  # fmt: skip
async def oauth_callback(request: Request, provider: str) -> Response:
    runtime = request.app.state.runtime
    auth: Authenticator = request.app.state.auth
    caller = await asyncio.to_thread(auth.authenticate, request)
    query = {k: v for k, v in request.query_params.items() if k in _QUERY_KEYS}
    if caller is None and _browser(request) and RESUMED not in request.query_params:
        return _resume_same_site(provider, query)
    if caller is None:
        # Nothing is touched: an unauthenticated visit cannot spend someone's state.
        return _refused(
            request,
            401,
            "unauthenticated",
            "sign in in this browser first: a connection completes only in the session that started it",
        )
    response = AuthorizationResponse.from_query(
        query, provider=provider[:64], redirect_uri=callback_url(request, provider[:64])
    )
    try:
        vault = runtime.open_vault()
    except VaultError:
        return _refused(
            request, 503, "vault_unavailable", "the credential vault cannot open; ask an operator"
        )
    try:
        connected = await complete_connect(
            runtime.writer,
            vault,
            runtime.http,
            runtime.executor.registry,
            response,
            session=session_binding(caller),
            now=utcnow,
        )
    except ConnectError as exc:
        # Audited on the account only when the response was its own flow's (not a replay or another
        # session's: that account may be in another workspace).
        if exc.account_id is not None and exc.code not in _NOT_OURS:
            account_id, code = exc.account_id, exc.code

            def audit(conn: Connection) -> None:
                record(conn, caller, "account.connect_refused", ("account", account_id), {"code": code})

            await runtime.writer.write(audit)
        return _refused(request, 400, exc.code, str(exc))
    details = {
        "scopes": list(connected.scopes),
        "missing_scopes": list(connected.missing_scopes),
        "refresh_token": connected.has_refresh_token,
    }

    def audit_ok(conn: Connection) -> None:
        record(conn, caller, "account.connect", ("account", connected.account_id), details)

    await runtime.writer.write(audit_ok)
    return RedirectResponse(safe_return_to(connected.return_to), status_code=303, headers=_PRIVATE)
