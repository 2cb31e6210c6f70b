"""The vault without a database: envelope, associated data, keyrings, the key file, the pure key rules."""

from __future__ import annotations

import base64
import json
import os
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidTag

from cosmogen.integrations.keystore import (
    KeyRecord,
    NoKeyringYet,
    VaultStartupError,
    assess_startup,
    next_key_id,
    plan_rotation,
)
from cosmogen.integrations.vault import (
    FORMAT_AES256_GCM,
    HEADER_BYTES,
    TAG_BYTES,
    DecryptionFailed,
    Keyring,
    KeyringError,
    KeySource,
    KeyUnavailable,
    Secret,
    UnsupportedFormat,
    Vault,
    key_check_value,
    new_key,
)

NOW = datetime(2026, 11, 29, tzinfo=UTC)


def keyring(*ids: str, active: str | None = None) -> Keyring:
    return Keyring(active or ids[-1], {i: new_key() for i in ids})


def record(ring: Keyring, key_id: str, version: int, *, retired: bool = False) -> KeyRecord:
    return KeyRecord(
        key_id, version, key_check_value(key_id, ring.keys[key_id]), NOW, NOW if retired else None
    )


# --- envelope ------------------------------------------------------------------------------------


def test_round_trip_and_layout() -> None:
    vault = Vault(keyring("k1"))
    sealed = vault.encrypt("w", "acct", "api_key", Secret("sk-test"))
    assert sealed.key_id == "k1"
    assert sealed.ciphertext[0] == FORMAT_AES256_GCM
    assert len(sealed.ciphertext) == HEADER_BYTES + len(b"sk-test") + TAG_BYTES
    assert len(sealed.wrapped_key) == HEADER_BYTES + 32 + TAG_BYTES
    assert b"sk-test" not in sealed.ciphertext
    assert vault.decrypt("w", "acct", "api_key", *sealed).reveal() == "sk-test"


def test_each_value_gets_its_own_data_key_and_nonces() -> None:
    vault = Vault(keyring("k1"))
    a = vault.encrypt("w", "acct", "f", Secret("same"))
    b = vault.encrypt("w", "acct", "f", Secret("same"))
    assert a.ciphertext != b.ciphertext
    assert a.wrapped_key != b.wrapped_key


@pytest.mark.parametrize(
    ("workspace", "account", "field"),
    [("w2", "acct", "api_key"), ("w", "acct2", "api_key"), ("w", "acct", "refresh_token")],
)
def test_a_value_moved_elsewhere_does_not_decrypt(workspace: str, account: str, field: str) -> None:
    vault = Vault(keyring("k1"))
    sealed = vault.encrypt("w", "acct", "api_key", Secret("sk-test"))
    with pytest.raises(DecryptionFailed) as info:
        vault.decrypt(workspace, account, field, *sealed)
    assert isinstance(info.value, InvalidTag)


def test_associated_data_is_length_prefixed() -> None:
    # ("ab", "c") and ("a", "bc") must not be the same binding.
    vault = Vault(keyring("k1"))
    sealed = vault.encrypt("w", "ab", "c", Secret("x"))
    with pytest.raises(DecryptionFailed):
        vault.decrypt("w", "a", "bc", *sealed)


def test_ciphertext_with_another_rows_wrapped_key_fails() -> None:
    vault = Vault(keyring("k1"))
    one = vault.encrypt("w", "acct", "f", Secret("one"))
    two = vault.encrypt("w", "acct", "f", Secret("two"))
    with pytest.raises(DecryptionFailed):
        vault.decrypt("w", "acct", "f", one.ciphertext, two.wrapped_key, "k1")


def test_wrong_key_id_and_unknown_key() -> None:
    ring = keyring("k1", "k2", active="k1")
    vault = Vault(ring)
    sealed = vault.encrypt("w", "a", "f", Secret("v"))
    with pytest.raises(DecryptionFailed):
        vault.decrypt("w", "a", "f", sealed.ciphertext, sealed.wrapped_key, "k2")
    with pytest.raises(KeyUnavailable, match="'k9' is not in"):
        vault.decrypt("w", "a", "f", sealed.ciphertext, sealed.wrapped_key, "k9")


def test_unknown_version_byte_and_short_blobs() -> None:
    vault = Vault(keyring("k1"))
    sealed = vault.encrypt("w", "a", "f", Secret("v"))
    with pytest.raises(UnsupportedFormat, match="0x02"):
        vault.decrypt("w", "a", "f", b"\x02" + sealed.ciphertext[1:], sealed.wrapped_key, "k1")
    with pytest.raises(DecryptionFailed, match="at least"):
        vault.decrypt("w", "a", "f", sealed.ciphertext[:20], sealed.wrapped_key, "k1")


