"""The OAuth 2.0 client's edges: fresh secrets for a flow. Decisions live in domain/oauth.py; the token
manager (single-flight refresh under a database lease) grows here with the vault and the simulator."""

from __future__ import annotations

import secrets

from cosmogen.domain.oauth import b64url, check_verifier


def new_verifier() -> str:
    """A PKCE code verifier: 48 random bytes (384 bits) as 64 base64url characters."""
    return check_verifier(b64url(secrets.token_bytes(48)))


def new_state() -> str:
    """A single-use `state`: 32 random bytes (256 bits) as 43 base64url characters."""
    return b64url(secrets.token_bytes(32))
