"""Backups, the pure part: the manifest, its validation against what an archive holds, the scheduled
backups' interval and file names, and which old backups retention deletes. No I/O; `now` is passed in.

An archive (store/backup.py writes it) is one uncompressed tar: `manifest.json` first, then the database
dump (`cosmogen.db`, an SQLite file, or `cosmogen.dump`, pg_dump's custom format). The manifest names
every other member with its size and SHA-256, so a restore checks all of it before touching anything.
The vault's keys are never in it: the database holds sealed ciphertext only (docs/operations.md).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
DUMP_NAMES: Mapping[str, str] = MappingProxyType({"sqlite": "cosmogen.db", "postgresql": "cosmogen.dump"})
# Rows counted into the manifest: enough to tell at a glance whether a backup holds what one expects.
COUNTED_TABLES = ("workspaces", "users", "universes", "runs", "accounts", "credentials")

_SHA256 = re.compile(r"[0-9a-f]{64}")
# Scheduled backups: cosmogen-20261128T221425123Z.tar (UTC, milliseconds): the name sorts by time.
_SCHEDULED = re.compile(r"cosmogen-(\d{8}T\d{9}Z)\.tar")
_INTERVAL = re.compile(r"(\d+)\s*([smhd])")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MIN_INTERVAL_S = 1
MAX_INTERVAL_S = 366 * 86400


@dataclass(frozen=True, slots=True)
class BackupPolicy:
    """Scheduled backups (`cosmogen serve`): an archive into `directory` every `every_s` seconds, the
    `keep` newest kept (COSMOGEN_BACKUP_DIR, COSMOGEN_BACKUP_EVERY, COSMOGEN_BACKUP_KEEP)."""

    directory: Path
    every_s: float
    keep: int


class ManifestError(ValueError):
    """The archive is not a sound cosmogen backup; the message says what is wrong with it."""


@dataclass(frozen=True, slots=True)
class FileEntry:
    name: str
    sha256: str
    size: int


@dataclass(frozen=True, slots=True)
class Manifest:
    cosmogen_version: str
    dialect: str
    schema_revision: str
    created_at: datetime
    files: tuple[FileEntry, ...]
    counts: Mapping[str, int] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    @property
    def dump(self) -> FileEntry:
        """The database dump: the one member named for the manifest's dialect."""
        return next(f for f in self.files if f.name == DUMP_NAMES[self.dialect])

    def to_json(self) -> str:
        """The canonical text: `unpack` refuses a manifest that is not exactly this."""
        raw: dict[str, Any] = {
            "format_version": self.format_version,
            "cosmogen_version": self.cosmogen_version,
            "dialect": self.dialect,
            "schema_revision": self.schema_revision,
            "created_at": self.created_at.astimezone(UTC).isoformat(),
            "files": [{"name": f.name, "sha256": f.sha256, "size": f.size} for f in self.files],
            "counts": dict(sorted(self.counts.items())),
        }
        raw["checksum"] = _checksum(raw)
        return json.dumps(raw, indent=2) + "\n"

    @classmethod
    def parse(cls, text: str | bytes) -> Manifest:
        """The manifest, or ManifestError naming the first thing that is wrong."""
        try:
            raw = json.loads(text)
        except ValueError:
            raise ManifestError(f"{MANIFEST_NAME} is not JSON") from None
        if not isinstance(raw, dict):
            raise ManifestError(f"{MANIFEST_NAME} must be a JSON object")
        # Damage, not forgery: whoever can write the archive can recompute this. It covers the fields
        # no other check does (the counts, the versions, the time).
        if raw.pop("checksum", None) != _checksum(raw):
            raise ManifestError(f"{MANIFEST_NAME} was altered (its checksum does not match its content)")
        version = raw.get("format_version")
        if version != FORMAT_VERSION:
            raise ManifestError(
                f"backup format {version!r} is not one this release reads ({FORMAT_VERSION}); "
                "restore it with the cosmogen release that made it, or a newer one"
            )
        dialect = _text(raw, "dialect")
        if dialect not in DUMP_NAMES:
            raise ManifestError(f"dialect {dialect!r}: expected one of {sorted(DUMP_NAMES)}")
        try:
            created_at = datetime.fromisoformat(_text(raw, "created_at"))
        except ValueError:
            raise ManifestError("created_at is not an ISO 8601 time") from None
        if created_at.tzinfo is None:
            raise ManifestError("created_at has no time zone")
        files = raw.get("files")
        if not isinstance(files, list) or not files:
            raise ManifestError('"files" must be a non-empty list of {name, sha256, size}')
        entries = tuple(_entry(item) for item in files)
        names = [e.name for e in entries]
        if len(set(names)) != len(names):
            raise ManifestError("a file is listed twice")
        if names != [DUMP_NAMES[dialect]]:
            raise ManifestError(f"a {dialect} backup holds {DUMP_NAMES[dialect]} alone, not {names}")
        counts = raw.get("counts", {})
        if not isinstance(counts, dict) or not all(
            isinstance(k, str) and _whole(v) for k, v in counts.items()
        ):
            raise ManifestError('"counts" must map table names to whole numbers')
        return cls(
            cosmogen_version=_text(raw, "cosmogen_version"),
            dialect=dialect,
            schema_revision=_text(raw, "schema_revision"),
            created_at=created_at,
            files=entries,
            counts=counts,
            format_version=FORMAT_VERSION,
        )


