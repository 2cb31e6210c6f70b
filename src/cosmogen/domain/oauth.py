"""OAuth 2.0 decisions with no I/O, no clock and no randomness (the caller passes `now` and fresh values).

- PKCE (RFC 7636): only S256; the verifier's alphabet and length are checked, the challenge derived.
- When to refresh: a token is refreshed `window` before it expires (5 minutes by default, our rule;
  google-auth uses 3:45, Slack's SDK 2 hours). A token without an expiry is never refreshed ahead:
  only a 401 triggers one refresh and one retry.
- Where to send a person after connecting: only a same-origin relative path, anything else becomes "/"
  (the open-redirect payloads of reliability.md OA-11).
- `state` is stored as its SHA-256 only, so a copy of the database cannot answer a callback.
- Which endpoints and client an account uses (`oauth_config`), what a token endpoint's answer means
  (`parse_token_response`: a grant, or a `TokenRefusal` whose `kind` says whether the grant is lost).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlencode, urlsplit

if TYPE_CHECKING:  # the registry loads pydantic; these decisions need only its shape
    from cosmogen.domain.capabilities import Registry

DEFAULT_REFRESH_WINDOW = timedelta(minutes=5)
# RFC 7636 §4.1: 43 to 128 characters of [A-Z a-z 0-9 - . _ ~].
_VERIFIER = re.compile(r"[A-Za-z0-9\-._~]{43,128}")
MIN_STATE_CHARS = 22  # 22 base64url characters carry 132 bits: above the 128 bits OA-09 asks for


class OAuthError(ValueError):
    """A parameter that must not be used (a bad verifier, a state too short); the message says why."""


def b64url(data: bytes) -> str:
    """Base64url without padding (RFC 7636 Appendix A)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def check_verifier(verifier: str) -> str:
    if not _VERIFIER.fullmatch(verifier):
        raise OAuthError(
            "a PKCE code verifier must be 43 to 128 characters of A-Z, a-z, 0-9, '-', '.', '_' or '~'"
        )
    return verifier


def s256_challenge(verifier: str) -> str:
    """The S256 code challenge: b64url(sha256(verifier)). `plain` is never offered."""
    return b64url(hashlib.sha256(check_verifier(verifier).encode("ascii")).digest())


