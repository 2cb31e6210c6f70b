"""API-08: the event stream's WebSocket handshake and lifetime, against `cosmogen serve` over real sockets.

Refused before any data frame (the server answers the upgrade with 403, so no frame can follow): a
foreign Origin (even with a valid token), no Origin with only a ticket, no credential at all, a ticket
used twice, a ticket older than 30 s, a subscription to another workspace's run or universe (and to a
run that does not exist: the same answer). Open sockets: closed with 1008 within 5 s of their token's
revocation (header and ticket alike); a client frame over 1 MiB closes with 1009 (1 MiB exactly is fine).
SSE: a foreign Origin and a foreign run are refused the same way (403 / 404), never streamed.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.integration.api import stream_client as sc
from tests.integration.api.helpers import call
from tests.integration.conftest import EXAMPLES, serving
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.typing import Origin

from cosmogen.identity.tokens import revoke_token
from cosmogen.store.tables import api_tokens, utcnow

Served = tuple[str, Any]


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    with serving(tmp_path) as running:
        yield running


def _ticket(url: str, token: str) -> str:
    status, _, body = call(url + "/api/v1/events/ticket", "POST", token=token)
    assert status == 200 and body["expires_in"] == 30, body
    return str(body["ticket"])


async def _refused(uri: str, **kwargs: Any) -> int:
    """The handshake's HTTP status; fails if a socket opened."""
    try:
        async with connect(uri, proxy=None, open_timeout=10, **kwargs) as ws:
            raise AssertionError(f"the handshake was accepted (subprotocol {ws.subprotocol})")
    except InvalidStatus as refused:
        return refused.response.status_code


async def _opens(uri: str, **kwargs: Any) -> None:
    async with connect(uri, proxy=None, open_timeout=10, **kwargs):
        pass


def _revoke_all(data_dir: Path, user_email_prefix: str) -> None:
    from sqlalchemy import select

    from cosmogen.store.tables import users

    db = sc.open_store(data_dir)
    try:
        with db.engine.begin() as conn:
            ids = conn.execute(
                select(api_tokens.c.id)
                .join(users, users.c.id == api_tokens.c.user_id)
                .where(users.c.email.like(f"{user_email_prefix}%"))
            ).scalars()
            for token_id in list(ids):
                assert revoke_token(token_id, utcnow())(conn)
    finally:
        db.close()


def test_handshakes_refused_before_any_frame(served: Served, tmp_path: Path) -> None:
    url, _ = served
    data = tmp_path / "cosmogen-data"
    token = sc.member(data, "ada@example.com")
    old_ticket = _ticket(url, token)  # for the age check at the end
    minted_at = time.monotonic()
    ws = sc.ws_url(url)
    own = url  # the server's own origin: http://127.0.0.1:<port>

    # Another workspace with a run of its own.
    other = sc.member(data, "eve@example.com", workspace="other")
    theirs = sc.save_universe(url, other, json.loads((EXAMPLES / "banking.json").read_text()))
    their_run = sc.start_run(url, other, theirs)
    mine = sc.save_universe(url, token, json.loads((EXAMPLES / "banking.json").read_text()))

    async def checks() -> None:
        # The good cases open, so the refusals below are about the one thing each changes.
        await _opens(ws, additional_headers=sc.bearer(token))
        await _opens(ws, additional_headers=sc.bearer(token), origin=own)
        await _opens(ws + f"?ticket={_ticket(url, token)}", origin=own)
        await _opens(ws + f"?universe={mine}", additional_headers=sc.bearer(token))

        assert await _refused(ws, additional_headers=sc.bearer(token), origin="https://evil.example") == 403
        assert await _refused(ws, additional_headers=sc.bearer(token), origin="http://127.0.0.1:1") == 403
        assert await _refused(ws + f"?ticket={_ticket(url, token)}") == 403  # no Origin, only a ticket
        assert await _refused(ws, origin=own) == 403  # no credential
        assert await _refused(ws + "?ticket=cgt_made-up", origin=own) == 403
        assert await _refused(ws, additional_headers=sc.bearer("cg_" + "x" * 43)) == 403
        twice = _ticket(url, token)
        await _opens(ws + f"?ticket={twice}", origin=own)
        assert await _refused(ws + f"?ticket={twice}", origin=own) == 403
        # Another workspace's run or universe, or no such run: one answer.
        for query in (f"run={their_run}", f"universe={theirs}", "run=01NOSUCHRUN", "after=-1", "bogus=1"):
            assert await _refused(ws + "?" + query, additional_headers=sc.bearer(token)) == 403, query
        # The other workspace's member does see its own run.
        await _opens(ws + f"?run={their_run}", additional_headers=sc.bearer(other))

    asyncio.run(checks())

    # SSE: refused the same way, with a problem document and no stream.
    sse = url + "/api/v1/events/sse"
    status, _, body = call(sse, token=token, headers={"Origin": "https://evil.example"})
    assert status == 403 and body["code"] == "foreign_origin"
    status, _, body = call(sse + f"?run={their_run}", token=token)
    assert status == 404 and body["code"] == "not_found"
    assert call(sse)[0] == 401

    # A ticket older than 30 s (minted above, never used) is refused.
    time.sleep(max(0.0, 31 - (time.monotonic() - minted_at)))
    assert asyncio.run(_refused(ws + f"?ticket={old_ticket}", origin=own)) == 403


