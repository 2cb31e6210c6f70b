"""Passwords: the policy a new one must meet, and argon2id hashing (argon2-cffi).

Policy (ASVS 6.2, NIST 800-63B): 8 to 128 characters, every character counts (no truncation: argon2
hashes the whole string, unlike bcrypt's 72 bytes), no composition rules, and not one of the most common
passwords. The list (common_passwords.txt) is the zxcvbn project's top 10,000 passwords (MIT licence,
zxcvbn 4.5.0 frequency_lists) keeping those of 8 characters or more: the shorter ones fail the length
rule anyway.

Hashing: argon2id with t=2, m=19 MiB, p=1 (the OWASP and ASVS floor "t=2, m >= 19 MiB"). A stored hash
with weaker parameters is upgraded at the next successful login (`needs_rehash`). Verification compares
in constant time inside the library.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib.resources import files

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

MIN_CHARS = 8
MAX_CHARS = 128


class PasswordRejected(ValueError):
    """A new password that does not meet the policy; the message says which rule and what to do."""


@cache
def common_passwords() -> frozenset[str]:
    text = files("cosmogen.identity").joinpath("common_passwords.txt").read_text(encoding="utf-8")
    return frozenset(line for line in text.splitlines() if line)


def check_policy(password: str, *, email: str | None = None) -> None:
    """Raise PasswordRejected if `password` may not be used as a new password."""
    if len(password) < MIN_CHARS:
        raise PasswordRejected(f"the password is too short: use at least {MIN_CHARS} characters")
    if len(password) > MAX_CHARS:
        raise PasswordRejected(f"the password is too long: use at most {MAX_CHARS} characters")
    lowered = password.lower()
    if lowered in common_passwords():
        raise PasswordRejected(
            "this password is one of the most common ones; choose another (a passphrase works)"
        )
    if email and lowered == email.strip().lower():
        raise PasswordRejected("the password may not be the email address; choose another")


@dataclass(frozen=True, slots=True)
class HashParams:
    time_cost: int = 2
    memory_kib: int = 19 * 1024
    parallelism: int = 1


class Passwords:
    """Hashes and verifies with one set of parameters (built once, handed to who needs it)."""

    def __init__(self, params: HashParams = HashParams()) -> None:
        self._hasher = PasswordHasher(
            time_cost=params.time_cost,
            memory_cost=params.memory_kib,
            parallelism=params.parallelism,
            type=Type.ID,
        )
        # Verified against when the account does not exist, so an unknown email costs the same time.
        self._dummy = self._hasher.hash("cosmogen-no-such-user")

    def hash(self, password: str) -> str:
        return self._hasher.hash(password)

    def verify(self, stored: str | None, password: str) -> bool:
        """True when `password` matches `stored`; with no stored hash, a dummy is verified (same cost)."""
        try:
            return self._hasher.verify(stored or self._dummy, password) and stored is not None
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, stored: str) -> bool:
        return self._hasher.check_needs_rehash(stored)