def test_rewrap_changes_only_the_wrapping() -> None:
    vault = Vault(keyring("k1", "k2", active="k1"))
    sealed = vault.encrypt("w", "a", "f", Secret("v"))
    rewrapped = vault.rewrap("w", "a", "f", sealed.wrapped_key, "k1", "k2")
    assert vault.decrypt("w", "a", "f", sealed.ciphertext, rewrapped, "k2").reveal() == "v"
    with pytest.raises(DecryptionFailed):  # the key id is bound into the wrapping
        vault.decrypt("w", "a", "f", sealed.ciphertext, rewrapped, "k1")


def test_retired_keys_are_refused() -> None:
    vault = Vault(keyring("k1", "k2", active="k2"))
    vault.retire("k1")
    with pytest.raises(KeyUnavailable, match="retired"):
        vault.rewrap("w", "a", "f", b"\x01" + bytes(60), "k1", "k2")


def test_use_checks_the_key_against_the_check_value() -> None:
    ring = keyring("k1", "k2", active="k1")
    vault = Vault(ring)
    with pytest.raises(KeyUnavailable, match="check value differs"):
        vault.use("k2", key_check_value("k2", new_key()))
    assert vault.current_key_id == "k1"
    vault.use("k2", key_check_value("k2", ring.keys["k2"]))
    assert vault.encrypt("w", "a", "f", Secret("v")).key_id == "k2"


def test_reprs_show_no_key_material() -> None:
    ring = keyring("k1")
    material = ring.keys["k1"]
    for text in (repr(ring), repr(Vault(ring)), repr(record(ring, "k1", 1))):
        assert material.hex() not in text
        assert base64.b64encode(material).decode() not in text
        assert "k1" in text


# --- keyrings and the key file -------------------------------------------------------------------


def test_keyring_round_trips_through_json() -> None:
    ring = keyring("k1", "k2")
    again = Keyring.parse(ring.dumps(), "test")
    assert again.active == "k2"
    assert dict(again.keys) == dict(ring.keys)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not json", "is not JSON"),
        ("[]", '"keys"'),
        ('{"active": "k1", "keys": {}}', '"keys"'),
        ('{"keys": {"k1": "AAAA"}}', '"active"'),
        ('{"active": "k2", "keys": {"k1": "' + base64.b64encode(bytes(32)).decode() + '"}}', "not among"),
        ('{"active": "k1", "keys": {"k1": "!!!"}}', "not valid base64"),
        ('{"active": "k1", "keys": {"k1": "' + base64.b64encode(bytes(16)).decode() + '"}}', "needs 32"),
        ('{"active": "a b", "keys": {"a b": "' + base64.b64encode(bytes(32)).decode() + '"}}', "key id"),
    ],
)
def test_bad_keyrings_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(KeyringError, match=message) as info:
        Keyring.parse(text, "COSMOGEN_VAULT_KEYS")
    assert "COSMOGEN_VAULT_KEYS" in str(info.value)


def test_keyring_errors_never_echo_key_material() -> None:
    material = base64.b64encode(os.urandom(16)).decode()  # the wrong length: an error that names the key
    with pytest.raises(KeyringError) as info:
        Keyring.parse(json.dumps({"active": "k1", "keys": {"k1": material}}), "where")
    assert material not in str(info.value)


def test_key_file_is_created_0600_and_replaced_atomically(tmp_path: Path) -> None:
    source = KeySource.for_data_dir(tmp_path / "data")
    assert source.load() is None
    ring = keyring("k1")
    source.create(ring)
    assert stat.S_IMODE(source.file.stat().st_mode) == 0o600
    with pytest.raises(KeyringError, match="already exists"):
        source.create(keyring("k1"))
    bigger = ring.with_key("k2", new_key())
    source.replace(bigger)
    assert stat.S_IMODE(source.file.stat().st_mode) == 0o600
    loaded = source.load()
    assert loaded is not None and loaded.active == "k2" and set(loaded.keys) == {"k1", "k2"}
    assert [p.name for p in source.file.parent.iterdir()] == ["vault.keys"]  # no temporary file left


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_a_key_file_others_can_read_is_refused(tmp_path: Path, mode: int) -> None:
    source = KeySource.for_data_dir(tmp_path)
    source.create(keyring("k1"))
    source.file.chmod(mode)
    with pytest.raises(KeyringError, match=r"chmod 600") as info:
        source.load()
    assert f"{mode:04o}" in str(info.value)


def test_the_environment_wins_and_cannot_be_rewritten(tmp_path: Path) -> None:
    file_ring, env_ring = keyring("k1"), keyring("e1")
    KeySource.for_data_dir(tmp_path).create(file_ring)
    source = KeySource.for_data_dir(tmp_path, Secret(env_ring.dumps()))
    loaded = source.load()
    assert loaded is not None and loaded.active == "e1"
    assert source.describe() == "COSMOGEN_VAULT_KEYS"
    with pytest.raises(KeyringError, match="cannot change"):
        source.replace(env_ring)


