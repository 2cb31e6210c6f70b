"""Scheduled backups inside `cosmogen serve`: an archive every COSMOGEN_BACKUP_EVERY into
COSMOGEN_BACKUP_DIR, the COSMOGEN_BACKUP_KEEP newest kept.

Each backup is the same as `cosmogen backup` (store/backup.py), taken on a thread so the event loop keeps
serving. A failure is never silent: it is logged at ERROR, counted in `cosmogen_backups_total{outcome=
"failed"}`, and shown in /readyz under "backups" until a backup succeeds again. Retention runs only after
a backup was written, so a failing schedule never deletes the last good archives.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from cosmogen.domain.backup import BackupPolicy, scheduled_name, to_prune
from cosmogen.store import backup as archive
from cosmogen.telemetry.hooks import Hooks

log = logging.getLogger(__name__)


class BackupSchedule:
    """Start with `start()` on the event loop; `close()` stops it (a backup under way finishes)."""

    def __init__(
        self,
        policy: BackupPolicy,
        *,
        data_dir: Path,
        database_url: str | None,
        clock: Callable[[], datetime],
        hooks: Hooks | None = None,
    ) -> None:
        self.policy = policy
        self._data_dir = data_dir
        self._database_url = database_url
        self._clock = clock
        self._hooks = hooks or Hooks()
        self._task: asyncio.Task[None] | None = None
        self.made = 0
        self.failed_in_a_row = 0
        self.last_ok_at: datetime | None = None
        self.last_archive: str | None = None
        self.last_error: str | None = None

    def take(self) -> Path:
        """One backup, then the oldest scheduled backups beyond `keep` deleted; raises on failure."""
        directory = self.policy.directory
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        now = self._clock()
        target = directory / scheduled_name(now)
        archive.create(target, now, data_dir=self._data_dir, database_url=self._database_url)
        for name in to_prune((p.name for p in directory.iterdir() if p.is_file()), self.policy.keep):
            (directory / name).unlink(missing_ok=True)
        return target

    def run_once(self) -> bool:
        """`take`, recorded: a failure is logged, counted and kept for /readyz; never raised."""
        started = time.monotonic()
        try:
            target = self.take()
        except Exception as exc:  # every failure must surface, whatever raised it
            self.failed_in_a_row += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.error(
                "scheduled backup into %s failed (%d in a row): %s",
                self.policy.directory,
                self.failed_in_a_row,
                self.last_error,
            )
            self._hooks.backup_finished(False, time.monotonic() - started)
            return False
        self.made += 1
        self.failed_in_a_row = 0
        self.last_error = None
        self.last_ok_at = self._clock()
        self.last_archive = target.name
        self._hooks.backup_finished(True, time.monotonic() - started)
        log.info("scheduled backup written: %s", target)
        return True

    def status(self) -> dict[str, Any]:
        """What /readyz shows under "backups"."""
        state = "failing" if self.failed_in_a_row else ("ok" if self.made else "pending")
        return {
            "status": state,
            "directory": str(self.policy.directory),
            "every_s": self.policy.every_s,
            "keep": self.policy.keep,
            "made": self.made,
            "failed_in_a_row": self.failed_in_a_row,
            "last_ok_at": self.last_ok_at.isoformat() if self.last_ok_at else None,
            "last_archive": self.last_archive,
            "last_error": self.last_error,
        }

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run_forever(), name="scheduled-backups")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run_forever(self) -> None:
        while True:
            await asyncio.sleep(self.policy.every_s)
            await asyncio.to_thread(self.run_once)
