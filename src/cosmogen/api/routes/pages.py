"""The server's own pages before the studio: `/setup` (the owner's one-time setup, the link `cosmogen
serve` prints) and its static files. A fixed table of files, never a path from the request."""

from __future__ import annotations

from importlib.resources import files

from fastapi import APIRouter
from fastapi.responses import Response

from cosmogen.api.problems import Problem

router = APIRouter(include_in_schema=False)

_STATIC = {  # name -> media type
    "setup.js": "text/javascript; charset=utf-8",
    "pages.css": "text/css; charset=utf-8",
}
_NO_STORE = {"Cache-Control": "no-store"}


def _read(name: str) -> bytes:
    return files("cosmogen.api").joinpath("static", name).read_bytes()


@router.get("/setup")
async def setup_page() -> Response:
    # no-store: the page is fetched with the token in its fragment, and a cached copy helps nobody.
    return Response(_read("setup.html"), media_type="text/html; charset=utf-8", headers=_NO_STORE)


@router.get("/static/{name}")
async def static_file(name: str) -> Response:
    media_type = _STATIC.get(name)
    if media_type is None:
        raise Problem(404, "not_found", f"no static file {name[:60]!r}", hint="the pages link to what exists")
    return Response(_read(name), media_type=media_type, headers={"Cache-Control": "max-age=300"})
