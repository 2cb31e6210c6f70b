"""OAuth 2.0 decisions with no I/O, no clock and no randomness (the caller passes `now` and fresh values).

- PKCE (RFC 7636): only S256; the verifier's alphabet and length are checked, the challenge derived.
- When to refresh: a token is refreshed `window` before it expires (5 minutes by default, our rule;
  google-auth uses 3:45, Slack's SDK 2 hours). A token without an expiry is never refreshed ahead:
  only a 401 triggers one refresh and one retry.
- Where to send a person after connecting: only a same-origin relative path, anything else becomes "/"
  (the open-redirect payloads of reliability.md OA-11).
- `state` is stored as its SHA-256 only, so a copy of the database cannot answer a callback.
"""

from __future__ import annotations

import base64
import hashlib
import re
import unicodedata
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import unquote, urlencode, urlsplit

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
