"""The `/api/dtmsvr/*` routes of DTM's HTTP API: decode, call the service, encode."""

from __future__ import annotations

from typing import Final

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from fastdtm import __version__, wire
from fastdtm.api.http import int_param, json_response, read_object, shown_as, success
from fastdtm.errors import BadRequest
from fastdtm.models import MAX_TIME_MS, BranchRequest, TransRequest, parse_gid
from fastdtm.service import Service, new_gid
from fastdtm.store.base import ListQuery

#: resetCronTime's `timeout`: how far ahead (s) a transaction may be scheduled and still be left alone.
MAX_RESET_AHEAD: Final = 10 * 365 * 86_400
#: The most transactions one resetCronTime moves, one /all page shows.
RESET_CRON_MAX_LIMIT: Final = 100_000
ALL_MAX_LIMIT: Final = 1000


def _service(request: Request) -> Service:
    # The lifespan state as a plain dict: `request.state` wraps it in a new object at every access.
    service: Service = request.scope["state"]["service"]
    return service


async def _trans_request(request: Request) -> TransRequest:
    return TransRequest.parse(await read_object(request))


async def version(request: Request) -> Response:
    return json_response({"version": f"v{__version__}-fastdtm"})


async def new_gid_handler(request: Request) -> Response:
    return json_response({"gid": new_gid(), "dtm_result": "SUCCESS"})


async def prepare(request: Request) -> Response:
    await _service(request).prepare(await _trans_request(request))
    return success()


async def submit(request: Request) -> Response:
    await _service(request).submit(await _trans_request(request))
    return success()


async def abort(request: Request) -> Response:
    await _service(request).abort(await _trans_request(request))
    return success()


async def force_stop(request: Request) -> Response:
    await _service(request).force_stop((await _trans_request(request)).gid)
    return success()


async def reset_next_cron_time(request: Request) -> Response:
    await _service(request).reset_next_cron_time((await _trans_request(request)).gid)
    return success()


async def register_branch(request: Request) -> Response:
    await _service(request).register_branch(BranchRequest.parse(await read_object(request)))
    return success()


async def prepare_workflow(request: Request) -> Response:
    trans, branches = await _service(request).prepare_workflow(await _trans_request(request))
    shown = shown_as(request)
    return json_response(
        {
            "transaction": wire.trans_json(trans, shown),
            "progresses": [wire.branch_json(trans.gid, b, shown, protocol=trans.protocol) for b in branches],
        }
    )


async def reset_cron_time(request: Request) -> Response:
    params = request.query_params
    timeout = params.get("timeout")
    moved, more = await _service(request).reset_cron_time(
        int_param(timeout, "timeout", default=0, high=MAX_RESET_AHEAD) if timeout else None,
        int_param(params.get("limit"), "limit", default=100, low=1, high=RESET_CRON_MAX_LIMIT),
    )
    return json_response({"has_remaining": more, "succeed_count": moved})


async def query(request: Request) -> Response:
    gid = request.query_params.get("gid", "")
    if not gid:
        raise BadRequest("no gid specified: use /query?gid=<gid>.")
    loaded = await _service(request).query_notes(parse_gid(gid))
    if loaded is None:
        return json_response({"transaction": None, "branches": []})
    trans, branches, notes = loaded
    shown = shown_as(request)
    marks = notes.marks
    return json_response(
        {
            "transaction": wire.trans_json(trans, shown),
            "branches": [
                wire.branch_json(trans.gid, b, shown, protocol=trans.protocol, mark=marks.get(i))
                for i, b in enumerate(branches)
            ],
        }
    )


async def all_transactions(request: Request) -> Response:
    params = request.query_params
    service = _service(request)
    shown = shown_as(request)
    if gid := params.get("gid"):
        loaded = await service.query(parse_gid(gid))
        # DTM's reply to a gid: null when unknown, and the position given echoed back.
        found = [wire.trans_json(loaded[0], shown)] if loaded else None
        return json_response({"transactions": found, "next_position": params.get("position", "")})
    page = await service.list_transactions(
        ListQuery(
            limit=int_param(params.get("limit"), "limit", default=100, low=1, high=ALL_MAX_LIMIT),
            position=params.get("position", ""),
            status=params.get("status", ""),
            trans_type=params.get("transType", ""),
            create_from_ms=int_param(params.get("createTimeStart"), "createTimeStart", default=0, high=MAX_TIME_MS),
            create_to_ms=int_param(params.get("createTimeEnd"), "createTimeEnd", default=0, high=MAX_TIME_MS),
        )
    )
    transactions = [wire.trans_json(t, shown) for t in page.transactions]
    return json_response({"transactions": transactions, "next_position": page.next_position})


routes = [
    Route("/version", version, methods=["GET"]),
    Route("/newGid", new_gid_handler, methods=["GET", "POST"]),
    Route("/prepare", prepare, methods=["POST"]),
    Route("/submit", submit, methods=["POST"]),
    Route("/abort", abort, methods=["POST"]),
    Route("/forceStop", force_stop, methods=["POST"]),
    Route("/resetNextCronTime", reset_next_cron_time, methods=["POST"]),
    Route("/registerBranch", register_branch, methods=["POST"]),
    # Old SDK names (the Node and PHP SDKs still call registerTccBranch).
    Route("/registerTccBranch", register_branch, methods=["POST"]),
    Route("/registerXaBranch", register_branch, methods=["POST"]),
    Route("/prepareWorkflow", prepare_workflow, methods=["POST"]),
    Route("/resetCronTime", reset_cron_time, methods=["GET", "POST"]),
    Route("/query", query, methods=["GET"]),
    Route("/all", all_transactions, methods=["GET"]),
]
