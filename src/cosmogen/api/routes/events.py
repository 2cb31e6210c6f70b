"""The live event stream: `GET /api/v1/events/ws` (WebSocket), `GET /api/v1/events/sse` (Server-Sent
Events) and `POST /api/v1/events/ticket` (a 30-second single-use ticket for browsers).

Query: `universe=<id>` or `run=<id>` (default: the caller's whole workspace), `after=<event id>` to
resume (SSE also reads `Last-Event-ID`), `ticket=<ticket>` instead of an Authorization header. Each
message is one envelope `{v, id, type, workspace, universe, run, seq, at, data}` (domain/events.py).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Security, WebSocket
from fastapi.responses import StreamingResponse
from fastapi.security import APIKeyQuery, HTTPAuthorizationCredentials
from pydantic import BaseModel

from cosmogen.api.problems import Problem, problem_responses
from cosmogen.api.security import BEARER, COOKIE, Principal, principal
from cosmogen.api.ws import CLOSE_POLICY, TICKET_TTL_S, EventStreams, Refused, pump_websocket, sse_body
from cosmogen.domain.events import BadSubscription, parse_subscription

router = APIRouter(prefix="/api/v1/events", tags=["events"])
# The stream's third credential (a browser's EventSource cannot send a header): for the spec only, the
# route checks it itself (api/ws.py).
_TICKET = APIKeyQuery(
    name="ticket", auto_error=False, description="a single-use ticket from POST /api/v1/events/ticket"
)


class Ticket(BaseModel):
    ticket: str
    expires_in: int


@router.post(
    "/ticket",
    response_model=Ticket,
    summary="A single-use ticket to open the stream (30 s)",
    responses=problem_responses(401, 403, 429),
)
async def ticket(request: Request, caller: Annotated[Principal, Depends(principal)]) -> Ticket:
    streams: EventStreams = request.app.state.event_streams
    try:
        minted = streams.tickets.mint(caller)
    except Refused as refused:
        raise Problem(refused.status, refused.code, refused.detail, hint=refused.hint) from None
    return Ticket(ticket=minted, expires_in=int(TICKET_TTL_S))


@router.websocket("/ws")
async def events_ws(websocket: WebSocket) -> None:
    streams: EventStreams = websocket.app.state.event_streams
    params = dict(websocket.query_params)
    try:
        streams.check_origin(websocket, websocket=True)
        caller = await streams.authenticate(websocket, params)
        subscription, after = parse_subscription(caller.workspace_id, params)
        await streams.check_subscription(subscription)
    except (Refused, BadSubscription):
        # Before accepting: the server answers the handshake with 403 and no frame is ever sent.
        await websocket.close(CLOSE_POLICY)
        return
    subscriber = await streams.feed.subscribe(subscription)
    try:
        await websocket.accept()
        await pump_websocket(streams, websocket, caller, subscriber, after)
    finally:
        streams.feed.unsubscribe(subscriber)


@router.get(
    "/sse",
    summary="The event stream as Server-Sent Events",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "Events as they happen; `data` is one envelope as JSON (see docs/events.md)",
            # The schema of one event of the stream, as Server-Sent Events parse it.
            "content": {
                "text/event-stream": {
                    "schema": {
                        "type": "object",
                        "properties": {
                            "id": {"type": "string"},
                            "event": {"type": "string"},
                            "data": {"type": "string", "contentMediaType": "application/json"},
                            "retry": {"type": "integer"},
                        },
                    }
                }
            },
        },
        **problem_responses(401, 403, 404, 422, 429),
    },
    # It reads its query itself, so the spec names it here.
    openapi_extra={
        "parameters": [
            {
                "name": name,
                "in": "query",
                "required": False,
                "schema": {"type": "string"},
                "description": text,
            }
            for name, text in (
                ("universe", "only this universe's events"),
                ("run", "only this run's events"),
                ("level", "the least level wanted: info (everything, the default), warning or error"),
                ("after", "resume after this event id (or send Last-Event-ID)"),
            )
        ],
    },
)
async def events_sse(
    request: Request,
    _token: Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)],
    _session: Annotated[str | None, Security(COOKIE)],
    _ticket: Annotated[str | None, Security(_TICKET)],
) -> StreamingResponse:
    streams: EventStreams = request.app.state.event_streams
    params = dict(request.query_params)
    if "after" not in params and request.headers.get("last-event-id"):
        params["after"] = request.headers["last-event-id"]
    try:
        streams.check_origin(request, websocket=False)
        caller = await streams.authenticate(request, params)
        subscription, after = parse_subscription(caller.workspace_id, params)
        await streams.check_subscription(subscription)
    except Refused as refused:
        raise Problem(refused.status, refused.code, refused.detail, hint=refused.hint) from None
    except BadSubscription as bad:
        raise Problem(422, "invalid", str(bad), hint="fix the query string") from None
    subscriber = await streams.feed.subscribe(subscription)
    return StreamingResponse(
        sse_body(streams, request, caller, subscriber, after),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
