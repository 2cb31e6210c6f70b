"""Cross-process signals on PostgreSQL: LISTEN/NOTIFY, sent inside the writing transaction.

A notification is delivered when (and only if) its transaction commits, so a listener that is told
"run R has events up to seq N" can read them at once. On SQLite there is one runtime process per data
directory, so there is nobody else to tell: `publish` hands the notification to the group-commit
writer's in-process subscribers after the commit (store/writer.py `signal`; nothing when none listen).

Channels:
- `cosmogen_run_events`, payload `<run id>:<last seq>`: new events in a run's log;
- `cosmogen_control`, payload `<run id>`: someone asked a running run to pause or cancel, so the
  process executing it checkpoints at its next node instead of at its next scheduled checkpoint.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence

from cosmogen.store.signals import CONTROL_CHANNEL as CONTROL_CHANNEL
from cosmogen.store.signals import EVENTS_CHANNEL as EVENTS_CHANNEL
from cosmogen.store.signals import Notification as Notification
from cosmogen.store.signals import publish as publish

log = logging.getLogger(__name__)


async def listen(
    conninfo: str, channels: Sequence[str], *, ready: asyncio.Event | None = None, retry_s: float = 1.0
) -> AsyncIterator[Notification]:
    """Notifications on `channels`, forever; reconnects after a lost connection (notifications sent
    while disconnected are missed, so consumers re-read the database after `ready` is set again)."""
    import psycopg  # only processes on PostgreSQL listen

    while True:
        try:
            async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
                for channel in channels:
                    await conn.execute(f'LISTEN "{channel}"')
                if ready is not None:
                    ready.set()
                async for message in conn.notifies():
                    yield Notification(message.channel, message.payload)
        except psycopg.OperationalError as exc:
            if ready is not None:
                ready.clear()
            log.warning("lost the notification connection (%s); reconnecting in %.1f s", exc, retry_s)
            await asyncio.sleep(retry_s)
