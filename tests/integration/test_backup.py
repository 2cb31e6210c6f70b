"""`cosmogen backup` and `cosmogen restore`, as a user runs them, on SQLite and PostgreSQL.

- A backup taken while `cosmogen serve` takes runs over HTTP is restored into a new data directory (a new
  database) and holds every run acknowledged before it began, as many as its manifest counts.
- A tampered archive (one byte changed: in the manifest, the dump, a tar header, the padding) is refused
  and the target is left byte for byte as it was.
- Canary secrets stored in the vault are nowhere in the archive (raw, hex, base64, URL-encoded; for
  PostgreSQL also in the dump decoded to SQL), while a plain value is; `--export-key` writes the keyring
  to its own 0600 file, and a restore with `--key` decrypts the stored credential.
- A backup of an older schema is restored and migrated to head.
- Scheduled backups in `serve` keep exactly COSMOGEN_BACKUP_KEEP; a failing one shows in /readyz, in
  /metrics and in the log.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import stat
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from cosmogen.domain.backup import MANIFEST_NAME
from cosmogen.domain.roles import Role
from cosmogen.integrations import credentials as creds
from cosmogen.integrations import keystore
from cosmogen.integrations.vault import KeySource, Secret
from cosmogen.store import Database, GroupCommitWriter, migrate
from cosmogen.store.backup import find_tool
from cosmogen.store.tables import runs
from cosmogen.testing.canaries import hits, mint
from tests.conftest import PostgresServer
from tests.integration.api.helpers import call
from tests.integration.api.workspaces import member, open_store

from .conftest import CLI, EXAMPLES, ROOT, free_port, serving

VIP = json.loads((EXAMPLES / "vip.json").read_text())


def manifest_of(archive: Path) -> dict[str, object]:
    with tarfile.open(archive) as tar:
        member = tar.extractfile(MANIFEST_NAME)
        assert member is not None
        return dict(json.loads(member.read()))


def run_ids(where: Path | str) -> set[str]:
    db = open_store(where)
    try:
        with db.engine.connect() as conn:
            return {str(r) for r in conn.execute(select(runs.c.id)).scalars()}
    finally:
        db.close()


def wait_for(condition: Callable[[], bool], what: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"waited {timeout_s:g} s for {what}"
        time.sleep(0.02)


@pytest.fixture
def scratch_db(pg_server: PostgresServer) -> Iterator[Callable[[], str]]:
    """New empty PostgreSQL databases for restores, dropped after the test."""
    made: list[str] = []

    def create() -> str:
        made.append(pg_server.create_database())
        return made[-1]

    yield create
    for url in made:
        pg_server.drop_database(url)


# --- a backup while serve writes, restored --------------------------------------------------------


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_backup_while_serve_writes_then_restore(
    dialect: str,
    tmp_path: Path,
    cosmogen: CLI,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Runs pile up while a loaded machine executes them slowly: no 429 for the run quota here.
    monkeypatch.setenv("COSMOGEN_RUN_QUOTA", "1000000")
    where: Path | str = tmp_path / "cosmogen-data"
    store: tuple[str, ...] = ()
    if dialect == "postgresql":
        where = str(request.getfixturevalue("clean_pg_url"))
        store = ("--database-url", where)
    archive = tmp_path / "backup.tar"
    acks: list[tuple[float, str]] = []
    refused: list[int] = []
    stop = threading.Event()
    with serving(tmp_path, *store) as (url, _):
        api = url + "/api/v1"
        _, token = member(where, "ops@example.com", Role.EDITOR)
        universe = call(api + "/universes", "POST", token=token, body={"document": VIP})[2]
        body = {"universe_id": universe["universe"]["id"], "event": {"name": "deposit"}}

        def write() -> None:
            while not stop.is_set():
                status, _, answer = call(api + "/runs", "POST", token=token, body=body)
                if status == 201:
                    acks.append((time.monotonic(), answer["run_id"]))
                else:
                    refused.append(status)
                time.sleep(0.02)

        writer = threading.Thread(target=write)
        writer.start()
        try:
            wait_for(lambda: len(acks) >= 3, "serve to acknowledge 3 runs")
            started = time.monotonic()
            done = cosmogen("backup", str(archive), *store)
            ended = time.monotonic()
            # serve still takes runs after it too
            wait_for(lambda: len([a for a in acks if a[0] > ended]) >= 2, "runs after the backup")
        finally:
            stop.set()
            writer.join()
    assert done.returncode == 0, done.stderr
    assert any(started <= at <= ended for at, _ in acks), f"no run acknowledged during the backup; {refused}"
    before = {run_id for at, run_id in acks if at < started}
    manifest = manifest_of(archive)
    assert manifest["dialect"] == dialect
    assert manifest["schema_revision"] == migrate.revisions()[-1]

    if dialect == "postgresql":
        target: Path | str = request.getfixturevalue("scratch_db")()
        restored = cosmogen("restore", str(archive), "--database-url", str(target))
    else:
        target = tmp_path / "restored"
        restored = cosmogen("restore", str(archive), "--data-dir", str(target))
    assert restored.returncode == 0, restored.stderr
    found = run_ids(target)
    assert before <= found  # every run acknowledged before the backup began is in it
    assert isinstance(manifest["counts"], dict)
    assert manifest["counts"]["runs"] == len(found)  # manifest and dump are the same moment
    assert found < run_ids(where)  # and the source went on without it
    some = sorted(before)[0]
    if isinstance(target, Path):
        shown = cosmogen("runs", "show", some, "--data-dir", str(target), "--json")
    else:
        shown = cosmogen("runs", "show", some, "--database-url", target, "--json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["run_id"] == some


def test_restore_refuses_a_database_it_would_overwrite(cosmogen: CLI, tmp_path: Path) -> None:
    run = json.loads(cosmogen("run", str(EXAMPLES / "banking.json"), "--json").stdout)
    archive = tmp_path / "backup.tar"
    assert cosmogen("backup", str(archive)).returncode == 0
    again = cosmogen("backup", str(archive))
    assert again.returncode == 2 and "never overwrites" in again.stderr
    folder = tmp_path / "backups"
    folder.mkdir()
    named = cosmogen("backup", str(folder))  # a directory: a new name inside it
    assert named.returncode == 0, named.stderr
    assert next(p.name for p in folder.iterdir()).startswith("cosmogen-")
    target = tmp_path / "restored"
    assert cosmogen("restore", str(archive), "--data-dir", str(target)).returncode == 0
    refused = cosmogen("restore", str(archive), "--data-dir", str(target))
    assert refused.returncode == 2
    assert "--force" in refused.stderr and "Traceback" not in refused.stderr
    forced = cosmogen("restore", str(archive), "--data-dir", str(target), "--force")
    assert forced.returncode == 0, forced.stderr
    assert (target / "cosmogen.db.before-restore").is_file()
    shown = json.loads(cosmogen("runs", "show", run["run_id"], "--data-dir", str(target), "--json").stdout)
    assert shown["entities"] == run["entities"]


def test_restore_refuses_while_serve_owns_the_directory(
    served: tuple[str, object], cosmogen: CLI, tmp_path: Path
) -> None:
    archive = tmp_path / "backup.tar"
    assert cosmogen("backup", str(archive)).returncode == 0  # online: serve keeps running
    refused = cosmogen("restore", str(archive), "--force")
    assert refused.returncode == 2
    assert "stop it before restoring" in refused.stderr


# --- tampering ------------------------------------------------------------------------------------


def tampered(archive: Path, tmp_path: Path) -> dict[str, Path]:
    """Copies of `archive`, each with one byte changed somewhere else; and one re-packed with another
    dump under the original manifest."""
    with tarfile.open(archive) as tar:
        head, dump = tar.getmembers()
    data = archive.read_bytes()
    count = data.index(b'"runs": ') + len(b'"runs": ')
    spots = {  # where, and the bits flipped
        "manifest": (head.offset_data + head.size // 2, 0x20),
        "manifest count": (count, 0x01),  # still JSON, still a number: only its checksum tells
        "dump": (dump.offset_data + dump.size // 2, 0x20),
        "dump header": (dump.offset + 3, 0x20),
        "padding": (head.offset_data + head.size + 1, 0x20),
        "end blocks": (len(data) - 1, 0x20),
    }
    out: dict[str, Path] = {}
    for name, (at, bits) in spots.items():
        changed = bytearray(data)
        changed[at] ^= bits
        out[name] = tmp_path / f"tampered-{name.replace(' ', '-')}.tar"
        out[name].write_bytes(bytes(changed))
    repacked = tmp_path / "tampered-repacked.tar"
    with tarfile.open(archive) as src, tarfile.open(repacked, "w", format=tarfile.PAX_FORMAT) as dst:
        for info in src.getmembers():
            content = src.extractfile(info)
            assert content is not None
            raw = bytearray(content.read())
            if info.name != MANIFEST_NAME:
                raw[-1] ^= 0x01
            info.pax_headers = {}
            dst.addfile(info, io.BytesIO(bytes(raw)))
    out["repacked"] = repacked
    return out


def snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


def test_a_tampered_archive_is_refused_and_nothing_changes(cosmogen: CLI, tmp_path: Path) -> None:
    assert cosmogen("run", str(EXAMPLES / "banking.json"), "--json").returncode == 0
    archive = tmp_path / "backup.tar"
    assert cosmogen("backup", str(archive)).returncode == 0
    target = tmp_path / "restored"
    assert cosmogen("restore", str(archive), "--data-dir", str(target)).returncode == 0
    assert cosmogen("run", str(EXAMPLES / "banking.json"), "--data-dir", str(target)).returncode == 0
    before = snapshot(target)
    for name, bad in tampered(archive, tmp_path).items():
        done = cosmogen("restore", str(bad), "--data-dir", str(target), "--force")
        assert done.returncode == 2, (name, done.stdout)
        assert "nothing was changed" in done.stderr, (name, done.stderr)
        assert "Traceback" not in done.stderr
        assert snapshot(target) == before, name
    packed = tmp_path / "backup.tar.gz"  # named .gz: gzip-compressed, and checked as strictly
    assert cosmogen("backup", str(packed)).returncode == 0
    data = packed.read_bytes()
    assert data[:2] == b"\x1f\x8b"
    for name, at in {"gzip header": 5, "deflate": len(data) // 2, "gzip trailer": len(data) - 1}.items():
        bad = tmp_path / f"tampered-{name.replace(' ', '-')}.tar.gz"
        bad.write_bytes(data[:at] + bytes([data[at] ^ 0x20]) + data[at + 1 :])
        done = cosmogen("restore", str(bad), "--data-dir", str(target), "--force")
        assert done.returncode == 2 and "nothing was changed" in done.stderr, (name, done.stderr)
        assert snapshot(target) == before, name
    assert cosmogen("restore", str(packed), "--data-dir", str(target), "--force").returncode == 0
    repacked = cosmogen("restore", str(tmp_path / "tampered-repacked.tar"), "--data-dir", str(target / "x"))
    assert "does not match its SHA-256" in repacked.stderr
    assert not (target / "x").exists()  # refused before the target was created
    garbage = tmp_path / "garbage.tar"
    garbage.write_bytes(b"SQLite format 3\x00" + b"\x00" * 200)
    done = cosmogen("restore", str(garbage), "--data-dir", str(tmp_path / "d"))
    assert done.returncode == 2 and "not a" in done.stderr and "Traceback" not in done.stderr


# --- secrets and the exported key -----------------------------------------------------------------


def store_canaries(db: Database, source: KeySource) -> tuple[dict[str, str], dict[str, str], str]:
    """Canary secrets in the vault, one account each (named after a plain control value); returns the
    canaries, their account ids and the control value."""
    canaries = mint()
    control = f"control-{os.urandom(8).hex()}"
    vault = keystore.open_vault(db, source)
    writer = GroupCommitWriter(db)
    ids: dict[str, str] = {}
    try:
        for i, (name, value) in enumerate(canaries.items()):
            account = creds.create_account(
                workspace_id="default", provider=name, name=f"{control} {i}", auth_kind="api_key"
            )
            ids[name] = writer.submit(account).result()
            writer.submit(creds.put_secret(vault, ids[name], "api_key", Secret(value))).result()
    finally:
        writer.close()
    return canaries, ids, control


def reveal(db: Database, source: KeySource, account_id: str) -> str:
    vault = keystore.open_vault(db, source, create=False)
    with db.engine.connect() as conn:
        return creds.reveal_credentials(conn, vault, account_id)["api_key"].reveal()


def test_sqlite_archive_holds_no_secret_and_the_exported_key_reads_them(
    cosmogen: CLI, tmp_path: Path
) -> None:
    data_dir = tmp_path / "cosmogen-data"
    db = Database.open(data_dir=data_dir)
    try:
        migrate.upgrade(db)
        canaries, ids, control = store_canaries(db, KeySource.for_data_dir(data_dir))
    finally:
        db.close()
    ring = KeySource.for_data_dir(data_dir).load()
    assert ring is not None
    archive, key = tmp_path / "backup.tar", tmp_path / "exported.keys"
    done = cosmogen("backup", str(archive), "--export-key", str(key))
    assert done.returncode == 0, done.stderr

    packed = tmp_path / "backup.tar.gz"
    assert cosmogen("backup", str(packed)).returncode == 0

    needles = {name: value.encode() for name, value in canaries.items()}
    needles |= {f"kek {key_id}": k for key_id, k in ring.keys.items()}
    for blob in (archive.read_bytes(), packed.read_bytes(), gzip.decompress(packed.read_bytes())):
        assert hits(blob, needles) == []
    assert control.encode() in archive.read_bytes()  # the search looks where the data is
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert hits(key.read_bytes(), {"kek": ring.keys[ring.active]})  # the key went here, alone
    assert not (archive.parent / "vault.keys").exists()

    restored = tmp_path / "restored"
    with_key = cosmogen("restore", str(archive), "--data-dir", str(restored), "--key", str(key))
    assert with_key.returncode == 0, with_key.stderr
    db = Database.open(data_dir=restored)
    try:
        assert reveal(db, KeySource.for_data_dir(restored), ids["openai"]) == canaries["openai"]
    finally:
        db.close()

    bare = cosmogen("restore", str(archive), "--data-dir", str(tmp_path / "bare"))
    assert bare.returncode == 0, bare.stderr
    assert "warning: the stored credentials cannot be read yet" in bare.stderr and "--key" in bare.stderr

    other = tmp_path / "other.keys"
    fresh = cosmogen("backup", str(tmp_path / "fresh.tar"), "--data-dir", str(tmp_path / "fresh"))
    assert fresh.returncode == 2  # no database there: nothing to back up
    other_dir = tmp_path / "other"
    Database.open(data_dir=other_dir).close()
    KeySource.for_data_dir(other_dir).create(type(ring)("k1", {"k1": os.urandom(32)}))
    shutil.copy(other_dir / "vault.keys", other)
    wrong = cosmogen("restore", str(archive), "--data-dir", str(tmp_path / "wrong"), "--key", str(other))
    assert wrong.returncode == 2
    assert "does not fit the backup" in wrong.stderr and "wrong vault key" in wrong.stderr
    assert not (tmp_path / "wrong" / "cosmogen.db").exists()


def test_postgres_archive_holds_no_secret_and_restores_into_an_empty_database(
    cosmogen: CLI, tmp_path: Path, clean_pg_url: str, scratch_db: Callable[[], str]
) -> None:
    keys_dir = tmp_path / "cosmogen-data"  # the CLI's data directory: where it looks for vault.keys
    db = Database.open(url=clean_pg_url)
    try:
        canaries, ids, control = store_canaries(db, KeySource.for_data_dir(keys_dir))
    finally:
        db.close()
    ring = KeySource.for_data_dir(keys_dir).load()
    assert ring is not None
    archive, key = tmp_path / "backup.tar", tmp_path / "exported.keys"
    done = cosmogen("backup", str(archive), "--database-url", clean_pg_url, "--export-key", str(key))
    assert done.returncode == 0, done.stderr

    needles = {name: value.encode() for name, value in canaries.items()}
    needles |= {f"kek {key_id}": k for key_id, k in ring.keys.items()}
    assert hits(archive.read_bytes(), needles) == []
    with tarfile.open(archive) as tar:  # pg_dump compresses: search the dump decoded to SQL as well
        dump = tar.extractfile("cosmogen.dump")
        assert dump is not None
        (tmp_path / "cosmogen.dump").write_bytes(dump.read())
    sql = subprocess.run(
        [find_tool("pg_restore"), "--file=-", str(tmp_path / "cosmogen.dump")],
        capture_output=True,
        check=True,
    ).stdout
    assert control.encode() in sql
    assert hits(sql, needles) == []
    assert stat.S_IMODE(key.stat().st_mode) == 0o600

    target = scratch_db()
    bad = tampered(archive, tmp_path)["dump"]
    refused = cosmogen("restore", str(bad), "--database-url", target)
    assert refused.returncode == 2 and "nothing was changed" in refused.stderr
    empty = Database.open(url=target)
    try:
        assert migrate.current_revision(empty) is None  # still empty
    finally:
        empty.close()

    restored = cosmogen("restore", str(archive), "--database-url", target, "--key", str(key))
    assert restored.returncode == 0, restored.stderr
    assert "fits" in restored.stdout
    db = Database.open(url=target)
    try:
        assert migrate.is_current(db)
        assert reveal(db, KeySource(key), ids["slack"]) == canaries["slack"]
    finally:
        db.close()
    again = cosmogen("restore", str(archive), "--database-url", target)
    assert again.returncode == 2 and "empty database" in again.stderr


# --- scheduled backups ----------------------------------------------------------------------------


def readyz(url: str) -> dict[str, object]:
    status, _, body = call(url + "/readyz")
    assert status == 200, body
    return dict(body)


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_scheduled_backups_keep_exactly_keep(
    dialect: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    store = ("--database-url", request.getfixturevalue("clean_pg_url")) if dialect == "postgresql" else ()
    folder = tmp_path / "backups"
    monkeypatch.setenv("COSMOGEN_BACKUP_DIR", str(folder))
    monkeypatch.setenv("COSMOGEN_BACKUP_EVERY", "1s")
    monkeypatch.setenv("COSMOGEN_BACKUP_KEEP", "2")
    seen: set[str] = set()
    with serving(tmp_path, *store) as (url, _):
        deadline = time.monotonic() + 90
        while True:
            report = readyz(url)["backups"]
            assert isinstance(report, dict)
            if report["last_archive"]:
                seen.add(str(report["last_archive"]))
            if int(report["made"]) >= 4:
                break
            assert time.monotonic() < deadline, report
            time.sleep(0.1)
        assert report["status"] == "ok" and report["keep"] == 2 and report["last_error"] is None
    kept = sorted(p.name for p in folder.iterdir())
    assert len(kept) == 2, kept  # nothing else either: no half-written archive or staging left
    assert max(kept) >= max(seen)  # the newest are the ones kept
    assert len(seen - set(kept)) >= 2  # and older ones were made, then deleted
    assert manifest_of(folder / kept[-1])["dialect"] == dialect


def test_a_failing_scheduled_backup_surfaces(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "backups"
    monkeypatch.setenv("COSMOGEN_BACKUP_DIR", str(folder))
    monkeypatch.setenv("COSMOGEN_BACKUP_EVERY", "1s")
    monkeypatch.setenv("COSMOGEN_METRICS_PUBLIC", "1")
    with serving(tmp_path) as (url, _):
        folder.rmdir()
        folder.write_text("a file where the backups should go\n")
        deadline = time.monotonic() + 60
        while (report := readyz(url)["backups"])["status"] != "failing":  # type: ignore[index]
            assert time.monotonic() < deadline, report
            time.sleep(0.1)
        assert isinstance(report, dict)
        assert "FileExistsError" in str(report["last_error"]) and int(report["failed_in_a_row"]) >= 1
        status, _, metrics = call(url + "/metrics")
        assert status == 200
        assert 'cosmogen_backups_total{outcome="failed"}' in str(metrics)
    assert "scheduled backup into" in (tmp_path / "serve.log").read_text()


def test_scheduled_backups_that_cannot_work_stop_serve_at_start(cosmogen: CLI, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    env = {**os.environ, "COSMOGEN_BACKUP_DIR": str(blocker / "backups"), "COSMOGEN_DATA_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "cosmogen", "serve", "--port", str(free_port())],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
        cwd=ROOT,
    )
    assert done.returncode == 2
    assert "COSMOGEN_BACKUP_DIR: cannot create" in done.stderr
    bad = cosmogen("backup", str(tmp_path / "x.tar"), "--database-url", "postgresql://nobody@127.0.0.1:1/x")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_a_backup_from_an_older_schema_is_brought_up_to_date(
    dialect: str, tmp_path: Path, cosmogen: CLI, request: pytest.FixtureRequest
) -> None:
    older = migrate.revisions()[-4]
    if dialect == "postgresql":
        source: Path | str = request.getfixturevalue("scratch_db")()
        store: tuple[str, ...] = ("--database-url", str(source))
    else:
        source = tmp_path / "cosmogen-data"
        store = ()
    db = open_store(source)
    try:
        migrate.upgrade(db, older)
    finally:
        db.close()
    archive = tmp_path / "old.tar"
    made = cosmogen("backup", str(archive), *store)
    assert made.returncode == 0, made.stderr
    assert manifest_of(archive)["schema_revision"] == older
    if dialect == "postgresql":
        target: Path | str = request.getfixturevalue("scratch_db")()
        restored = cosmogen("restore", str(archive), "--database-url", str(target))
    else:
        target = tmp_path / "restored"
        restored = cosmogen("restore", str(archive), "--data-dir", str(target))
    assert restored.returncode == 0, restored.stderr
    db = open_store(target)
    try:
        assert migrate.current_revision(db) == migrate.revisions()[-1]
    finally:
        db.close()
