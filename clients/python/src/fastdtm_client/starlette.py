"""Starlette / FastAPI glue for branch services: `branch_info` parses DTM's query parameters (a FastAPI
dependency, or a plain call in Starlette), `exception_handlers()` turns `Failure` into 409 FAILURE and
`Ongoing` into 425 ONGOING, and `branch_endpoint` makes a Starlette endpoint of a plain async function that
returns on success (200 SUCCESS) or raises."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any, Final

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .branch import BranchInfo, InvalidBranchQuery
from .errors import Failure, Ongoing
from .results import FAILURE, ONGOING, SUCCESS

#: The body of a successful branch reply; FastAPI handlers can return it as is.
SUCCESS_REPLY: Final[Mapping[str, str]] = {"dtm_result": SUCCESS}

BranchHandler = Callable[[BranchInfo, Request], Awaitable[None]]
# The shape FastAPI's `exception_handlers` takes (and Starlette's accepts): a coroutine function.
ExceptionHandler = Callable[[Request, Any], Coroutine[Any, Any, Response]]


def branch_info(request: Request) -> BranchInfo:
    """The branch identity of this call; raises `InvalidBranchQuery` (a 400 with `exception_handlers()`)."""
    return BranchInfo.from_query(request.query_params)


def success() -> JSONResponse:
    return JSONResponse(dict(SUCCESS_REPLY))


def reply_for(exc: Exception) -> JSONResponse:
    """DTM's reply for an exception a branch raised; anything but Failure / Ongoing is a 500 (retried)."""
    if isinstance(exc, Failure):
        return JSONResponse({"dtm_result": FAILURE, "message": str(exc)}, status_code=409)
    if isinstance(exc, Ongoing):
        return JSONResponse({"dtm_result": ONGOING, "message": str(exc)}, status_code=425)
    if isinstance(exc, InvalidBranchQuery):
        return JSONResponse({"message": str(exc)}, status_code=400)
    return JSONResponse({"message": f"{type(exc).__name__}: {exc}"}, status_code=500)


async def _handle(request: Request, exc: Exception) -> Response:
    return reply_for(exc)


def exception_handlers() -> dict[int | type[Exception], ExceptionHandler]:
    """For ``Starlette(exception_handlers=...)`` or ``FastAPI(exception_handlers=...)``."""
    return {Failure: _handle, Ongoing: _handle, InvalidBranchQuery: _handle}


def branch_endpoint(handler: BranchHandler) -> Callable[[Request], Awaitable[Response]]:
    """A Starlette endpoint calling ``await handler(branch, request)``: 200 SUCCESS when it returns, 409 on
    `Failure`, 425 on `Ongoing`, 500 on any other exception (DTM retries those)."""

    async def endpoint(request: Request) -> Response:
        try:
            await handler(branch_info(request), request)
        except Exception as exc:
            return reply_for(exc)
        return success()

    return endpoint
