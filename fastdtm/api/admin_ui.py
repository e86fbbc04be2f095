"""The routes that serve the operator console (`fastdtm/admin/static/`): `/admin` answers the page, and
`/admin/static/{name}` its assets. The page and its assets hold no secret, so they are open; the JSON it
calls (`/api/admin/*`, DTM's operator endpoints) asks for the operator token itself.

Only the files the package ships are served: a requested name is looked up among the names of the
directory listing, never joined onto a path, so no name can reach outside it.
"""

from __future__ import annotations

import hashlib
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Final

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

#: The package whose `static/` directory holds the console.
PACKAGE: Final = "fastdtm.admin"
INDEX: Final = "index.html"
CONTENT_TYPES: Final = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}
#: The page loads nothing but its own files and calls nothing but this node. Transaction data is hostile
#: input (a gid or a branch URL may hold markup); the page never parses it as HTML, and should a bug let some
#: through, no inline script or style, no other origin and no framing would run it.
CSP: Final = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
#: Every reply asks the browser to check with the node before reusing its copy (an ETag makes that a 304):
#: the asset names carry no version, and after an upgrade an old console.js must not meet the new page.
HEADERS: Final = {
    "Cache-Control": "no-cache",
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def _static() -> Traversable:
    return resources.files(PACKAGE).joinpath("static")


def _content_type(name: str) -> str | None:
    dot = name.rfind(".")
    return CONTENT_TYPES.get(name[dot:]) if dot > 0 else None


def _read(name: str) -> bytes | None:
    """The file `name` of the static directory, if the listing has a file of that name and a known type."""
    if _content_type(name) is None:
        return None
    for entry in _static().iterdir():
        if entry.name == name and entry.is_file():
            return entry.read_bytes()
    return None


def _serve(request: Request, name: str) -> Response:
    body = _read(name)
    content_type = _content_type(name)
    if body is None or content_type is None:
        return PlainTextResponse("Not Found", 404, headers={"Content-Security-Policy": CSP})
    etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    headers = {**HEADERS, "ETag": etag}
    if etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    return Response(body, headers=headers, media_type=content_type)


async def index(request: Request) -> Response:
    return _serve(request, INDEX)


async def asset(request: Request) -> Response:
    name: str = request.path_params["name"]
    return _serve(request, name)


routes = [
    Route("/admin", index, methods=["GET", "HEAD"]),
    Route("/admin/", index, methods=["GET", "HEAD"]),
    # `{name}` matches no "/": one level, the names _read finds in the listing.
    Route("/admin/static/{name}", asset, methods=["GET", "HEAD"]),
]
