"""From a saved account to a request a provider accepts: the seam between the executor and the accounts.

The executor asks an `AccountResolver` for a `Connection` (the account checked usable, its base URL and
its secrets from the vault), then `provider_request` adds the provider's pinned headers, the
credential and the base URL to a capability's `ProviderRequest`. Secrets stay `Secret` until this last
step, and every text that goes back to the run (an error, a provider's message) passes `scrub`.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from cosmogen.domain.bindings import RenderedRequest
from cosmogen.domain.capabilities import Action, Capability, Provider, ProviderRequest
from cosmogen.domain.ratelimit import Limit
from cosmogen.integrations.redact import scrub_values
from cosmogen.integrations.secret import Secret


class AccountUnavailable(Exception):
    """The binding's account cannot be used now; the message says why and `action` what to do."""

    def __init__(self, message: str, action: Action) -> None:
        super().__init__(message)
        self.action = action


@dataclass(frozen=True)
class Connection:
    account_id: str
    name: str
    provider: str
    auth_kind: str  # "oauth2" | "api_key" | "basic" | "none"
    base_url: str
    secrets: Mapping[str, Secret] = field(default_factory=dict)
    # The shared rate limit its calls are charged to (provider default or account override); None: none.
    limit: Limit | None = None
    tier: str = "sandbox"  # accounts.tier: "sandbox" | "production"
    # When its access token runs out (OAuth), as the account row said when the connection was made.
    token_expires_at: datetime | None = None
    verified: bool = False  # a test call or a connect has succeeded (accounts.verified_at is set)

    def scrub(self, text: str) -> str:
        """`text` with every secret of this account masked, in every form it was sent in (some providers
        echo a credential back: raw, or the base64 `user:password` of a Basic header)."""
        values = [secret.reveal() for secret in self.secrets.values()]
        pair = _basic_pair(self)
        return scrub_values(text, values if pair is None else [*values, pair])


class AccountResolver(Protocol):
    async def connection(
        self, workspace: str, account: str, capability: Capability, provider: Provider
    ) -> Connection:
        """The named account, usable for `capability`, or AccountUnavailable."""
        ...

    async def refreshed(self, connection: Connection) -> Connection:
        """`connection` with a new access token after a provider refused its token (OAuth: one forced
        refresh), or AccountUnavailable."""
        ...


def provider_request(
    provider: Provider, connection: Connection, request: ProviderRequest, timeout_s: float
) -> RenderedRequest:
    """The concrete request: base URL + path, pinned and step headers, and the credential."""
    headers = {**provider.headers, **request.headers}
    body = request.body
    token = _credential(connection)
    if token is not None:
        if request.token_in_body:
            body = {**(body or {}), request.token_in_body: token.reveal()}
        elif (pair := _basic_pair(connection)) is not None:
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode("ascii")
        elif provider.auth_header == "x-api-key":
            headers["x-api-key"] = token.reveal()
        else:
            headers["Authorization"] = f"Bearer {token.reveal()}"
    if body is not None and not any(k.lower() == "content-type" for k in headers):
        headers["Content-Type"] = "application/json"
    return RenderedRequest(
        method=request.method,
        url=connection.base_url.rstrip("/") + request.path,
        headers=headers,
        body=body,
        timeout_s=timeout_s,
    )


def shown_provider_request(provider: Provider, base_url: str, request: ProviderRequest) -> dict[str, Any]:
    """What a dry run shows: the request without any credential (none is read for a dry run)."""
    return {
        "method": request.method,
        "url": (base_url or "<account base URL>").rstrip("/") + request.path,
        "headers": {**provider.headers, **request.headers},
        "body": request.body,
    }


def _basic_pair(connection: Connection) -> str | None:
    """`user:password` of a basic-auth account, as its Authorization header carries it (base64)."""
    password = _credential(connection)
    if connection.auth_kind != "basic" or password is None:
        return None
    user = connection.secrets.get("username")
    return f"{user.reveal() if user else ''}:{password.reveal()}"


def _credential(connection: Connection) -> Secret | None:
    for name in ("access_token", "api_key", "password", "token"):
        if name in connection.secrets:
            return connection.secrets[name]
    return None