async def _closed_within(socket: ClientConnection, seconds: float) -> tuple[int | None, float]:
    started = time.monotonic()

    async def drain() -> None:
        while True:  # until the server closes (a TimeoutError past `seconds` fails the test)
            await asyncio.wait_for(socket.recv(), seconds - (time.monotonic() - started))

    with pytest.raises(ConnectionClosed) as closed:
        await drain()
    assert closed.value.rcvd is not None, "no close frame from the server"
    return closed.value.rcvd.code, time.monotonic() - started


@pytest.mark.parametrize("via", ["header", "ticket"])
def test_revoking_the_token_closes_the_socket_within_5_s(served: Served, tmp_path: Path, via: str) -> None:
    url, _ = served
    data = tmp_path / "cosmogen-data"
    token = sc.member(data, f"rev-{via}@example.com")
    ws = sc.ws_url(url)

    async def scenario() -> tuple[int | None, float]:
        kwargs: dict[str, Any] = (
            {"additional_headers": sc.bearer(token)} if via == "header" else {"origin": url}
        )
        uri = ws if via == "header" else ws + f"?ticket={_ticket(url, token)}"
        async with connect(uri, proxy=None, **kwargs) as socket:
            await asyncio.sleep(1.5)  # open and idle for a while: no close yet
            assert socket.close_code is None
            await asyncio.to_thread(_revoke_all, data, f"rev-{via}")
            return await _closed_within(socket, 5.0)

    code, after = asyncio.run(scenario())
    assert code == 1008 and after <= 5.0, (code, after)
    assert call(url + "/api/v1/me", token=token)[0] == 401


def test_frames_over_1_mib_are_closed_with_1009(served: Served, tmp_path: Path) -> None:
    url, _ = served
    token = sc.member(tmp_path / "cosmogen-data", "big@example.com")

    async def scenario() -> tuple[int | None, bool]:
        async with connect(sc.ws_url(url), proxy=None, additional_headers=sc.bearer(token)) as socket:
            await socket.send("x" * (1 << 20))  # exactly 1 MiB: allowed
            await socket.send(b"\x00" * (1 << 20))
            await asyncio.sleep(0.5)
            alive = socket.close_code is None
            await socket.send("y" * (2 << 20))
            code, _ = await _closed_within(socket, 5.0)
            return code, alive

    code, alive_after_1_mib = asyncio.run(scenario())
    assert alive_after_1_mib and code == 1009


@pytest.mark.parametrize("via", ["cookie", "ticket"])
def test_a_browser_session_opens_the_stream_and_signing_out_closes_it(
    served: Served, tmp_path: Path, via: str
) -> None:
    """A signed-in browser: its session cookie (or a ticket it asked for with it) opens the stream from
    our own Origin only; signing out closes the open socket within 5 s."""
    from tests.integration.api.sessions_support import COOKIE, login, member_with_password

    url, _ = served
    member_with_password(tmp_path / "cosmogen-data", "web@example.com", "a long enough password")
    browser = login(url, "web@example.com", "a long enough password")
    cookie = {"Cookie": f"{COOKIE}={browser.cookie}"}
    ws = sc.ws_url(url)

    async def scenario() -> tuple[int | None, float]:
        assert await _refused(ws, additional_headers=cookie, origin="https://evil.example") == 403
        assert await _refused(ws, additional_headers=cookie) == 403  # a cookie but no Origin
        uri = ws
        if via == "ticket":
            status, _, body = await asyncio.to_thread(browser.call, "/api/v1/events/ticket", "POST")
            assert status == 200, body
            uri = ws + f"?ticket={body['ticket']}"
        async with connect(uri, proxy=None, additional_headers=cookie, origin=Origin(url)) as socket:
            await asyncio.sleep(1.5)
            assert socket.close_code is None
            status, _, _ = await asyncio.to_thread(browser.call, "/api/v1/session", "DELETE")
            assert status == 204
            return await _closed_within(socket, 5.0)

    code, after = asyncio.run(scenario())
    assert code == 1008 and after <= 5.0, (code, after)
