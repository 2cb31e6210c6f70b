"""`cosmogen backup` and `restore`: a consistent copy while in use, a restore that refuses to race."""

import json
from pathlib import Path

from .conftest import CLI, EXAMPLES


def test_backup_then_restore_into_a_new_directory(cosmogen: CLI, tmp_path: Path) -> None:
    run = json.loads(cosmogen("run", str(EXAMPLES / "banking.json"), "--json").stdout)
    copy = tmp_path / "backup.db"
    done = cosmogen("backup", str(copy))
    assert done.returncode == 0, done.stderr
    assert cosmogen("backup", str(copy)).returncode == 2  # never overwrites
    target = tmp_path / "restored"
    restored = cosmogen("restore", str(copy), "--data-dir", str(target))
    assert restored.returncode == 0, restored.stderr
    shown = json.loads(cosmogen("runs", "show", run["run_id"], "--data-dir", str(target), "--json").stdout)
    assert shown["entities"] == run["entities"]
    again = cosmogen("restore", str(copy), "--data-dir", str(target))
    assert again.returncode == 2
    assert "--force" in again.stderr
    forced = cosmogen("restore", str(copy), "--data-dir", str(target), "--force")
    assert forced.returncode == 0, forced.stderr
    assert (target / "cosmogen.db.before-restore").is_file()


def test_restore_refuses_while_serve_owns_the_directory(
    served: tuple[str, object], cosmogen: CLI, tmp_path: Path
) -> None:
    copy = tmp_path / "backup.db"
    assert cosmogen("backup", str(copy)).returncode == 0  # online: serve keeps running
    refused = cosmogen("restore", str(copy), "--force")
    assert refused.returncode == 2
    assert "stop it before restoring" in refused.stderr


def test_damaged_backup_is_refused(cosmogen: CLI, tmp_path: Path) -> None:
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"SQLite format 3\x00" + b"\x00" * 200)
    done = cosmogen("restore", str(bad), "--data-dir", str(tmp_path / "d"))
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
