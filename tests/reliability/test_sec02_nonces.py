"""SEC-02: nonces are never repeated under one key.

Each data key encrypts one value only, so the load that matters is the key-encryption key's: one wrap
per credential write or re-wrap, each with a fresh 96-bit nonce from os.urandom. 100,000 encryptions
under one key (SEC02_COUNT for the 10M soak) must show no duplicate."""

from __future__ import annotations

import os

from cosmogen.integrations.vault import HEADER_BYTES, Keyring, Vault, new_key, seal

COUNT = int(os.environ.get("SEC02_COUNT", "100000"))


def test_no_duplicate_nonce_under_one_key() -> None:
    key = new_key()
    nonces = {seal(key, b"", b"aad")[1:HEADER_BYTES] for _ in range(COUNT)}
    assert len(nonces) == COUNT


def test_no_duplicate_nonce_across_wraps_under_one_kek() -> None:
    vault = Vault(Keyring("k1", {"k1": new_key()}))
    seen: set[bytes] = set()
    for _ in range(COUNT // 10):
        ciphertext, wrapped, _ = vault.encrypt_bytes("w", "a", "f", b"x")
        seen.add(wrapped[1:HEADER_BYTES])
        seen.add(ciphertext[1:HEADER_BYTES])
    assert len(seen) == 2 * (COUNT // 10)
