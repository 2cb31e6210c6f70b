"""Signed webhooks (reliability API-13): the signature header, how it is computed and checked. No I/O, no
clock: the caller passes `now` and the trigger's secrets.

Modelled on Stripe's `Stripe-Signature` and Standard Webhooks:

    X-Cosmogen-Signature: t=1767225600,v1=5257a869e7ecebeda32affa62cdca3fa51cad7e77a0e56ff536d0ce8e108d8bd

- `t` is the Unix time (seconds) the sender signed at; `v1` is the lowercase hex HMAC-SHA256, keyed with the
  signing secret's UTF-8 bytes (the whole `whsec_...` string), of the bytes `"<t>." + raw body`.
- Several `v1=` entries may be sent (a sender holding two secrets while it rotates); one matching any of
  the trigger's valid secrets is enough. Other schemes (`v0=`, a future `v2=`) are ignored.
- A timestamp more than 300 s from the server's clock, in either direction, is refused (Slack's five
  minutes): a captured delivery cannot be replayed later; replays inside the window are caught by the
  delivery key / Idempotency-Key.
- Comparison is `hmac.compare_digest` (constant time), against every secret.

Rejections carry a code and a message that say what is wrong and how to fix it, never which secret was
tried or what signature was expected.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Sequence
from dataclasses import dataclass

SIGNATURE_HEADER = "X-Cosmogen-Signature"
SCHEME = "v1"
TOLERANCE_S = 300
SECRET_PREFIX = "whsec_"  # noqa: S105 (a prefix, not a secret)
MAX_HEADER_CHARS = 2048  # room for a few signatures; a longer header is refused unparsed

_HEX64 = re.compile(r"[0-9a-f]{64}")
_TIMESTAMP = re.compile(r"[0-9]{1,12}")
_HOW = (
    f'send \'{SIGNATURE_HEADER}: t=<unix seconds>,{SCHEME}=<hex HMAC-SHA256 of "<t>.<raw body>" keyed with '
    "the trigger's signing secret>' (docs/launches.md, Signed webhooks)"
)


@dataclass(frozen=True, slots=True)
class SignatureRejected(Exception):
    """The request is not authenticated: answered with 401, `code` and `message`."""

    code: str
    message: str

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True, slots=True)
class ParsedSignature:
    timestamp: int
    signatures: tuple[str, ...]  # the v1 values, lowercase hex


def compute(secret: bytes, timestamp: int, body: bytes) -> str:
    """The v1 signature: hex HMAC-SHA256 of `"<timestamp>." + body` under `secret`."""
    return hmac.new(secret, str(timestamp).encode("ascii") + b"." + body, hashlib.sha256).hexdigest()


def header_value(secrets: Sequence[bytes], timestamp: int, body: bytes) -> str:
    """What a sender puts in X-Cosmogen-Signature: one v1 per secret it holds."""
    return ",".join([f"t={timestamp}", *(f"{SCHEME}={compute(s, timestamp, body)}" for s in secrets)])


def parse(value: str | None) -> ParsedSignature:
    """The header's timestamp and v1 signatures; raises SignatureRejected (missing or malformed)."""
    if value is None or not value.strip():
        raise SignatureRejected("signature_missing", f"this webhook requires a signature: {_HOW}")
    if len(value) > MAX_HEADER_CHARS:
        raise SignatureRejected(
            "signature_malformed",
            f"the {SIGNATURE_HEADER} header is longer than {MAX_HEADER_CHARS} characters; {_HOW}",
        )
    timestamp: int | None = None
    found: list[str] = []
    for item in value.split(","):
        name, sep, part = item.strip().partition("=")
        if not sep:
            raise SignatureRejected(
                "signature_malformed",
                f"the {SIGNATURE_HEADER} header is malformed (items are name=value, separated by commas); "
                f"{_HOW}",
            )
        if name == "t":
            if timestamp is not None or not _TIMESTAMP.fullmatch(part):
                raise SignatureRejected(
                    "signature_malformed",
                    f"the {SIGNATURE_HEADER} header needs exactly one t=<Unix time in whole seconds>; {_HOW}",
                )
            timestamp = int(part)
        elif name == SCHEME:
            signature = part.lower()
            if not _HEX64.fullmatch(signature):
                raise SignatureRejected(
                    "signature_malformed",
                    f"a {SCHEME} signature is 64 hexadecimal digits (HMAC-SHA256); {_HOW}",
                )
            found.append(signature)
    if timestamp is None:
        raise SignatureRejected(
            "signature_malformed", f"the {SIGNATURE_HEADER} header has no t=<Unix time>; {_HOW}"
        )
    if not found:
        raise SignatureRejected(
            "signature_malformed", f"the {SIGNATURE_HEADER} header has no {SCHEME}=<signature>; {_HOW}"
        )
    return ParsedSignature(timestamp, tuple(found))


def check_timestamp(timestamp: int, now: float, tolerance_s: int = TOLERANCE_S) -> None:
    skew = now - timestamp
    if abs(skew) > tolerance_s:
        where = f"{int(skew)} s old" if skew > 0 else f"{int(-skew)} s in the future"
        raise SignatureRejected(
            "signature_expired",
            f"the signature's timestamp is {where}; deliveries must be signed within {tolerance_s} s of "
            "the server's clock: sign each delivery (and each retry) when it is sent, and check the "
            "sender's clock",
        )


def verify(
    header: str | None,
    body: bytes,
    secrets: Sequence[bytes],
    now: float,
    tolerance_s: int = TOLERANCE_S,
) -> int:
    """Accept (returning the signed timestamp) or raise SignatureRejected: missing, malformed, outside
    the window, or no v1 signature matching any of `secrets`."""
    parsed = parse(header)
    check_timestamp(parsed.timestamp, now, tolerance_s)
    matched = False
    for secret in secrets:
        expected = compute(secret, parsed.timestamp, body)
        for given in parsed.signatures:
            # No early exit: every pair is compared, in constant time each.
            matched |= hmac.compare_digest(expected, given)
    if not matched:
        raise SignatureRejected(
            "signature_invalid",
            "the signature does not match this request: sign the exact bytes of the body as sent, "
            "prefixed with '<t>.', with HMAC-SHA256 under the trigger's current signing secret "
            "(`cosmogen launches reveal-webhook-secret TRIGGER_ID` shows it)",
        )
    return parsed.timestamp
