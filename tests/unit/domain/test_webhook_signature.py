"""The signature scheme of signed webhooks (API-13), without I/O: header parsing, the 300 s window on both
sides, several secrets and several signatures, and errors that say what is wrong without echoing it."""

from __future__ import annotations

import ast
import hashlib
import hmac
import inspect

import pytest

from cosmogen.domain import webhook_signature as sig

SECRET = b"whsec_unit-test-secret-0123456789abcdefghijk"
OTHER = b"whsec_another-secret-ZYXWVUTSRQPONMLKJIHGFED"
BODY = b'{"order": 42}'
T = 1_900_000_000


def test_the_signature_is_hmac_sha256_of_timestamp_dot_body_in_hex() -> None:
    expected = hmac.new(SECRET, b"1900000000." + BODY, hashlib.sha256).hexdigest()
    assert sig.compute(SECRET, T, BODY) == expected
    assert sig.header_value([SECRET], T, BODY) == f"t={T},v1={expected}"
    assert sig.verify(f"t={T},v1={expected}", BODY, [SECRET], now=T) == T


@pytest.mark.parametrize(("age", "ok"), [(0, True), (300, True), (-300, True), (301, False), (-301, False)])
def test_the_window_is_300_seconds_either_side(age: int, ok: bool) -> None:
    header = sig.header_value([SECRET], T - age, BODY)
    if ok:
        assert sig.verify(header, BODY, [SECRET], now=T) == T - age
        return
    with pytest.raises(sig.SignatureRejected) as caught:
        sig.verify(header, BODY, [SECRET], now=T)
    assert caught.value.code == "signature_expired"
    side = "old" if age > 0 else "in the future"
    assert f"301 s {side}" in caught.value.message
    assert "within 300 s" in caught.value.message


def test_any_valid_secret_and_any_of_several_signatures_is_enough() -> None:
    both = sig.header_value([OTHER, SECRET], T, BODY)
    assert sig.verify(both, BODY, [SECRET], now=T) == T  # the sender holds two secrets while it rotates
    assert sig.verify(sig.header_value([SECRET], T, BODY), BODY, [OTHER, SECRET], now=T) == T
    upper = f"t={T},v1={sig.compute(SECRET, T, BODY).upper()}"
    assert sig.verify(upper, BODY, [SECRET], now=T) == T
    ignored = f"t={T},v0=whatever,v1={sig.compute(SECRET, T, BODY)}"  # unknown schemes are skipped
    assert sig.verify(ignored, BODY, [SECRET], now=T) == T


@pytest.mark.parametrize(
    ("header", "body", "secrets", "code", "phrase"),
    [
        (None, BODY, [SECRET], "signature_missing", "requires a signature"),
        ("   ", BODY, [SECRET], "signature_missing", "requires a signature"),
        ("garbage", BODY, [SECRET], "signature_malformed", "items are name=value"),
        (f"v1={'0' * 64}", BODY, [SECRET], "signature_malformed", "no t=<Unix time>"),
        (f"t={T}", BODY, [SECRET], "signature_malformed", "no v1=<signature>"),
        (f"t={T},v0={'0' * 64}", BODY, [SECRET], "signature_malformed", "no v1=<signature>"),
        (f"t=-5,v1={'0' * 64}", BODY, [SECRET], "signature_malformed", "exactly one t="),
        (f"t={T},t={T},v1={'0' * 64}", BODY, [SECRET], "signature_malformed", "exactly one t="),
        (f"t={T},v1=abc", BODY, [SECRET], "signature_malformed", "64 hexadecimal digits"),
        ("t=1," + "v1=x," * 500, BODY, [SECRET], "signature_malformed", "longer than 2048"),
        (sig.header_value([OTHER], T, BODY), BODY, [SECRET], "signature_invalid", "does not match"),
        (sig.header_value([SECRET], T, BODY), BODY + b" ", [SECRET], "signature_invalid", "exact bytes"),
        (
            sig.header_value([SECRET], T - 1, BODY).replace(str(T - 1), str(T)),
            BODY,
            [SECRET],
            "signature_invalid",
            "",
        ),
        (sig.header_value([SECRET], T, BODY), BODY, [], "signature_invalid", "does not match"),
    ],
)
def test_each_rejection_says_what_is_wrong(
    header: str | None, body: bytes, secrets: list[bytes], code: str, phrase: str
) -> None:
    with pytest.raises(sig.SignatureRejected) as caught:
        sig.verify(header, body, secrets, now=T)
    assert caught.value.code == code
    assert phrase in caught.value.message
    # Nothing to learn from it: not the secret, not the signature we expected.
    for secret in (SECRET, *secrets):
        assert secret.decode() not in caught.value.message
        assert sig.compute(secret, T, body) not in caught.value.message


def test_signatures_are_compared_with_compare_digest_only() -> None:
    """API-13 asks for `compare_digest`: the comparison in `verify` is that call, and no `==` or `!=` in
    the module touches a signature."""
    tree = ast.parse(inspect.getsource(sig))
    calls = {ast.unparse(node.func) for node in ast.walk(tree) if isinstance(node, ast.Call)}
    assert "hmac.compare_digest" in calls
    verify = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "verify")
    compares = [ast.unparse(n) for n in ast.walk(verify) if isinstance(n, ast.Compare)]
    assert compares == [], compares
