"""The credential vault: AES-256-GCM envelope encryption with key-encryption keys (KEKs) from a keyring.

Every secret field of an account is encrypted under a data key (DEK) of its own, 256 random bits drawn
for that one write; the DEK is stored wrapped (encrypted) under a KEK named by a key id. Both layers are
AES-256-GCM with a 96-bit random nonce, and both bind associated data (AAD) naming the workspace, the
account and the field, so a ciphertext or a wrapped key copied to another row, field or workspace fails
authentication instead of decrypting. Rotation re-wraps DEKs under a new KEK without touching the
ciphertexts (docs/security.md).

Blob layout (both layers): ``version byte | nonce (12) | ciphertext | tag (16)``. The version byte is
part of the AAD; 0x01 is AES-256-GCM, the only format written (SEC-05).

Nonces: a DEK encrypts exactly one plaintext (a new value gets a new DEK), so it never sees a second
nonce. A KEK wraps one DEK per credential write or re-wrap, each under a fresh random 96-bit nonce:
NIST SP 800-38D allows 2^32 random-nonce encryptions per key, far above the writes one deployment makes
between rotations (docs/security.md, "Nonces").

The KEKs themselves come from `KeySource` (a 0600 key file in the data directory, or the environment
variable COSMOGEN_VAULT_KEYS); the database only holds a check value per key (integrations/keystore.py).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import json
import os
import re
import secrets
import stat
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from cosmogen.integrations.secret import Secret

__all__ = [
    "FORMAT_AES256_GCM",
    "KEY_ENV",
    "KEY_FILE_NAME",
    "DecryptionFailed",
    "KeySource",
    "KeyUnavailable",
    "Keyring",
    "KeyringError",
    "Sealed",
    "Secret",
    "UnsupportedFormat",
    "Vault",
    "VaultError",
    "key_check_value",
    "new_key",
]

FORMAT_AES256_GCM = 0x01
KEY_BYTES = 32  # AES-256
NONCE_BYTES = 12  # 96 bits: GCM's native nonce size
TAG_BYTES = 16
HEADER_BYTES = 1 + NONCE_BYTES
KEY_FILE_NAME = "vault.keys"
KEY_ENV = "COSMOGEN_VAULT_KEYS"

_LABEL = b"cosmogen-vault/1"
_PURPOSE_DATA = b"data"  # the secret under its DEK
_PURPOSE_WRAP = b"wrap"  # the DEK under a KEK
_CHECK_LABEL = b"cosmogen-vault/1 key-check"
_KEY_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class VaultError(Exception):
    """Base of the vault's errors. Messages name keys, rows and files; never a secret or a key."""


class DecryptionFailed(VaultError, InvalidTag):
    """Authentication failed: the blob was altered, moved to another row/field/workspace, or the key is
    not the one it was written with. Also an InvalidTag, which is what `cryptography` raises."""


class UnsupportedFormat(VaultError):
    """The blob's version byte is not one this release reads."""


class KeyUnavailable(VaultError):
    """A key id that the keyring lacks, or that was retired."""


class KeyringError(VaultError):
    """The key file or COSMOGEN_VAULT_KEYS is unreadable, malformed or too open; the message says how
    to fix it."""


# --- the envelope (pure apart from the random draws) -----------------------------------------------


def new_key() -> bytes:
    return secrets.token_bytes(KEY_BYTES)


def _frame(*parts: bytes) -> bytes:
    # Length-prefixed, so ("ab", "c") and ("a", "bc") give different associated data.
    return b"".join(len(p).to_bytes(4, "big") + p for p in parts)


def associated_data(
    purpose: bytes, workspace: str, account_id: str, field_name: str, key_id: str = ""
) -> bytes:
    return _frame(
        _LABEL, purpose, workspace.encode(), account_id.encode(), field_name.encode(), key_id.encode()
    )


