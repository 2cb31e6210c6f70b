"""The backup manifest, its checks, the schedule's settings and retention (domain/backup.py)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cosmogen.domain.backup import (
    BackupPolicy,
    FileEntry,
    Manifest,
    ManifestError,
    check_files,
    check_restorable,
    parse_interval,
    policy_from_env,
    scheduled_name,
    to_prune,
)

AT = datetime(2026, 11, 28, 22, 14, 25, 123456, tzinfo=UTC)
DIGEST = "ab" * 32


def manifest(**changes: object) -> Manifest:
    values: dict[str, object] = {
        "cosmogen_version": "0.1.0",
        "dialect": "sqlite",
        "schema_revision": "0015",
        "created_at": AT,
        "files": (FileEntry("cosmogen.db", DIGEST, 4096),),
        "counts": {"runs": 3, "universes": 1},
    }
    return Manifest(**{**values, **changes})  # type: ignore[arg-type]


def test_the_manifest_round_trips_and_its_text_is_canonical() -> None:
    made = manifest()
    text = made.to_json()
    assert Manifest.parse(text) == made
    assert Manifest.parse(text).to_json() == text
    raw = json.loads(text)
    assert raw["format_version"] == 1 and raw["dialect"] == "sqlite" and raw["schema_revision"] == "0015"
    assert raw["files"] == [{"name": "cosmogen.db", "sha256": DIGEST, "size": 4096}]
    assert raw["created_at"] == "2026-11-28T22:14:25.123456+00:00"


@pytest.mark.parametrize(
    ("field", "value"),
    [("counts", {"runs": 4, "universes": 1}), ("cosmogen_version", "0.1.1"), ("schema_revision", "0014")],
)
def test_a_changed_field_breaks_the_manifest_checksum(field: str, value: object) -> None:
    raw = json.loads(manifest().to_json())
    raw[field] = value
    with pytest.raises(ManifestError, match="checksum"):
        Manifest.parse(json.dumps(raw))


def _resealed(raw: dict[str, object]) -> str:
    """A manifest whose checksum fits its (bad) content: what the field checks see."""
    from cosmogen.domain.backup import _checksum

    body = {k: v for k, v in raw.items() if k != "checksum"}
    return json.dumps({**body, "checksum": _checksum(body)})


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"format_version": 2}, "backup format 2"),
        ({"dialect": "mysql"}, "dialect 'mysql'"),
        ({"created_at": "yesterday"}, "ISO 8601"),
        ({"created_at": "2026-11-28T22:14:25"}, "time zone"),
        ({"files": []}, "non-empty list"),
        ({"files": [{"name": "../etc/passwd", "sha256": DIGEST, "size": 1}]}, "unexpected file"),
        ({"files": [{"name": "cosmogen.db", "sha256": "XY", "size": 1}]}, "64 lowercase hex"),
        ({"files": [{"name": "cosmogen.db", "sha256": DIGEST, "size": -1}]}, "whole number of bytes"),
        ({"files": [{"name": "cosmogen.dump", "sha256": DIGEST, "size": 1}]}, "holds cosmogen.db alone"),
        ({"counts": {"runs": True}}, "whole numbers"),
        ({"schema_revision": ""}, "schema_revision"),
    ],
)
def test_a_bad_manifest_says_what_is_wrong(change: dict[str, object], message: str) -> None:
    raw = {**json.loads(manifest().to_json()), **change}
    with pytest.raises(ManifestError, match=message):
        Manifest.parse(_resealed(raw))


def test_not_json_is_refused() -> None:
    with pytest.raises(ManifestError, match="not JSON"):
        Manifest.parse(b"\x00garbage")


def test_check_files_names_every_difference() -> None:
    made = manifest()
    check_files(made, {"cosmogen.db": (4096, DIGEST)})
    with pytest.raises(ManifestError, match="does not match its SHA-256"):
        check_files(made, {"cosmogen.db": (4096, "cd" * 32)})
    with pytest.raises(ManifestError, match="has 4,095 bytes, the manifest says 4,096"):
        check_files(made, {"cosmogen.db": (4095, DIGEST)})
    with pytest.raises(ManifestError, match=r"cosmogen\.db is missing"):
        check_files(made, {})
    with pytest.raises(ManifestError, match=r"cosmogen\.dump is in the archive but not in the manifest"):
        check_files(made, {"cosmogen.db": (4096, DIGEST), "cosmogen.dump": (1, DIGEST)})


def test_check_restorable_wants_the_same_dialect_and_a_known_schema() -> None:
    check_restorable(manifest(), dialect="sqlite", known_revisions=["0014", "0015", "0016"])
    pg = manifest(dialect="postgresql", files=(FileEntry("cosmogen.dump", DIGEST, 1),))
    with pytest.raises(ManifestError, match="restore it with --database-url"):
        check_restorable(pg, dialect="sqlite", known_revisions=["0015"])
    with pytest.raises(ManifestError, match="schema revision '0015' is unknown"):
        check_restorable(manifest(), dialect="sqlite", known_revisions=["0001", "0002"])


def test_intervals() -> None:
    assert parse_interval("6h", "X") == 6 * 3600
    assert parse_interval("30m", "X") == 1800
    assert parse_interval("1d", "X") == 86400
    assert parse_interval("1h30m", "X") == 5400
    assert parse_interval(" 90s ", "X") == 90
    for bad in ("", "6", "6 hours", "h", "0s", "-1h", "400d"):
        with pytest.raises(ValueError, match="X"):
            parse_interval(bad, "X")


def test_the_policy_from_the_environment() -> None:
    assert policy_from_env({}) is None
    assert policy_from_env({"COSMOGEN_BACKUP_DIR": "/b"}) == BackupPolicy(Path("/b"), 86400.0, 7)
    chosen = {"COSMOGEN_BACKUP_DIR": "/b", "COSMOGEN_BACKUP_EVERY": "6h", "COSMOGEN_BACKUP_KEEP": "3"}
    assert policy_from_env(chosen) == BackupPolicy(Path("/b"), 21600.0, 3)
    with pytest.raises(ValueError, match="COSMOGEN_BACKUP_EVERY needs COSMOGEN_BACKUP_DIR"):
        policy_from_env({"COSMOGEN_BACKUP_EVERY": "6h"})
    with pytest.raises(ValueError, match="COSMOGEN_BACKUP_KEEP must be a whole number"):
        policy_from_env({"COSMOGEN_BACKUP_DIR": "/b", "COSMOGEN_BACKUP_KEEP": "0"})
    with pytest.raises(ValueError, match="COSMOGEN_BACKUP_EVERY must be a duration"):
        policy_from_env({"COSMOGEN_BACKUP_DIR": "/b", "COSMOGEN_BACKUP_EVERY": "often"})


def test_scheduled_names_sort_by_time() -> None:
    times = [AT + timedelta(milliseconds=n) for n in (0, 1, 999, 1000, 3_600_000, 86_400_000 * 40)]
    names = [scheduled_name(t) for t in times]
    assert names == sorted(names)
    assert len(set(names)) == len(names)
    assert names[0] == "cosmogen-20261128T221425123Z.tar"


def test_retention_keeps_exactly_the_newest_and_touches_nothing_else() -> None:
    made = [scheduled_name(AT + timedelta(hours=6 * n)) for n in range(10)]
    others = ["notes.txt", "cosmogen-manual.tar", ".cosmogen-20261128T221425123Z.tar.partial"]
    shuffled = [*made[5:], *others, *made[:5]]
    pruned = to_prune(shuffled, keep=3)
    assert pruned == made[:7]  # oldest first
    assert set(shuffled) - set(pruned) == {*made[7:], *others}
    assert to_prune(made[:2], keep=3) == []
    assert to_prune(made, keep=10) == []
    with pytest.raises(ValueError, match="keep at least one"):
        to_prune(made, keep=0)