def test_a_key_id_never_gets_other_material() -> None:
    ring = keyring("k1")
    with pytest.raises(KeyringError, match="other key material"):
        ring.with_key("k1", new_key())
    with pytest.raises(KeyringError, match="active"):
        ring.without("k1")


def test_the_vault_reloads_its_key_file_for_a_new_key(tmp_path: Path) -> None:
    source = KeySource.for_data_dir(tmp_path)
    ring = keyring("k1")
    source.create(ring)
    reader = Vault(ring, source=source)
    writer = Vault(ring)
    bigger = ring.with_key("k2", new_key())
    source.replace(bigger)
    writer_k2 = Vault(bigger)
    sealed = writer_k2.encrypt("w", "a", "f", Secret("after rotation"))
    assert sealed.key_id == "k2"
    assert reader.decrypt("w", "a", "f", *sealed).reveal() == "after rotation"
    assert writer.key_ids == {"k1"}  # no source: nothing to reload from
    # A key id whose material changed under a running process is an error, not a silent switch.
    source.replace(Keyring("k3", {"k1": new_key(), "k3": new_key()}))
    with pytest.raises(KeyringError, match="changed while this process was running"):
        reader.decrypt("w", "a", "f", sealed.ciphertext, sealed.wrapped_key, "k3")


# --- the pure rules ------------------------------------------------------------------------------


def test_startup_on_an_empty_database() -> None:
    plan = assess_startup(None, [], {}, where="f", create=True)
    assert plan.create_keyring and plan.current is None
    with pytest.raises(NoKeyringYet):
        assess_startup(None, [], {}, where="f", create=False)
    ring = keyring("e1")
    plan = assess_startup(ring, [], {}, where="f", create=True)
    assert not plan.create_keyring and plan.register == "e1" and plan.current == "e1"


def test_startup_refuses_a_missing_keyring_when_the_database_knows_keys() -> None:
    ring = keyring("k1")
    with pytest.raises(
        VaultStartupError, match=r"no vault keyring.*k1.*3 encrypted rows.*nothing was written"
    ):
        assess_startup(None, [record(ring, "k1", 1)], {"k1": 3}, where="/d/vault.keys", create=True)
    with pytest.raises(VaultStartupError, match="no vault keyring"):  # keys registered, no rows yet
        assess_startup(None, [record(ring, "k1", 1)], {}, where="f", create=True)


def test_startup_refuses_a_wrong_key() -> None:
    registered = keyring("k1")
    other = keyring("k1")
    with pytest.raises(VaultStartupError, match=r"wrong vault key.*'k1'.*check value differs"):
        assess_startup(other, [record(registered, "k1", 1)], {"k1": 1}, where="f", create=True)


def test_startup_refuses_when_rows_or_the_current_key_are_not_in_the_keyring() -> None:
    ring = keyring("k1", "k2")
    k1_only = Keyring("k1", {"k1": ring.keys["k1"]})
    records = [record(ring, "k1", 1), record(ring, "k2", 2)]
    with pytest.raises(VaultStartupError, match=r"use key.*k2"):
        assess_startup(k1_only, records, {"k1": 1, "k2": 1}, where="f", create=True)
    with pytest.raises(VaultStartupError, match="current key 'k2'"):
        assess_startup(k1_only, records, {"k1": 1}, where="f", create=True)
    assert assess_startup(ring, records, {"k1": 1}, where="f", create=True).current == "k2"


def test_a_retired_key_is_neither_checked_nor_current() -> None:
    ring = keyring("k1", "k2")
    stale = Keyring("k2", {"k1": new_key(), "k2": ring.keys["k2"]})  # k1's material long gone
    records = [record(ring, "k1", 1, retired=True), record(ring, "k2", 2)]
    assert assess_startup(stale, records, {"k2": 4}, where="f", create=True).current == "k2"


def test_rotation_plans() -> None:
    ring = keyring("k1")
    # Only the current key is live: start a new rotation (file) or ask for a key (environment).
    assert plan_rotation(ring, [record(ring, "k1", 1)], from_env=False).new_key
    with pytest.raises(KeyringError, match="add a new key"):
        plan_rotation(ring, [record(ring, "k1", 1)], from_env=True)
    # An active key not registered yet: register it (a rotation killed after writing the file).
    both = ring.with_key("k2", new_key())
    plan = plan_rotation(both, [record(both, "k1", 1)], from_env=False)
    assert (plan.new_key, plan.register, plan.target) == (False, "k2", "k2")
    # An older key still live: resume, whatever the file's active key says.
    plan = plan_rotation(both, [record(both, "k1", 1), record(both, "k2", 2)], from_env=False)
    assert (plan.new_key, plan.register, plan.target) == (False, None, "k2")
    # Once the old key is retired, the next rotation makes a new key, with a new id.
    records = [record(both, "k1", 1, retired=True), record(both, "k2", 2)]
    assert plan_rotation(both, records, from_env=False).new_key
    assert next_key_id(records, both) == "k3"
    assert next_key_id(records, both.with_key("k3", new_key())) == "k4"
