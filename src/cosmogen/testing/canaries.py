"""Canary secrets and the search for them (reliability.md Part D.3; SEC-06 and LEAK-01).

A canary is a fresh value shaped like a real secret of one kind (so format-based redaction is exercised
too) around a 16-byte random core. `hits` looks for every canary in raw, hex, base64 and base64url (at
every alignment) and percent-encoded form, and, with `substrings`, for any 12-character piece of it: a
secret cut in half by a log formatter or a truncated error still counts.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Mapping
from urllib.parse import quote_from_bytes

MIN_PIECE = 12  # LEAK-01: any 12-character or longer substring of a canary is a leak


def mint() -> dict[str, str]:
    """One fresh canary per secret type, each with a 16-byte random core."""

    def core() -> str:
        return secrets.token_hex(16)

    return {
        "openai": f"sk-proj-{core()}",
        "anthropic": f"sk-ant-api03-{core()}",
        "slack": f"xoxb-1234-{core()}",
        "x_bearer": f"AAAAAAAAAAAAAAAAAAAAA{core()}",
        "access_token": f"ya29.{core()}",
        "refresh_token": f"1//0g{core()}",
        "client_secret": f"GOCSPX-{core()}",
        "webhook_secret": f"whsec_{core()}",
        "password": f"Pa55 w0rd/{core()}+é",
        "graph_token": f"EAAB{core()}",
        "replaced": f"sk-old-{core()}",
        "deleted": f"sk-gone-{core()}",
        "pkce_verifier": secrets.token_urlsafe(48),
    }


def forms(value: bytes) -> set[bytes]:
    """The encodings to look for. Base64 of a value inside a longer blob depends on its offset modulo 3,
    so each alignment is encoded and the characters shared with its neighbours are dropped."""
    found = {
        value,
        value.hex().encode(),
        value.hex().upper().encode(),
        quote_from_bytes(value, safe="").encode(),
        quote_from_bytes(value).encode(),  # the default leaves "/" as it is: a value holding 0x2F differs
    }
    for shift in range(3):
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            text = encode(b"\0" * shift + value)
            found.add(text[(8 * shift + 5) // 6 : -4])
    return {f for f in found if len(f) >= 16}


def pieces(value: bytes, size: int = MIN_PIECE) -> set[bytes]:
    """Every `size`-byte window of the value that is not made of one repeated byte (the X bearer's run of
    'A's is a prefix shape, not a secret)."""
    return {value[i : i + size] for i in range(len(value) - size + 1) if len(set(value[i : i + size])) > 1}


def hits(blob: bytes, needles: Mapping[str, bytes], *, substrings: bool = False) -> list[str]:
    """Which needles occur in `blob`, in any form; with `substrings`, also any 12-byte piece of a
    needle's raw form. Each hit names the needle and shows at most 12 bytes of what matched."""
    found: list[str] = []
    for name, value in needles.items():
        wanted = forms(value) | (pieces(value) if substrings else set())
        found.extend(f"{name} ({form[:12]!r}...)" for form in wanted if form in blob)
    return found
