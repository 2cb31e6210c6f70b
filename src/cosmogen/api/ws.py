"""The live event stream's edge: handshake checks (Origin, credential or single-use ticket, what the
caller may see), the credential re-check while a stream is open, and pumping the feed's events to one
WebSocket or Server-Sent Events client. Routes: api/routes/events.py. Feed: runtime/feed.py.

Close codes (WebSocket): 1008 refused or credential no longer valid, 1009 a client frame over 1 MiB,
1013 the client fell behind its buffer (reconnect with `after=<last id>`), 1011 our failure.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import cast

from fastapi import Request, WebSocket
from sqlalchemy import select
from starlette.requests import HTTPConnection

from cosmogen.api.security import Authenticator, Principal
from cosmogen.domain.events import Envelope, Subscription
from cosmogen.domain.roles import Role
from cosmogen.runtime.feed import EventFeed, Subscriber, run_workspace, universe_workspace
from cosmogen.store import Database
from cosmogen.store.tables import api_tokens, memberships, users

log = logging.getLogger(__name__)

TICKET_TTL_S = 30.0
MAX_OUTSTANDING_TICKETS = 10_000
MAX_CLIENT_FRAME = 1 << 20  # bytes; a client has nothing big to say

CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_INTERNAL = 1011
CLOSE_TRY_LATER = 1013


class Refused(Exception):
    """The handshake is refused; `status` for SSE (WebSocket closes 1008 before accepting)."""

    def __init__(self, status: int, code: str, detail: str, hint: str) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail, self.hint = status, code, detail, hint


class Overflow(Exception):
    """The client's buffer filled up: it could not keep up with its events."""


@dataclass(slots=True)
class TicketBook:
    """Short-lived single-use tickets for clients that cannot send headers (a browser's WebSocket).

    Kept in this process's memory (only their sha256): in scale-out mode, ask for the ticket from the
    same server the stream connects to (or send the API token as a header, which works everywhere).
    """

    clock: Callable[[], float] = time.monotonic
    ttl_s: float = TICKET_TTL_S
    _tickets: dict[str, tuple[Principal, float]] = field(default_factory=dict)

    def mint(self, caller: Principal) -> str:
        now = self.clock()
        expired = [k for k, (_, at) in self._tickets.items() if now - at > self.ttl_s]
        for key in expired:
            del self._tickets[key]
        if len(self._tickets) >= MAX_OUTSTANDING_TICKETS:
            raise Refused(429, "too_many_tickets", "too many unused stream tickets", "use the ones you have")
        ticket = "cgt_" + secrets.token_urlsafe(32)
        self._tickets[_digest(ticket)] = (caller, now)
        return ticket

    def redeem(self, ticket: str) -> Principal | None:
        """The ticket's principal, once; None when unknown, used already or older than ttl_s."""
        found = self._tickets.pop(_digest(ticket), None)
        if found is None or self.clock() - found[1] > self.ttl_s:
            return None
        return found[0]


def _digest(ticket: str) -> str:
    return hashlib.sha256(ticket.encode("utf-8", "replace")).hexdigest()


def own_origin(conn: HTTPConnection) -> str:
    secure = conn.url.scheme in ("https", "wss")
    return f"{'https' if secure else 'http'}://{conn.headers.get('host', '')}".lower()


@dataclass(slots=True)
class EventStreams:
    """Everything a stream route needs, built once by the app's lifespan."""

    feed: EventFeed
    auth: Authenticator
    db: Database
    now: Callable[[], datetime]
    origins: frozenset[str] = frozenset()  # allowed besides the server's own (COSMOGEN_ALLOWED_ORIGINS)
    tickets: TicketBook = field(default_factory=TicketBook)
    recheck_s: float = 1.0
    heartbeat_s: float = 15.0

    @staticmethod
    def parse_origins(raw: str | None) -> frozenset[str]:
        return frozenset(o.strip().rstrip("/").lower() for o in (raw or "").split(",") if o.strip())

    # --- the handshake ---------------------------------------------------------------------------------

    def check_origin(self, conn: HTTPConnection, *, websocket: bool) -> None:
        """A browser's Origin must be ours (or allowlisted). A WebSocket with no Origin is not a browser's,
        so it must bring an API token header (tickets and cookies are for browsers)."""
        origin = conn.headers.get("origin")
        if origin is not None:
            if origin.rstrip("/").lower() not in {own_origin(conn), *self.origins}:
                hint = "open the stream from the studio, or add the origin to COSMOGEN_ALLOWED_ORIGINS"
                raise Refused(403, "foreign_origin", "this page's origin may not open the event stream", hint)
        elif websocket and "authorization" not in conn.headers:
            raise Refused(403, "no_origin", "a stream without an Origin must send an API token header",
                          "send `Authorization: Bearer cg_...`")  # fmt: skip

    async def authenticate(self, conn: HTTPConnection, params: Mapping[str, str]) -> Principal:
        """An API token header (or a session cookie, through api/security.py), or a ticket."""
        ticket = params.get("ticket")
        if ticket and "authorization" not in conn.headers:
            found = self.tickets.redeem(ticket)
        else:
            # The authenticator reads only what every handshake has (headers, cookies).
            found = await asyncio.to_thread(self.auth.authenticate, cast(Request, conn))
        if found is None:
            hint = "send `Authorization: Bearer cg_...`, or a fresh `ticket` from POST /api/v1/events/ticket"
            raise Refused(401, "unauthenticated", "the stream needs a credential", hint)
        if not found.role.allows(Role.VIEWER):
            raise Refused(403, "forbidden", "your role may not read events", "ask a workspace admin")
        return found

    async def check_subscription(self, subscription: Subscription) -> None:
        """A universe or run of another workspace (or none) is refused with one answer for both."""

        def owner() -> str | None:
            with self.db.engine.connect() as conn:
                if subscription.run is not None:
                    return run_workspace(conn, subscription.run)
                if subscription.universe is not None:
                    return universe_workspace(conn, subscription.universe)
                return subscription.workspace

        if await asyncio.to_thread(owner) != subscription.workspace:
            raise Refused(404, "not_found", "no such universe or run in your workspace",
                          "check the id; subscriptions are limited to your workspace")  # fmt: skip

    # --- while open ------------------------------------------------------------------------------------

    async def still_valid(self, conn: HTTPConnection, caller: Principal) -> bool:
        """Whether the credential the stream was opened with still stands (revoked, expired, user
        disabled or removed: the stream closes)."""

        def check() -> bool:
            if caller.via == "token":
                return self._token_alive(caller)
            again = self.auth.authenticate(cast(Request, conn))
            return again is not None and again.credential_id == caller.credential_id

        return await asyncio.to_thread(check)

    def _token_alive(self, caller: Principal) -> bool:
        with self.db.engine.connect() as conn:
            row = conn.execute(
                select(api_tokens.c.expires_at)
                .join(users, users.c.id == api_tokens.c.user_id)
                .join(memberships, (memberships.c.user_id == api_tokens.c.user_id)
                      & (memberships.c.workspace_id == api_tokens.c.workspace_id))
                .where(api_tokens.c.id == caller.credential_id, api_tokens.c.revoked_at.is_(None),
                       users.c.disabled_at.is_(None))
            ).one_or_none()  # fmt: skip
        return row is not None and (row.expires_at is None or row.expires_at > self.now())

    async def items(self, subscriber: Subscriber, after: int | None) -> AsyncIterator[Envelope | None]:
        """The subscriber's events in id order: first the backlog after `after`, then live ones. None
        every `recheck_s` without an event (a moment to re-check the credential). Raises Overflow."""
        cursor = after
        while cursor is not None and cursor < subscriber.live_from:
            page = await self.feed.backlog(subscriber, cursor)
            if not page:
                break
            for event in page:
                yield event
            cursor = page[-1].id
            yield None
        while True:
            if subscriber.overflowed.is_set():
                raise Overflow
            try:
                event = await asyncio.wait_for(subscriber.queue.get(), self.recheck_s)
            except TimeoutError:
                yield None
                continue
            yield event


