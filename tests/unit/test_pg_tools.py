"""Finding pg_dump and pg_restore (store/backup.py): PATH first, then the newest /usr/lib/postgresql/*/bin,
and an error naming what to install when neither has them."""

from __future__ import annotations

from pathlib import Path

import pytest

from cosmogen.store.backup import BackupError, find_tool


def tool(path: Path) -> Path:
    path.parent.mkdir(parents=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return path


def test_path_wins_then_the_newest_server_version(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    lib = tmp_path / "lib"
    for major in ("9.6", "16", "14"):
        tool(lib / major / "bin" / "pg_dump")
    assert find_tool("pg_dump", path=str(empty), lib=lib) == str(lib / "16" / "bin" / "pg_dump")
    on_path = tool(tmp_path / "bin" / "pg_dump")
    assert find_tool("pg_dump", path=str(on_path.parent), lib=lib) == str(on_path)


def test_a_missing_tool_says_what_to_install(tmp_path: Path) -> None:
    with pytest.raises(BackupError, match=r"pg_restore was not found .*apt-get install postgresql-client"):
        find_tool("pg_restore", path=str(tmp_path), lib=tmp_path / "none")
