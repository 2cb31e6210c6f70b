"""An OAuth 2.0 authorization server: the code flow with PKCE (S256 only), refresh-token rotation with
reuse detection, and RFC 7009 revocation. Approval is automatic: GET /oauth/authorize redirects straight
back with a code, as if the user had clicked "Allow".

Grants are kept as families: the tokens descended from one authorization. Presenting a refresh token that
was already rotated away revokes the whole family, as real servers do (RFC 9700 §4.14.2), and so does a
second use of an authorization code (RFC 6749 §4.1.2).
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlencode

from cosmogen.testing.simulator.dialects import NO_STORE, OAuth
from cosmogen.testing.simulator.reply import Reply
from cosmogen.testing.simulator.routes import Call, basic_auth

VERIFIER = re.compile(r"[A-Za-z0-9\-._~]{43,128}")
CHALLENGE = re.compile(r"[A-Za-z0-9_-]{43}")
TokenState = Literal["valid", "expired", "revoked", "unknown"]
UNSET: Any = object()  # "use the server's setting" as opposed to None, which means "no expiry"


@dataclass
class Client:
    client_id: str
    secret: str | None  # None: a public client (PKCE alone)
    redirect_uris: tuple[str, ...]


@dataclass
class AuthorizationCode:
    code: str
    client_id: str
    redirect_uri: str
    challenge: str
    scope: str
    issued_at: float
    used: bool = False
    family: str | None = None


@dataclass
class Family:
    id: str
    client_id: str
    scope: str
    current_refresh: str | None
    refresh_tokens: list[str] = field(default_factory=list)
    access_tokens: list[str] = field(default_factory=list)
    revoked: str | None = None  # why: "reuse", "code_reuse", "revoked", "admin"


@dataclass
class AccessToken:
    token: str
    client_id: str
    family: str
    scope: str
    expires_at: float | None
    revoked: bool = False


@dataclass(frozen=True)
class Tokens:
    access_token: str
    refresh_token: str | None
    expires_in: int | None
    scope: str

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"access_token": self.access_token, "token_type": "Bearer"}
        if self.expires_in is not None:
            body["expires_in"] = self.expires_in
        if self.refresh_token is not None:
            body["refresh_token"] = self.refresh_token
        if self.scope:
            body["scope"] = self.scope
        return body


class AuthorizationServer:
    def __init__(self, name: str, clock: Callable[[], float], issuer: Callable[[], str]) -> None:
        self.name = name
        self.clock = clock
        self._issuer = issuer
        self.dialect = OAuth()
        # Settings a test may change at any time.
        self.expires_in: int | None = 3600  # None: token responses carry no expires_in, tokens never expire
        self.rotate_refresh_tokens = True
        self.code_ttl_s = 60.0
        self.clients: dict[str, Client] = {}
        self.reset()

    @property
    def issuer(self) -> str:
        return self._issuer()

    def reset(self) -> None:
        """Forget every code, token and family (clients and settings stay)."""
        self.codes: dict[str, AuthorizationCode] = {}
        self.families: dict[str, Family] = {}
        self.access: dict[str, AccessToken] = {}
        self.refresh: dict[str, str] = {}  # refresh token -> family id
        self.revocations: list[tuple[str, str]] = []  # (family id, reason), in order
        self._serial = {"code": 0, "at": 0, "rt": 0, "family": 0}

    def register_client(
        self, client_id: str, secret: str | None = None, redirect_uris: Iterable[str] = ()
    ) -> Client:
        client = Client(client_id, secret, tuple(redirect_uris))
        self.clients[client_id] = client
        return client

    # Tokens, for tests and for the provider routes.

    def issue(self, client_id: str, scope: str = "", *, expires_in: int | None = UNSET) -> Tokens:
        """A new grant as if the code flow had just finished (tests of refresh start from here)."""
        if client_id not in self.clients:
            raise KeyError(f"unknown client {client_id!r}")
        family = self._new_family(client_id, scope)
        return self._tokens(
            family, rotate=True, expires_in=self.expires_in if expires_in is UNSET else expires_in
        )

    def check_access_token(self, token: str) -> TokenState:
        record = self.access.get(token)
        if record is None:
            return "unknown"
        if record.revoked or self.families[record.family].revoked:
            return "revoked"
        if record.expires_at is not None and self.clock() >= record.expires_at:
            return "expired"
        return "valid"

    def expire(self, token: str | None = None) -> int:
        """Make one access token (or all of them) expired now; returns how many changed."""
        now = self.clock()
        records = [self.access[token]] if token is not None and token in self.access else []
        if token is None:
            records = list(self.access.values())
        for record in records:
            record.expires_at = now
        return len(records)

    def revoke_family(self, token: str, reason: str = "admin") -> bool:
        """Revoke the grant a refresh or access token belongs to; False when the token is unknown."""
        family_id = self.refresh.get(token) or (self.access[token].family if token in self.access else None)
        if family_id is None:
            return False
        self._revoke(self.families[family_id], reason)
        return True

    def family_of(self, token: str) -> Family | None:
        family_id = self.refresh.get(token) or (self.access[token].family if token in self.access else None)
        return None if family_id is None else self.families[family_id]

    # Endpoints.

    async def authorize(self, call: Call) -> Reply:
        q = dict(call.request.query)
        client = self.clients.get(q.get("client_id", ""))
        redirect_uri = q.get("redirect_uri", "")
        # Without a known client and one of its registered redirect URIs, redirecting would make this an
        # open redirector: answer here instead (RFC 6749 §4.1.2.1).
        if client is None:
            return self.dialect.error(400, "invalid_request", "unknown client_id")
        if redirect_uri not in client.redirect_uris:
            return self.dialect.error(
                400, "invalid_request", "redirect_uri is not registered for this client"
            )
        state = q.get("state")

        def back(**params: str) -> Reply:
            if state is not None:
                params["state"] = state
            params["iss"] = self.issuer  # RFC 9207, so clients can detect mix-up
            joiner = "&" if "?" in redirect_uri else "?"
            outcome = "error" if "error" in params else "ok"
            return Reply(
                302, headers={"Location": redirect_uri + joiner + urlencode(params)}, outcome=outcome
            )

        if q.get("response_type") != "code":
            return back(error="unsupported_response_type", error_description="only response_type=code")
        if not state:
            return back(error="invalid_request", error_description="state is required")
        method = q.get("code_challenge_method")
        challenge = q.get("code_challenge", "")
        if not challenge:
            return back(error="invalid_request", error_description="code_challenge (PKCE) is required")
        if method != "S256":  # absent means "plain" (RFC 7636 §4.3), which is refused too
            return back(
                error="invalid_request", error_description="transform algorithm not supported; use S256"
            )
        if not CHALLENGE.fullmatch(challenge):
            return back(error="invalid_request", error_description="code_challenge is not a S256 challenge")
        self._serial["code"] += 1
        code = f"{self.name}-code-{self._serial['code']:06d}"
        self.codes[code] = AuthorizationCode(
            code, client.client_id, redirect_uri, challenge, q.get("scope", ""), self.clock()
        )
        return back(code=code)

    async def token(self, call: Call) -> Reply:
        checked = self._client_form(call)
        if isinstance(checked, Reply):
            return checked
        client, form = checked
        grant = form.get("grant_type")
        if grant == "authorization_code":
            return self._exchange_code(client, form)
        if grant == "refresh_token":
            return self._refresh(client, form)
        if not grant:
            return self.dialect.error(400, "invalid_request", "grant_type is required")
        return self.dialect.error(400, "unsupported_grant_type", f"grant_type {grant} is not supported")

    async def revoke(self, call: Call) -> Reply:
        if "token" in call.request.query:
            # RFC 7009 §2.1: the token goes in the body; one in the URL ends up in logs.
            return self.dialect.error(400, "invalid_request", "the token must be sent in the request body")
        checked = self._client_form(call)
        if isinstance(checked, Reply):
            return checked
        client, form = checked
        token = form.get("token")
        if not token:
            return self.dialect.error(400, "invalid_request", "token is required")
        family = self.family_of(token)
        if family is None:
            return Reply(200, outcome="ok")  # unknown or already gone: still a success (RFC 7009 §2.2)
        if family.client_id != client.client_id:
            return self.dialect.error(400, "unauthorized_client", "the token was not issued to this client")
        if token in self.refresh:
            self._revoke(family, "revoked")
        else:
            self.access[token].revoked = True
        return Reply(200, outcome="ok")

    def metadata(self) -> dict[str, Any]:
        """RFC 8414 metadata, so clients can be configured from the issuer alone."""
        base = self.issuer
        return {
            "issuer": base,
            "authorization_endpoint": f"{base}/oauth/authorize",
            "token_endpoint": f"{base}/oauth/token",
            "revocation_endpoint": f"{base}/oauth/revoke",
            "response_types_supported": ["code"],
            "grant_types_supported": ["authorization_code", "refresh_token"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
            "revocation_endpoint_auth_methods_supported": [
                "client_secret_basic",
                "client_secret_post",
                "none",
            ],
            "authorization_response_iss_parameter_supported": True,
        }

    # Internals.

    def _client_form(self, call: Call) -> tuple[Client, dict[str, str]] | Reply:
        """The form body and the authenticated client of a token or revoke request, or the refusal."""
        form, refusal = self._form(call)
        if refusal is not None:
            return refusal
        client, refusal = self._authenticate(call, form)
        if refusal is not None:
            return refusal
        assert client is not None
        return client, form

    def _form(self, call: Call) -> tuple[dict[str, str], Reply | None]:
        if call.request.content_type != "application/x-www-form-urlencoded" or not isinstance(
            call.body, dict
        ):
            message = "the body must be application/x-www-form-urlencoded"
            return {}, self.dialect.error(400, "invalid_request", message)
        return {str(k): str(v) for k, v in call.body.items()}, None

    def _authenticate(self, call: Call, form: dict[str, str]) -> tuple[Client | None, Reply | None]:
        basic = basic_auth(call.request)
        if basic is not None and "client_secret" in form:
            message = "more than one client authentication method"
            return None, self.dialect.error(400, "invalid_request", message)
        if basic is not None:
            client_id, secret = basic
            if "client_id" in form and form["client_id"] != client_id:
                return None, self.dialect.error(
                    400, "invalid_request", "client_id differs from the credentials"
                )
        else:
            client_id, secret = form.get("client_id", ""), form.get("client_secret", "")
        client = self.clients.get(client_id)
        if client is None or (client.secret is not None and secret != client.secret):
            return None, self.dialect.auth_error("invalid", "")
        if client.secret is None and secret:
            return None, self.dialect.auth_error("invalid", "")
        return client, None

    def _exchange_code(self, client: Client, form: dict[str, str]) -> Reply:
        for name in ("code", "redirect_uri", "code_verifier"):
            if not form.get(name):
                return self.dialect.error(400, "invalid_request", f"{name} is required")
        record = self.codes.get(form["code"])
        if record is None or record.client_id != client.client_id:
            return self._invalid_grant("unknown authorization code")
        if record.used:
            if record.family is not None:
                self._revoke(self.families[record.family], "code_reuse")
            return self._invalid_grant("authorization code already used")
        record.used = True  # any attempt spends it, so a verifier cannot be guessed
        if self.clock() - record.issued_at > self.code_ttl_s:
            return self._invalid_grant("authorization code expired")
        if form["redirect_uri"] != record.redirect_uri:
            return self._invalid_grant("redirect_uri does not match the authorization request")
        verifier = form["code_verifier"]
        if not VERIFIER.fullmatch(verifier) or s256(verifier) != record.challenge:
            return self._invalid_grant("PKCE verification failed")
        family = self._new_family(client.client_id, record.scope)
        record.family = family.id
        return self._token_reply(self._tokens(family, rotate=True, expires_in=self.expires_in))

    def _refresh(self, client: Client, form: dict[str, str]) -> Reply:
        token = form.get("refresh_token")
        if not token:
            return self.dialect.error(400, "invalid_request", "refresh_token is required")
        family_id = self.refresh.get(token)
        family = None if family_id is None else self.families[family_id]
        if family is None or family.client_id != client.client_id:
            return self._invalid_grant("unknown refresh token")
        if family.revoked:
            return self._invalid_grant("Token has been expired or revoked.")
        if token != family.current_refresh:
            self._revoke(family, "reuse")
            return self._invalid_grant("refresh token reuse detected; the grant is revoked")
        scope = family.scope
        if form.get("scope"):
            requested = set(form["scope"].split())
            if not requested <= set(family.scope.split()):
                return self.dialect.error(400, "invalid_scope", "scope exceeds the original grant")
            scope = " ".join(sorted(requested))
        tokens = self._tokens(
            family, rotate=self.rotate_refresh_tokens, expires_in=self.expires_in, scope=scope
        )
        return self._token_reply(tokens)

    def _invalid_grant(self, message: str) -> Reply:
        return self.dialect.error(400, "invalid_grant", message)

    def _token_reply(self, tokens: Tokens) -> Reply:
        return Reply(200, tokens.to_json(), headers=dict(NO_STORE))

    def _new_family(self, client_id: str, scope: str) -> Family:
        self._serial["family"] += 1
        family = Family(f"{self.name}-family-{self._serial['family']:06d}", client_id, scope, None)
        self.families[family.id] = family
        return family

    def _tokens(
        self, family: Family, *, rotate: bool, expires_in: int | None, scope: str | None = None
    ) -> Tokens:
        self._serial["at"] += 1
        access = f"{self.name}-at-{self._serial['at']:06d}"
        scope = family.scope if scope is None else scope
        expires_at = None if expires_in is None else self.clock() + expires_in
        self.access[access] = AccessToken(access, family.client_id, family.id, scope, expires_at)
        family.access_tokens.append(access)
        refresh = None
        if rotate or family.current_refresh is None:
            self._serial["rt"] += 1
            refresh = f"{self.name}-rt-{self._serial['rt']:06d}"
            self.refresh[refresh] = family.id
            family.refresh_tokens.append(refresh)
            family.current_refresh = refresh
        return Tokens(access, refresh, expires_in, scope)

    def _revoke(self, family: Family, reason: str) -> None:
        if family.revoked is None:
            family.revoked = reason
            self.revocations.append((family.id, reason))


def s256(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode("ascii")).digest()).rstrip(b"=").decode()