def frame(event: Envelope) -> str:
    return json.dumps(event.to_json(), separators=(",", ":"), default=str)


def sse_frame(event: Envelope) -> bytes:
    return f"id: {event.id}\nevent: {event.type}\ndata: {frame(event)}\n\n".encode()


async def pump_websocket(
    streams: EventStreams, websocket: WebSocket, caller: Principal, subscriber: Subscriber, after: int | None
) -> None:
    """Send events until the client goes, its credential stops, it sends too much, or it falls behind."""
    last_sent = after if after is not None else subscriber.live_from

    async def send() -> tuple[int, str]:
        nonlocal last_sent
        cursor = after
        while cursor is not None and cursor < subscriber.live_from:
            page = await streams.feed.backlog(subscriber, cursor)
            if not page:
                break
            for event in page:
                await websocket.send_text(frame(event))
                last_sent = cursor = event.id
        while True:
            # A bare get (no timeout wrapper) wakes in one loop step; the watch below does the timing.
            ready = [await subscriber.queue.get()]
            while not subscriber.queue.empty():
                ready.append(subscriber.queue.get_nowait())
            if subscriber.overflowed.is_set():
                raise Overflow
            for event in ready:
                await websocket.send_text(frame(event))
                last_sent = event.id

    async def watch() -> tuple[int, str]:
        while True:
            await asyncio.sleep(streams.recheck_s)
            if subscriber.overflowed.is_set():  # also while a send to a stalled client hangs
                raise Overflow
            if not await streams.still_valid(websocket, caller):
                return CLOSE_POLICY, "credential revoked or expired"

    async def receive() -> tuple[int, str]:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return 0, ""
            text, data = message.get("text"), message.get("bytes")
            size = len(text.encode()) if text is not None else len(data or b"")
            if size > MAX_CLIENT_FRAME:
                return CLOSE_TOO_BIG, "frames are limited to 1 MiB"

    tasks = [asyncio.create_task(send()), asyncio.create_task(receive()), asyncio.create_task(watch())]
    code, reason = CLOSE_INTERNAL, "stream ended"
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finished = done.pop()
        try:
            code, reason = finished.result()
        except Overflow:
            code, reason = CLOSE_TRY_LATER, f"too slow: reconnect with after={last_sent}"
        except Exception:
            if tasks[1].done():  # the client went away while we were sending
                code = 0
            else:
                log.exception("event stream failed")
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    if code:
        try:
            await asyncio.wait_for(websocket.close(code, reason), 5)
        except Exception:  # already gone, or not reading: nothing more to tell it
            log.debug("closing an event stream failed", exc_info=True)


async def sse_body(
    streams: EventStreams, request: Request, caller: Principal, subscriber: Subscriber, after: int | None
) -> AsyncIterator[bytes]:
    try:
        yield b"retry: 1000\n: connected\n\n"
        checked = beat = time.monotonic()
        async for item in streams.items(subscriber, after):
            if item is not None:
                yield sse_frame(item)
            now = time.monotonic()
            if now - checked >= streams.recheck_s:
                checked = now
                if await request.is_disconnected() or not await streams.still_valid(request, caller):
                    return
            if now - beat >= streams.heartbeat_s:
                beat = now
                yield b": keep-alive\n\n"
    except Overflow:
        yield b'event: overflow\ndata: {"detail": "too slow: reconnect with Last-Event-ID"}\n\n'
    finally:
        streams.feed.unsubscribe(subscriber)
