"""The OAuth 2.0 client's edges: fresh secrets for a flow, and one call to a token endpoint.

Decisions (which endpoints, what an answer means) live in domain/oauth.py. The token manager
(single-flight refresh under a database lease) and the connect flow build on `token_call`.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Callable, Mapping
from datetime import datetime
from urllib.parse import quote

from cosmogen.domain.bindings import RenderedRequest
from cosmogen.domain.oauth import (
    OAuthClientConfig,
    RefusalKind,
    TokenGrant,
    TokenRefusal,
    b64url,
    check_verifier,
    parse_token_response,
)
from cosmogen.integrations.http import HttpCallError, HttpClient
from cosmogen.integrations.retry import RetryPolicy
from cosmogen.integrations.secret import Secret

TOKEN_TIMEOUT_S = 20.0
# The token manager backs off on its own (and must not send one grant twice), so no transport retries.
NO_RETRIES = RetryPolicy(max_retries=0)
FORM = "application/x-www-form-urlencoded"


def new_verifier() -> str:
    """A PKCE code verifier: 48 random bytes (384 bits) as 64 base64url characters."""
    return check_verifier(b64url(secrets.token_bytes(48)))


def new_state() -> str:
    """A single-use `state`: 32 random bytes (256 bits) as 43 base64url characters."""
    return b64url(secrets.token_bytes(32))


def client_pair(client_id: str, client_secret: Secret) -> str:
    """`id:secret` as HTTP Basic carries the client's credentials (each form-urlencoded first)."""
    return f"{quote(client_id, safe='')}:{quote(client_secret.reveal(), safe='')}"


def client_request(
    url: str, config: OAuthClientConfig, client_secret: Secret | None, form: Mapping[str, str]
) -> RenderedRequest:
    """A form POST to the token or revocation endpoint, authenticated as the client (RFC 6749 §2.3.1:
    Basic with form-urlencoded id and secret, or both as form fields). Tokens go in the body, never
    the URL."""
    body = dict(form)
    headers = {"Content-Type": FORM, "Accept": "application/json"}
    if config.client_auth == "basic" and client_secret is not None:
        pair = client_pair(config.client_id, client_secret)
        headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode("ascii")
    else:
        body["client_id"] = config.client_id
        if client_secret is not None:
            body["client_secret"] = client_secret.reveal()
    return RenderedRequest("POST", url, headers, body, TOKEN_TIMEOUT_S)


async def token_call(
    http: HttpClient,
    config: OAuthClientConfig,
    client_secret: Secret | None,
    form: Mapping[str, str],
    now: Callable[[], datetime],
) -> TokenGrant | TokenRefusal:
    """One POST to the token endpoint (code exchange or refresh), through the egress guard, no retries.

    Network failures and 5xx/429 come back as TRANSIENT refusals (the grant is kept); nothing raises
    except programming errors. Refusal messages never contain the answer's body."""
    request = client_request(config.token_url, config, client_secret, form)
    try:
        response = await http.send(request, retry=NO_RETRIES)
    except HttpCallError as exc:
        if exc.kind == "egress":
            return TokenRefusal(RefusalKind.CLIENT, "egress", f"the token endpoint is not reachable: {exc}")
        if exc.status is None:
            return TokenRefusal(RefusalKind.TRANSIENT, exc.kind, f"the token endpoint failed: {exc}")
        return parse_token_response(exc.status, exc.body, now())
    return parse_token_response(response.status, response.body, now())