def state_hash(state: str) -> str:
    if len(state) < MIN_STATE_CHARS:
        raise OAuthError(f"an OAuth state needs at least {MIN_STATE_CHARS} random base64url characters")
    return hashlib.sha256(state.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class AuthorizationRequest:
    url: str
    state: str
    verifier: str


def authorization_request(
    endpoint: str,
    *,
    client_id: str,
    redirect_uri: str,
    scopes: tuple[str, ...],
    state: str,
    verifier: str,
    extra: tuple[tuple[str, str], ...] = (),
) -> AuthorizationRequest:
    """The URL a person is sent to, with `state` and an S256 challenge (never the verifier itself)."""
    state_hash(state)  # refuses a short state before it is ever used
    parts = urlsplit(endpoint)
    if parts.scheme != "https" and parts.hostname not in ("127.0.0.1", "localhost", "::1"):
        raise OAuthError(f"the authorization endpoint must use https, not {endpoint!r}")
    params = [
        ("response_type", "code"),
        ("client_id", client_id),
        ("redirect_uri", redirect_uri),
        ("scope", " ".join(scopes)),
        ("state", state),
        ("code_challenge", s256_challenge(verifier)),
        ("code_challenge_method", "S256"),
        *extra,
    ]
    separator = "&" if parts.query else ("" if endpoint.endswith("?") else "?")
    return AuthorizationRequest(f"{endpoint}{separator}{urlencode(params)}", state, verifier)


def refresh_due(
    now: datetime, expires_at: datetime | None, window: timedelta = DEFAULT_REFRESH_WINDOW
) -> bool:
    """True once `now` is within `window` of expiry (or past it); False for a token with no expiry."""
    if expires_at is None:
        return False
    return now >= expires_at - window


def expiry_from(now: datetime, expires_in: object) -> datetime | None:
    """`expires_in` from a token response (seconds; some servers send a string) as an instant, or None
    when the server gave none or nonsense (then only a 401 triggers a refresh)."""
    if isinstance(expires_in, bool):
        return None
    if isinstance(expires_in, str) and expires_in.strip().isdigit():
        expires_in = int(expires_in.strip())
    if isinstance(expires_in, int | float) and 0 < expires_in < 10 * 365 * 86400:
        return now + timedelta(seconds=float(expires_in))
    return None


def safe_return_to(value: str | None) -> str:
    """A same-origin relative path to go back to after connecting an account, else "/".

    Accepted: "/", "/a/b?c=d#e". Refused: anything with a scheme or host (`https:evil.com`,
    `//evil.com`, `/\\evil.com`), backslashes, control or invisible characters, and whatever decodes to
    one of those (`%2F%2Fevil.com`), since browsers and servers normalise differently.
    """
    if not value or len(value) > 2048:
        return "/"
    decoded = value
    for _ in range(3):  # double- and triple-encoded payloads are decoded too
        decoded = unquote(decoded)
    for candidate in (value, decoded):
        if not candidate.startswith("/") or candidate.startswith("//"):
            return "/"
        # Browsers drop tabs and newlines inside URLs ("/\t/evil.com" becomes "//evil.com"), so no
        # control, separator or invisible character is allowed at all, spaces included.
        if "\\" in candidate or any(unicodedata.category(ch)[0] in "CZ" for ch in candidate):
            return "/"
        parts = urlsplit(candidate)
        if parts.scheme or parts.netloc:
            return "/"
    return value


# -- Which authorization server an account talks to -------------------------------------------------

OAUTH_SETTING = "oauth"  # accounts.settings["oauth"]: the account's OAuth client and endpoint overrides
_ENDPOINT_KEYS = ("authorize_url", "token_url", "revoke_url", "issuer")
_OAUTH_KEYS = frozenset({"client_id", "client_auth", *_ENDPOINT_KEYS})


@dataclass(frozen=True, slots=True)
class OAuthClientConfig:
    """One account's OAuth client: its id (the secret is the vault field `client_secret`) and endpoints.

    `issuer` is what RFC 9207's `iss` callback parameter must equal (None: the AS does not send one).
    `client_auth` is how the client authenticates at the token and revocation endpoints: "basic"
    (HTTP Basic, RFC 6749 §2.3.1's preferred way) or "body" (client_id/client_secret form fields).
    """

    client_id: str
    authorize_url: str
    token_url: str
    revoke_url: str | None
    issuer: str | None
    client_auth: str = "basic"


def oauth_config(
    provider_id: str,
    defaults: tuple[str, str, str | None] | None,
    settings: Mapping[str, Any] | None,
) -> OAuthClientConfig:
    """The OAuth client of an account: `settings["oauth"]` over the provider's endpoints (`defaults`:
    authorize, token and revocation URLs; None for providers with no built-in endpoints, such as the
    generic HTTP provider). A sandbox account points every URL at the simulator the same way.

    Raises OAuthError naming the missing or wrong setting.
    """
    raw = (settings or {}).get(OAUTH_SETTING) or {}
    if not isinstance(raw, Mapping):
        raise OAuthError('the account setting "oauth" must be an object, e.g. {"client_id": "..."}')
    unknown = sorted(set(raw) - _OAUTH_KEYS)
    if unknown:
        raise OAuthError(
            f'unknown key(s) {", ".join(unknown)} in the account setting "oauth"; '
            f"allowed: {', '.join(sorted(_OAUTH_KEYS))}"
        )
    for key, value in raw.items():
        if value is not None and not isinstance(value, str):
            raise OAuthError(f'the account setting "oauth.{key}" must be a string')
    authorize, token, revoke = defaults or (None, None, None)
    authorize = raw.get("authorize_url") or authorize
    token = raw.get("token_url") or token
    revoke = raw.get("revoke_url") or revoke
    client_id = raw.get("client_id")
    if not client_id:
        raise OAuthError(
            f'a {provider_id} OAuth account needs its app\'s client id: set "oauth": {{"client_id": "..."}} '
            "in the account settings (the client secret goes to the vault, never to settings)"
        )
    if not authorize or not token:
        raise OAuthError(
            f'{provider_id} has no built-in OAuth endpoints: set "oauth.authorize_url" and "oauth.token_url"'
        )
    client_auth = raw.get("client_auth") or "basic"
    if client_auth not in ("basic", "body"):
        raise OAuthError('"oauth.client_auth" must be "basic" or "body"')
    for key, url in (("authorize_url", authorize), ("token_url", token), ("revoke_url", revoke)):
        if url is not None:
            _check_endpoint(key, url)
    return OAuthClientConfig(client_id, authorize, token, revoke, raw.get("issuer"), client_auth)


def _check_endpoint(key: str, url: str) -> None:
    parts = urlsplit(url)
    local = parts.hostname in ("127.0.0.1", "localhost", "::1")
    if parts.scheme != "https" and not (parts.scheme == "http" and local):
        raise OAuthError(f'"oauth.{key}" must be an https URL (http only on 127.0.0.1), not {url!r}')


# -- What a token endpoint answered --------------------------------------------------------------------


class RefusalKind(StrEnum):
    INVALID_GRANT = "invalid_grant"  # the grant is dead (or was rotated by someone else: re-read first)
    TRANSIENT = "transient"  # 5xx, 429, timeouts, network: keep the grant, back off, try again
    CLIENT = "client"  # invalid_client, unauthorized_client, invalid_scope...: fix the app's settings


@dataclass(frozen=True, slots=True)
class TokenGrant:
    access_token: str
    refresh_token: str | None  # None: the AS did not rotate it (keep the stored one)
    expires_at: datetime | None  # None: no expiry given (only a 401 triggers a refresh)
    scopes: tuple[str, ...] | None  # None: the AS did not say (keep what was requested)


@dataclass(frozen=True, slots=True)
class TokenRefusal:
    kind: RefusalKind
    code: str  # the AS's error code, or "http_<status>" / "malformed"
    message: str  # safe to show: built from the error code and description, never a token


_GRANT_LOST = frozenset({"invalid_grant", "invalid_refresh_token", "token_revoked", "token_expired"})
_TRANSIENT_CODES = frozenset({"temporarily_unavailable", "server_error", "slow_down", "ratelimited"})


def parse_token_response(status: int, body: Any, now: datetime) -> TokenGrant | TokenRefusal:
    """A token endpoint's answer (RFC 6749 §5.1/§5.2; Slack's 200 `{"ok": false}` too) as a grant or a
    refusal. Callers must not show `body` itself: it may hold tokens."""
    if status in (408, 425, 429) or status >= 500:
        return TokenRefusal(RefusalKind.TRANSIENT, f"http_{status}", f"the token endpoint answered {status}")
    if not isinstance(body, Mapping):
        kind = RefusalKind.TRANSIENT if status < 400 else RefusalKind.CLIENT
        return TokenRefusal(kind, "malformed", f"the token endpoint answered {status} without a JSON object")
    error = body.get("error")
    if status >= 400 or error is not None or body.get("ok") is False:
        code = error if isinstance(error, str) and error else f"http_{status}"
        described = body.get("error_description")
        detail = f": {described[:200]}" if isinstance(described, str) and described else ""
        if code in _GRANT_LOST:
            kind = RefusalKind.INVALID_GRANT
        elif code in _TRANSIENT_CODES:
            kind = RefusalKind.TRANSIENT
        else:
            kind = RefusalKind.CLIENT
        return TokenRefusal(kind, code, f"the authorization server refused: {code}{detail}")
    access = body.get("access_token")
    token_type = body.get("token_type")
    if not isinstance(access, str) or not access:
        return TokenRefusal(RefusalKind.TRANSIENT, "malformed", "the token answer has no access_token")
    if isinstance(token_type, str) and token_type.lower() not in ("bearer", "user", "bot"):
        return TokenRefusal(RefusalKind.CLIENT, "token_type", f"unsupported token type {token_type!r}")
    refresh = body.get("refresh_token")
    scope = body.get("scope")
    scopes = tuple(s for s in scope.replace(",", " ").split() if s) if isinstance(scope, str) else None
    return TokenGrant(
        access,
        refresh if isinstance(refresh, str) and refresh else None,
        expiry_from(now, body.get("expires_in")),
        scopes,
    )


# -- What a connection asks for ---------------------------------------------------------------------

# Scopes the grant itself needs, whatever the capabilities: X hands out a refresh token only with
# `offline.access` (without it the account would die when its 2-hour access token expires).
_GRANT_SCOPES: Mapping[str, tuple[str, ...]] = {"x": ("offline.access",)}
# RFC 6749 §3.3 separates scopes with spaces; Slack's authorize endpoint wants commas.
_SCOPE_SEPARATORS: Mapping[str, str] = {"slack": ","}


def requested_scopes(registry: Registry, provider_id: str, extra: Iterable[str] = ()) -> tuple[str, ...]:
    """The scopes a connection of `provider_id` asks for: every scope its executable capabilities in
    `registry` need, the scopes its grant needs, and `extra` (what a person asked for, e.g. for the
    generic HTTP provider). Sorted, without duplicates, so the set is stable and reviewable (OA-14)."""
    wanted = set(_GRANT_SCOPES.get(provider_id, ()))
    for capability in registry.capabilities.values():
        if capability.provider == provider_id:
            wanted.update(capability.scopes)
    for scope in extra:
        if not scope or any(ch.isspace() or ch in ',"\\' for ch in scope):
            raise OAuthError(f"scope {scope!r}: a scope is one word without spaces, commas or quotes")
        wanted.add(scope)
    return tuple(sorted(wanted))


def scope_separator(provider_id: str) -> str:
    return _SCOPE_SEPARATORS.get(provider_id, " ")


def authorization_server_id(config: OAuthClientConfig) -> str:
    """Which authorization server a flow talks to: its RFC 9207 issuer when it has one, else its
    authorization endpoint. A callback is completed only against the server its flow started with."""
    return config.issuer or config.authorize_url


# -- Is this authorization response ours? (reliability.md OA-09, OA-10) ------------------------------

FLOW_TTL = timedelta(minutes=10)


@dataclass(frozen=True, slots=True)
class StoredFlow:
    """What was stored when the flow started (oauth_flows and its account)."""

    provider: str
    server_id: str  # authorization_server_id of the config the flow started with
    expects_iss: bool  # the server sends RFC 9207's `iss`, so a response must carry the right one
    redirect_uri: str
    session_hash: str | None  # sha256 of the session that started it; None: a row older than 0008
    expires_at: datetime
    used: bool
    account_status: str


@dataclass(frozen=True, slots=True)
class Callback:
    """The authorization response as it arrived, and where (RFC 6749 §4.1.2, RFC 9207)."""

    state: str | None
    code: str | None
    iss: str | None
    error: str | None
    error_description: str | None
    provider: str  # whose callback received it
    redirect_uri: str  # the redirect URI it arrived at
    session_hash: str  # sha256 of the session (browser session, CLI process) that delivered it
    server_id: str  # authorization_server_id of the account's config now


@dataclass(frozen=True, slots=True)
class CallbackRefusal:
    code: str
    message: str  # safe to show: never the code, the state or a token


def session_hash(session: str) -> str:
    if len(session) < MIN_STATE_CHARS:
        raise OAuthError(f"a session binding needs at least {MIN_STATE_CHARS} random characters")
    return hashlib.sha256(session.encode("utf-8")).hexdigest()


def callback_refusal(flow: StoredFlow | None, callback: Callback, now: datetime) -> CallbackRefusal | None:
    """Why an authorization response must not be exchanged, or None when it may be. Every check runs
    before any token request; the caller marks the flow used whatever the answer (state is single-use).
    """
    again = "start connecting again"
    if not callback.state:
        return CallbackRefusal("missing_state", f"the authorization response carries no state; {again}")
    if flow is None:
        return CallbackRefusal(
            "unknown_state",
            f"the authorization response matches no connection in progress (unknown or replayed); {again}",
        )
    if flow.used:
        return CallbackRefusal("state_used", f"this authorization response was already used; {again}")
    if now > flow.expires_at:
        minutes = int(FLOW_TTL.total_seconds() // 60)
        return CallbackRefusal(
            "expired", f"the connection was started more than {minutes} minutes ago; {again}"
        )
    if flow.session_hash is None or not hmac.compare_digest(flow.session_hash, callback.session_hash):
        return CallbackRefusal(
            "other_session", f"the connection was started in another session (browser or process); {again}"
        )
    if callback.provider != flow.provider or callback.redirect_uri != flow.redirect_uri:
        return CallbackRefusal(
            "mix_up",
            f"the authorization response arrived for {callback.provider} at {callback.redirect_uri}, but "
            f"the connection was started with {flow.provider} at {flow.redirect_uri}; {again}",
        )
    if callback.server_id != flow.server_id:
        return CallbackRefusal(
            "server_changed",
            f"the account's authorization server changed since the connection started; {again}",
        )
    if flow.expects_iss and callback.iss != flow.server_id:
        said = "no issuer" if callback.iss is None else f"issuer {callback.iss[:200]!r}"
        return CallbackRefusal(
            "issuer_mismatch",
            f"the authorization response names {said}, not {flow.server_id!r} that the connection was "
            f"started with (a mix-up attack or a misconfigured issuer); {again}",
        )
    if flow.account_status == "connected":
        return CallbackRefusal(
            "already_connected", "the account was connected meanwhile (by another connection attempt)"
        )
    if callback.error is not None:
        code = callback.error if _ERROR_CODE.fullmatch(callback.error) else "authorization_error"
        what = "the person declined access" if code == "access_denied" else "the authorization failed"
        description = "".join(ch for ch in callback.error_description or "" if ch.isprintable())[:200]
        described = f" ({description})" if description else ""
        return CallbackRefusal(
            code, f"{what}: the authorization server answered error={code}{described}; {again} and approve"
        )
    if not callback.code:
        return CallbackRefusal("missing_code", f"the authorization response carries no code; {again}")
    return None


# -- Revoking a grant (RFC 7009) --------------------------------------------------------------------

REVOCATION_MAX_ATTEMPTS = 12
_REVOCATION_FIRST_DELAY = timedelta(minutes=1)
_REVOCATION_MAX_DELAY = timedelta(hours=6)
# Slack's auth.revoke answers 200 {"ok": false} when the token is dead already: revoked all the same.
_DEAD_TOKEN = frozenset({"invalid_auth", "token_revoked", "token_expired", "not_authed", "account_inactive"})


_ERROR_CODE = re.compile(r"[A-Za-z0-9_.\-]{1,64}")


class RevocationVerdict(StrEnum):
    DONE = "done"  # revoked, or the server says the token is not valid anyway
    RETRY = "retry"  # the endpoint is down or throttled: try again later
    FAILED = "failed"  # the server refuses (our client, the token type): retrying will not help


def revocation_verdict(status: int | None, body: Any) -> tuple[RevocationVerdict, str]:
    """What a revocation endpoint's answer means (RFC 7009 §2.2: 200 is success, also for a token the
    server does not know; 503 means try later). `status` None: no answer (network, timeout)."""
    if status is None:
        return RevocationVerdict.RETRY, "the revocation endpoint did not answer"
    if status in (408, 425, 429) or status >= 500:
        return RevocationVerdict.RETRY, f"the revocation endpoint answered {status}"
    error = body.get("error") if isinstance(body, Mapping) else None
    # Only a word-like code is repeated: whatever else a server put there is not shown (it could echo).
    code = error if isinstance(error, str) and _ERROR_CODE.fullmatch(error) else f"http_{status}"
    if 200 <= status < 300:
        if isinstance(body, Mapping) and body.get("ok") is False and code not in _DEAD_TOKEN:
            return RevocationVerdict.FAILED, f"the revocation endpoint refused: {code}"
        return RevocationVerdict.DONE, "revoked"
    if code in ("invalid_token", *_DEAD_TOKEN):
        return RevocationVerdict.DONE, "the server no longer knows the token"
    return RevocationVerdict.FAILED, f"the revocation endpoint refused ({status}): {code}"


def revocation_retry_at(now: datetime, attempts: int) -> datetime | None:
    """When to try a revocation again after `attempts` failed tries (1 min doubling, at most 6 h), or
    None once REVOCATION_MAX_ATTEMPTS is reached (about 20 hours of trying)."""
    if attempts >= REVOCATION_MAX_ATTEMPTS:
        return None
    delay = min(_REVOCATION_FIRST_DELAY * (1 << max(attempts - 1, 0)), _REVOCATION_MAX_DELAY)
    return now + delay