def seal(key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """version | nonce | AES-256-GCM(plaintext) | tag, with the version byte authenticated too."""
    header = bytes([FORMAT_AES256_GCM])
    nonce = os.urandom(NONCE_BYTES)  # random per encryption; see the module docstring on limits
    return header + nonce + AESGCM(key).encrypt(nonce, plaintext, header + aad)


def unseal(key: bytes, blob: bytes, aad: bytes) -> bytes:
    if len(blob) < HEADER_BYTES + TAG_BYTES:
        raise DecryptionFailed(
            f"a sealed value has at least {HEADER_BYTES + TAG_BYTES} bytes, not {len(blob)}"
        )
    if blob[0] != FORMAT_AES256_GCM:
        raise UnsupportedFormat(
            f"sealed value of format {blob[0]:#04x}; "
            f"this release reads {FORMAT_AES256_GCM:#04x} (AES-256-GCM)"
        )
    try:
        return AESGCM(key).decrypt(blob[1:HEADER_BYTES], blob[HEADER_BYTES:], blob[:1] + aad)
    except InvalidTag:
        raise DecryptionFailed(
            "authentication failed: the value was altered, moved from another row, field or workspace, "
            "or wrapped under a different key"
        ) from None


def key_check_value(key_id: str, key: bytes) -> bytes:
    """What the database keeps to recognise a key: a MAC under the key itself, which reveals nothing
    about it, and differs for every other key."""
    return hmac.new(key, _frame(_CHECK_LABEL, key_id.encode()), hashlib.sha256).digest()


class Sealed(NamedTuple):
    ciphertext: bytes
    wrapped_key: bytes
    key_id: str


# --- keyrings ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Keyring:
    """Key ids to 32-byte KEKs, and which one is `active` (the one the next rotation makes current)."""

    active: str
    keys: Mapping[str, bytes] = field(repr=False)

    def __post_init__(self) -> None:
        if self.active not in self.keys:
            raise KeyringError(f"the active key {self.active!r} is not among the keys")
        for key_id, key in self.keys.items():
            if not _KEY_ID.fullmatch(key_id):
                raise KeyringError(f"key id {key_id!r}: use 1-64 letters, digits, '.', '_' or '-'")
            if len(key) != KEY_BYTES:
                raise KeyringError(f"key {key_id!r} has {len(key)} bytes; AES-256 needs {KEY_BYTES}")

    def __repr__(self) -> str:
        return f"Keyring(active={self.active!r}, key_ids={sorted(self.keys)!r})"

    @classmethod
    def parse(cls, text: str, where: str) -> Keyring:
        """`{"active": "<kid>", "keys": {"<kid>": "<base64 of 32 bytes>"}}`; errors name `where`, never a
        value."""
        try:
            raw = json.loads(text)
        except ValueError:
            raise KeyringError(
                f'{where} is not JSON; expected {{"active": "<key id>", "keys": {{"<key id>": "<base64>"}}}}'
            ) from None
        if not isinstance(raw, dict) or not isinstance(raw.get("keys"), dict) or not raw["keys"]:
            raise KeyringError(f'{where} needs a non-empty "keys" object of key id -> base64 key')
        active = raw.get("active")
        if not isinstance(active, str):
            raise KeyringError(f'{where} needs "active": the id of one of its keys')
        keys: dict[str, bytes] = {}
        for key_id, encoded in raw["keys"].items():
            try:
                keys[key_id] = base64.b64decode(str(encoded), validate=True)
            except (binascii.Error, ValueError):
                raise KeyringError(f"{where}: key {key_id!r} is not valid base64") from None
        try:
            return cls(active, keys)
        except KeyringError as exc:
            raise KeyringError(f"{where}: {exc}") from None

    def dumps(self) -> str:
        keys = {k: base64.b64encode(v).decode() for k, v in sorted(self.keys.items())}
        return json.dumps({"active": self.active, "keys": keys}, indent=2) + "\n"

    def with_key(self, key_id: str, key: bytes) -> Keyring:
        """This keyring plus `key_id`, made active."""
        if key_id in self.keys and not hmac.compare_digest(self.keys[key_id], key):
            raise KeyringError(f"key id {key_id!r} is already in the keyring with other key material")
        return Keyring(key_id, {**self.keys, key_id: key})

    def without(self, key_id: str) -> Keyring:
        if key_id == self.active:
            raise KeyringError(f"{key_id!r} is the active key; it cannot be removed")
        return Keyring(self.active, {k: v for k, v in self.keys.items() if k != key_id})


@dataclass(frozen=True)
class KeySource:
    """Where the keyring comes from: COSMOGEN_VAULT_KEYS when set (it wins), else `file`."""

    file: Path
    env: Secret | None = None

    @classmethod
    def for_data_dir(cls, data_dir: Path, env: Secret | None = None) -> KeySource:
        return cls(Path(data_dir) / KEY_FILE_NAME, env)

    @property
    def from_env(self) -> bool:
        return self.env is not None

    def describe(self) -> str:
        return KEY_ENV if self.env is not None else str(self.file)

    def load(self) -> Keyring | None:
        """The keyring, or None when there is none yet (no variable and no file)."""
        if self.env is not None:
            return Keyring.parse(self.env.reveal(), KEY_ENV)
        try:
            fd = os.open(self.file, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise KeyringError(f"cannot open the key file {self.file}: {exc.strerror}") from None
        with os.fdopen(fd, "r", encoding="utf-8") as handle:
            info = os.fstat(handle.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise KeyringError(f"the key file {self.file} is not a regular file")
            if info.st_mode & 0o077:
                raise KeyringError(
                    f"the key file {self.file} can be read or written by other users "
                    f"(mode {stat.S_IMODE(info.st_mode):04o}); run `chmod 600 {self.file}`, "
                    "and rotate the keys if someone else may have read it"
                )
            text = handle.read()
        return Keyring.parse(text, str(self.file))

    def create(self, keyring: Keyring) -> None:
        """Write the first key file; refuses if one exists (never overwrite keys by accident)."""
        self._refuse_env("create a key file")
        self.file.parent.mkdir(parents=True, exist_ok=True)
        # Written in full under a temporary name, then linked into place: a process killed half-way
        # leaves no key file rather than a truncated one, and link() fails if a key file appeared.
        tmp = self._write_tmp(keyring)
        try:
            os.link(tmp, self.file)
        except FileExistsError:
            raise KeyringError(f"the key file {self.file} already exists; it was not replaced") from None
        finally:
            tmp.unlink()
        _fsync_dir(self.file.parent)

    def replace(self, keyring: Keyring) -> None:
        """Rewrite the key file atomically: a temporary 0600 file, fsynced, renamed over the old one, then
        the directory fsynced. A crash leaves the old file or the new one, never a mix."""
        self._refuse_env("rewrite the keyring")
        tmp = self._write_tmp(keyring)
        try:
            os.replace(tmp, self.file)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        _fsync_dir(self.file.parent)

    def _write_tmp(self, keyring: Keyring) -> Path:
        tmp = self.file.with_name(f".{self.file.name}.{secrets.token_hex(4)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                os.fchmod(handle.fileno(), 0o600)  # whatever the umask said
                handle.write(keyring.dumps())
                handle.flush()
                os.fsync(handle.fileno())
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        return tmp

    def _refuse_env(self, what: str) -> None:
        if self.env is not None:
            raise KeyringError(
                f"the keys come from {KEY_ENV}, which cosmogen cannot change: {what} there yourself "
                "(docs/security.md, 'Keys in the environment')"
            )


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- the vault -----------------------------------------------------------------------------------


class Vault:
    """Encrypts and decrypts secret fields. Built once by a composition root (keystore.open_vault);
    thread-safe. `current_key_id` wraps new data keys; any key of the keyring unwraps.

    A key id the keyring lacks makes the vault re-read its key file once (another process, `cosmogen
    keys rotate`, may have added a key while this one runs); keys it already holds must not change.
    """

    def __init__(
        self,
        keyring: Keyring,
        *,
        current_key_id: str | None = None,
        source: KeySource | None = None,
        retired: frozenset[str] = frozenset(),
    ) -> None:
        self._lock = threading.Lock()
        self._keys: dict[str, bytes] = dict(keyring.keys)
        self._source = source
        self._retired = set(retired)
        self._verified: set[str] = set()
        current = current_key_id or keyring.active
        if current not in self._keys:
            raise KeyUnavailable(f"the current key {current!r} is not in the keyring")
        self._current = current

    def __repr__(self) -> str:
        return f"Vault(current_key_id={self._current!r}, key_ids={sorted(self._keys)!r})"

    @property
    def current_key_id(self) -> str:
        return self._current

    @property
    def key_ids(self) -> frozenset[str]:
        with self._lock:
            return frozenset(self._keys)

    # -- encryption --

    def encrypt(self, workspace: str, account_id: str, field_name: str, secret: Secret) -> Sealed:
        return self.encrypt_bytes(workspace, account_id, field_name, secret.reveal().encode("utf-8"))

    def decrypt(
        self,
        workspace: str,
        account_id: str,
        field_name: str,
        ciphertext: bytes,
        wrapped_key: bytes,
        key_id: str,
    ) -> Secret:
        plaintext = self.decrypt_bytes(workspace, account_id, field_name, ciphertext, wrapped_key, key_id)
        try:
            return Secret(plaintext.decode("utf-8"))
        except UnicodeDecodeError:
            raise DecryptionFailed("the decrypted value is not UTF-8 text") from None

    def encrypt_bytes(self, workspace: str, account_id: str, field_name: str, plaintext: bytes) -> Sealed:
        key_id = self._current
        kek = self._key(key_id)
        dek = new_key()  # one data key per value: it never encrypts anything else
        ciphertext = seal(dek, plaintext, associated_data(_PURPOSE_DATA, workspace, account_id, field_name))
        wrapped = seal(kek, dek, associated_data(_PURPOSE_WRAP, workspace, account_id, field_name, key_id))
        return Sealed(ciphertext, wrapped, key_id)

    def decrypt_bytes(
        self,
        workspace: str,
        account_id: str,
        field_name: str,
        ciphertext: bytes,
        wrapped_key: bytes,
        key_id: str,
    ) -> bytes:
        dek = self._unwrap(workspace, account_id, field_name, wrapped_key, key_id)
        return unseal(dek, ciphertext, associated_data(_PURPOSE_DATA, workspace, account_id, field_name))

    def rewrap(
        self,
        workspace: str,
        account_id: str,
        field_name: str,
        wrapped_key: bytes,
        key_id: str,
        to_key_id: str,
    ) -> bytes:
        """The same data key wrapped under `to_key_id` (rotation); the ciphertext stays as it is."""
        dek = self._unwrap(workspace, account_id, field_name, wrapped_key, key_id)
        kek = self._key(to_key_id)
        return seal(kek, dek, associated_data(_PURPOSE_WRAP, workspace, account_id, field_name, to_key_id))

    def _unwrap(
        self, workspace: str, account_id: str, field_name: str, wrapped_key: bytes, key_id: str
    ) -> bytes:
        kek = self._key(key_id)
        dek = unseal(
            kek, wrapped_key, associated_data(_PURPOSE_WRAP, workspace, account_id, field_name, key_id)
        )
        if len(dek) != KEY_BYTES:
            raise DecryptionFailed(f"the wrapped data key has {len(dek)} bytes, not {KEY_BYTES}")
        return dek

    # -- keys --

    def use(self, key_id: str, check_value: bytes) -> None:
        """Make `key_id` (the database's newest key) the one that wraps new data keys, after checking that
        this keyring's key of that id is the one the database registered."""
        if key_id == self._current and key_id in self._verified:
            return
        self.verify(key_id, check_value)
        with self._lock:
            self._current = key_id

    def verify(self, key_id: str, check_value: bytes) -> None:
        key = self._key(key_id)
        if not hmac.compare_digest(key_check_value(key_id, key), check_value):
            raise KeyUnavailable(
                f"key {key_id!r} in {self._where()} is not the key the database registered under that id "
                "(check value differs); restore the right keyring"
            )
        with self._lock:
            self._verified.add(key_id)

    def retire(self, key_id: str) -> None:
        with self._lock:
            self._retired.add(key_id)

    def check_value(self, key_id: str) -> bytes:
        return key_check_value(key_id, self._key(key_id))

    def _key(self, key_id: str) -> bytes:
        if key_id in self._retired:
            raise KeyUnavailable(f"key {key_id!r} was retired; nothing may be wrapped or unwrapped with it")
        key = self._keys.get(key_id)
        if key is None:
            self._reload()
            key = self._keys.get(key_id)
        if key is None:
            raise KeyUnavailable(
                f"key {key_id!r} is not in {self._where()}; "
                "add it back (from the key file's backup) and restart"
            )
        return key

    def _reload(self) -> None:
        if self._source is None:
            return
        keyring = self._source.load()
        if keyring is None:
            return
        with self._lock:
            for key_id, key in keyring.keys.items():
                known = self._keys.get(key_id)
                if known is None:
                    self._keys[key_id] = key
                elif not hmac.compare_digest(known, key):
                    raise KeyringError(
                        f"key {key_id!r} in {self._where()} changed while this process was running; "
                        "a key id must never be given other key material"
                    )

    def _where(self) -> str:
        return self._source.describe() if self._source is not None else "the keyring"
