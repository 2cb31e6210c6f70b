"""SEC-05: only AES-256-GCM on the write path: every new ciphertext and wrapped key starts with the
version byte 0x01 and has the GCM layout; nothing in src/ uses Fernet, CBC, ECB or another mode."""

from __future__ import annotations

import ast
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from cosmogen.integrations.vault import (
    FORMAT_AES256_GCM,
    HEADER_BYTES,
    KEY_BYTES,
    NONCE_BYTES,
    TAG_BYTES,
    Keyring,
    Secret,
    Vault,
    associated_data,
    new_key,
)

SRC = Path(__file__).resolve().parents[2] / "src"
# Names whose use would mean a legacy or unauthenticated cipher on the write path.
LEGACY = {"Fernet", "MultiFernet", "CBC", "ECB", "CFB", "OFB", "CTR", "AESCCM", "ChaCha20Poly1305", "AESSIV"}


def test_every_new_ciphertext_carries_the_aes256_gcm_header() -> None:
    key = new_key()
    assert len(key) == KEY_BYTES == 32  # AES-256, not 128
    vault = Vault(Keyring("k1", {"k1": key}))
    for value in ["", "x", "sk-" + "a" * 200]:
        ciphertext, wrapped, _ = vault.encrypt("w", "a", "f", Secret(value))
        for blob, plaintext_size in ((ciphertext, len(value.encode())), (wrapped, KEY_BYTES)):
            assert blob[0] == FORMAT_AES256_GCM == 0x01
            assert len(blob) == 1 + NONCE_BYTES + plaintext_size + TAG_BYTES
        # The wrapped key is GCM under the KEK: opening it with AESGCM directly (header and associated
        # data as the vault builds them) proves the mode, not just the layout.
        aad = bytes([FORMAT_AES256_GCM]) + associated_data(b"wrap", "w", "a", "f", "k1")
        dek = AESGCM(key).decrypt(wrapped[1:HEADER_BYTES], wrapped[HEADER_BYTES:], aad)
        assert len(dek) == KEY_BYTES


def test_no_legacy_cipher_is_imported_or_named_in_src() -> None:
    hits = []
    for path in SRC.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.ImportFrom):
                names = [alias.name for alias in node.names]
                if node.module and "fernet" in node.module:
                    names.append(node.module)
            elif isinstance(node, ast.Attribute):
                names = [node.attr]
            elif isinstance(node, ast.Name):
                names = [node.id]
            hits += [
                f"{path}:{getattr(node, 'lineno', 0)}: {n}" for n in names if n in LEGACY or "fernet" in n
            ]
    assert hits == []