def check_files(manifest: Manifest, found: Mapping[str, tuple[int, str]]) -> None:
    """Every file the manifest lists is in the archive with its size and SHA-256 (`found`: name ->
    (size, sha256) of the members besides the manifest), and nothing else is."""
    listed = {f.name: f for f in manifest.files}
    problems: list[str] = []
    for name in sorted(set(found) - set(listed)):
        problems.append(f"{name} is in the archive but not in the manifest")
    for name, entry in sorted(listed.items()):
        if name not in found:
            problems.append(f"{name} is missing")
            continue
        size, digest = found[name]
        if size != entry.size:
            problems.append(f"{name} has {size:,} bytes, the manifest says {entry.size:,}")
        elif digest != entry.sha256:
            problems.append(f"{name} does not match its SHA-256 in the manifest")
    if problems:
        raise ManifestError("; ".join(problems))


def check_restorable(manifest: Manifest, *, dialect: str, known_revisions: Sequence[str]) -> None:
    """The backup fits the target: the same database kind, and a schema this release can upgrade from."""
    if manifest.dialect != dialect:
        how = "--database-url" if manifest.dialect == "postgresql" else "--data-dir (embedded SQLite)"
        raise ManifestError(
            f"this is a {manifest.dialect} backup and the target is {dialect}; restore it with {how}"
        )
    if manifest.schema_revision not in known_revisions:
        raise ManifestError(
            f"the backup's schema revision {manifest.schema_revision!r} is unknown to this release "
            f"(cosmogen {manifest.cosmogen_version} made it); restore it with that release or a newer one"
        )


def parse_interval(text: str, setting: str) -> float:
    """`90s`, `30m`, `6h`, `1d` (or a sum such as `1h30m`) as seconds; ValueError names `setting`."""
    compact = text.strip().lower()
    parts = _INTERVAL.findall(compact)
    if not compact or _INTERVAL.sub("", compact).strip():
        raise ValueError(f"{setting} must be a duration such as 30m, 6h or 1d, not {text!r}")
    seconds = sum(int(n) * _UNIT_S[unit] for n, unit in parts)
    if not MIN_INTERVAL_S <= seconds <= MAX_INTERVAL_S:
        raise ValueError(f"{setting} must be between 1s and 366d, not {text!r}")
    return float(seconds)


DEFAULT_EVERY = "24h"
DEFAULT_KEEP = 7


def policy_from_env(env: Mapping[str, str]) -> BackupPolicy | None:
    """The scheduled-backup settings, or None when COSMOGEN_BACKUP_DIR is not set; ValueError names the
    setting that is wrong."""
    directory = env.get("COSMOGEN_BACKUP_DIR", "").strip()
    if not directory:
        stray = [name for name in ("COSMOGEN_BACKUP_EVERY", "COSMOGEN_BACKUP_KEEP") if env.get(name)]
        if stray:
            raise ValueError(f"{stray[0]} needs COSMOGEN_BACKUP_DIR, the directory the backups go to")
        return None
    every = parse_interval(env.get("COSMOGEN_BACKUP_EVERY") or DEFAULT_EVERY, "COSMOGEN_BACKUP_EVERY")
    keep_text = (env.get("COSMOGEN_BACKUP_KEEP") or str(DEFAULT_KEEP)).strip()
    if not keep_text.isdigit() or not 1 <= int(keep_text) <= 10_000:
        raise ValueError(
            f"COSMOGEN_BACKUP_KEEP must be a whole number of backups, 1 or more, not {keep_text!r}"
        )
    return BackupPolicy(Path(directory).expanduser(), every, int(keep_text))


def scheduled_name(now: datetime) -> str:
    at = now.astimezone(UTC)
    return f"cosmogen-{at:%Y%m%dT%H%M%S}{at.microsecond // 1000:03d}Z.tar"


def to_prune(names: Iterable[str], keep: int) -> list[str]:
    """The scheduled backups beyond the `keep` newest, oldest first. Files not named like a scheduled
    backup (an operator's own, a half-written one) are never chosen."""
    if keep < 1:
        raise ValueError("keep at least one backup")
    ours = sorted((m.group(1), name) for name in names if (m := _SCHEDULED.fullmatch(name)))
    return [name for _, name in ours[: max(0, len(ours) - keep)]]


def _checksum(raw: Mapping[str, Any]) -> str:
    canonical = json.dumps(raw, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _text(raw: Mapping[str, Any], key: str) -> str:
    value = raw.get(key)
    if not isinstance(value, str) or not value:
        raise ManifestError(f'"{key}" must be a non-empty string')
    return value


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _entry(item: object) -> FileEntry:
    if not isinstance(item, dict):
        raise ManifestError('each of "files" must be an object {name, sha256, size}')
    name = item.get("name")
    if not isinstance(name, str) or name not in DUMP_NAMES.values():
        raise ManifestError(f"unexpected file {name!r} in the manifest")
    digest = item.get("sha256")
    if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
        raise ManifestError(f"{name}: sha256 must be 64 lowercase hex digits")
    size = item.get("size")
    if not _whole(size):
        raise ManifestError(f"{name}: size must be a whole number of bytes")
    assert isinstance(size, int)
    return FileEntry(name, digest, size)
