"""`GET /metrics`: the Prometheus exposition of this process's metrics (telemetry/metrics.py).

It needs an API token with any role in the workspace, like every other route, unless the operator set
COSMOGEN_METRICS_PUBLIC=1 for a scraper on a private network. Metrics hold no secrets and no names (labels
are providers, capabilities and status classes), but they do tell how busy the studio is.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from starlette.responses import Response

from cosmogen.api.problems import Problem, problem_responses
from cosmogen.api.security import caller_of
from cosmogen.runtime.service import Runtime
from cosmogen.telemetry.metrics import CONTENT_TYPE, Metrics

router = APIRouter(tags=["operations"])


@router.get(
    "/metrics",
    summary="Prometheus metrics of this process (an API token, or COSMOGEN_METRICS_PUBLIC=1)",
    response_class=Response,
    responses={
        200: {"content": {CONTENT_TYPE: {"schema": {"type": "string"}}}},
        **problem_responses(401, 404, 429),
    },
    # Off when COSMOGEN_METRICS_PUBLIC=1; the spec describes the default.
    openapi_extra={"security": [{"HTTPBearer": []}, {"APIKeyCookie": []}]},
)
async def metrics(request: Request) -> Response:
    runtime: Runtime = request.app.state.runtime
    found = runtime.telemetry
    if not isinstance(found, Metrics):
        raise Problem(404, "metrics_off", "this process records no metrics",
                      hint="metrics are recorded by `cosmogen serve`")  # fmt: skip
    if not found.public:
        await caller_of(request)  # any role: 401 without a valid token
    # Off the event loop: the scrape counts runs in the database.
    return Response(await asyncio.to_thread(found.render), media_type=CONTENT_TYPE)
