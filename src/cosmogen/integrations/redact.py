"""Redaction of secrets in requests before they are stored, logged or shown (e.g. a dry run's payload)."""

from __future__ import annotations

import base64
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

MASK = "***"
SCRUBBED = "****"
_MIN_SCRUBBED = 4  # shorter values would mask ordinary text
_SECRET_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key", "api-key", "x-auth-token"}
)
_SECRET_WORDS = ("token", "secret", "password", "passwd", "apikey", "api_key", "api-key", "signature", "auth")


def is_secret_name(name: str) -> bool:
    lowered = name.lower()
    return lowered in _SECRET_HEADERS or any(word in lowered for word in _SECRET_WORDS)


def redact_headers(headers: dict[str, str]) -> dict[str, str]:
    return {k: (MASK if is_secret_name(k) else v) for k, v in headers.items()}


def redact_url(url: str) -> str:
    """Mask secret-looking query parameters (`access_token=***`) and any user:password part."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return MASK
    netloc = parts.netloc.rsplit("@", 1)[-1]
    query = urlencode(
        [(k, MASK if is_secret_name(k) else v) for k, v in parse_qsl(parts.query, keep_blank_values=True)],
        safe="*",
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def redact_body(body: Any) -> Any:
    if isinstance(body, dict):
        return {k: (MASK if is_secret_name(str(k)) else redact_body(v)) for k, v in body.items()}
    if isinstance(body, list):
        return [redact_body(v) for v in body]
    return body


def sent_forms(value: str) -> set[str]:
    """The forms a secret travels in (raw, percent-encoded, base64 and base64url with and without
    padding), so an answer that echoes what we sent is scrubbed whichever form it echoes."""
    raw = value.encode()
    forms = {value, quote(value, safe=""), quote(value)}
    for encoded in (base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode()):
        forms.update({encoded, encoded.rstrip("=")})
    return {f for f in forms if len(f) >= _MIN_SCRUBBED}


def scrub_values(text: str, values: Iterable[str]) -> str:
    """`text` with every form of every value (see `sent_forms`) replaced by a mask, longest first so a
    shorter form inside a longer one cannot leave a piece behind."""
    forms = sorted(
        {f for v in values if len(v) >= _MIN_SCRUBBED for f in sent_forms(v)}, key=len, reverse=True
    )
    for form in forms:
        text = text.replace(form, SCRUBBED)
    return text
