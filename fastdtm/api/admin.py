"""The console's JSON endpoints under `/api/admin/` (operator role): decode, call `Console`, encode.

No gid is ever part of a path (a gid may hold `/`, `?` or `%`): reads take `?gid=`, actions a JSON body.
Times are integers in ms (`*_ms`), for the page's own formatting; DTM's endpoints keep their RFC 3339.
"""

from __future__ import annotations

from typing import Any, Final

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from fastdtm import wire
from fastdtm.api.http import int_param, json_response, read_object, shown_as
from fastdtm.console import Console
from fastdtm.errors import Invalid
from fastdtm.models import MAX_TIME_MS, PAUSED_MS, Branch, Transaction, parse_gid
from fastdtm.notes import FAIL, SKIP, BranchError, Mark, Notes, can_fail, can_skip
from fastdtm.redaction import Redactor, hide_url_passwords
from fastdtm.states import TERMINAL, TransStatus, TransType
from fastdtm.store.base import ListQuery

ATTENTION_MAX_LIMIT: Final = 200
_STATUSES: Final = frozenset(str(s) for s in TransStatus)
_TYPES: Final = frozenset(str(t) for t in TransType)


def _console(request: Request) -> Console:
    console: Console = request.scope["state"]["console"]
    return console


def _text(body: dict[str, Any], name: str, *, required: bool = True) -> str:
    value = body.get(name, "")
    if not isinstance(value, str) or (required and not value):
        raise Invalid(f"'{name}' must be a non-empty string.")
    return value


async def transaction(request: Request) -> Response:
    gid = parse_gid(request.query_params.get("gid", ""))
    trans, branches, notes = await _console(request).detail(gid)
    shown = shown_as(request)
    return json_response(
        {
            "transaction": trans_view(trans, notes, shown),
            "branches": [branch_view(trans, i, b, notes, shown) for i, b in enumerate(branches)],
            "raw": {
                "transaction": wire.trans_json(trans, shown),
                "branches": [wire.branch_json(trans.gid, b, shown, protocol=trans.protocol) for b in branches],
            },
        }
    )


async def retry(request: Request) -> Response:
    gid = parse_gid(_text(await read_object(request), "gid"))
    return json_response({"gid": gid, "next_cron_time_ms": await _console(request).retry(gid)})


async def pause(request: Request) -> Response:
    gid = parse_gid(_text(await read_object(request), "gid"))
    changed = await _console(request).pause(gid)
    return json_response({"gid": gid, "paused": True, "changed": changed})


async def resume(request: Request) -> Response:
    gid = parse_gid(_text(await read_object(request), "gid"))
    await _console(request).resume(gid)
    return json_response({"gid": gid, "paused": False})


async def _mark(request: Request, action: str) -> Response:
    body = await read_object(request)
    gid = parse_gid(_text(body, "gid"))
    branch_id, op, reason = _text(body, "branch_id"), _text(body, "op"), _text(body, "reason", required=False)
    status = await _console(request).mark(gid, branch_id, op, action, reason)
    return json_response({"gid": gid, "branch_id": branch_id, "op": op, "status": str(status)})


async def skip(request: Request) -> Response:
    return await _mark(request, SKIP)


async def fail(request: Request) -> Response:
    return await _mark(request, FAIL)


async def attention(request: Request) -> Response:
    params = request.query_params
    limit = int_param(params.get("limit"), "limit", default=20, low=1, high=ATTENTION_MAX_LIMIT)
    found, position = await _console(request).attention(params.get("position", ""), limit)
    shown = shown_as(request)
    rows = []
    for trans, branches, notes in found:
        row = trans_view(trans, notes, shown)
        failing = [
            branch_view(trans, i, b, notes, shown)
            for i, b in enumerate(branches)
            if i in notes.errors and b.status is b.status.PREPARED
        ]
        rows.append({**row, "branches": failing})
    return json_response({"transactions": rows, "next_position": position})


async def bulk(request: Request) -> Response:
    body = await read_object(request)
    action = _text(body, "action")
    raw_filter = body.get("filter", {})
    if raw_filter is None:
        raw_filter = {}
    if not isinstance(raw_filter, dict):
        raise Invalid("'filter' must be an object.")
    selection = ListQuery(
        status=_optional_text(raw_filter, "status", _STATUSES),
        trans_type=_optional_text(raw_filter, "trans_type", _TYPES),
        create_from_ms=_optional_ms(raw_filter, "create_from_ms"),
        create_to_ms=_optional_ms(raw_filter, "create_to_ms"),
    )
    confirm = body.get("confirm")
    if confirm is not None and (not isinstance(confirm, int) or isinstance(confirm, bool) or confirm < 0):
        raise Invalid("'confirm' must be the count the preview showed.")
    result = await _console(request).bulk(action, selection, confirm)
    out: dict[str, Any] = {"action": action, "count": result.count, "capped": result.capped, "sample": result.sample}
    if confirm is not None:
        out |= {"done": result.done, "refused": result.refused}
    return json_response(out)


def _optional_text(body: dict[str, Any], name: str, allowed: frozenset[str]) -> str:
    value = body.get(name) or ""
    if not isinstance(value, str) or (value and value not in allowed):
        raise Invalid(f"filter '{name}' must be one of {', '.join(sorted(allowed))}.")
    return value


def _optional_ms(body: dict[str, Any], name: str) -> int:
    value = body.get(name) or 0
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_TIME_MS:
        raise Invalid(f"filter '{name}' must be a time in ms.")
    return value


async def stats(request: Request) -> Response:
    return json_response(await _console(request).stats())


async def nodes(request: Request) -> Response:
    return json_response(await _console(request).nodes())


def trans_view(trans: Transaction, notes: Notes, shown: Redactor | None) -> dict[str, Any]:
    finished = trans.status in TERMINAL
    options = trans.options.to_json()
    if shown is not None:
        options = shown.options(options)
    hide = hide_url_passwords if shown is not None else str
    return {
        "gid": trans.gid,
        "trans_type": str(trans.trans_type),
        "status": str(trans.status),
        "protocol": trans.protocol,
        "create_time_ms": trans.create_ms,
        "update_time_ms": trans.update_ms,
        "finish_time_ms": trans.finish_ms or None,
        "rollback_time_ms": trans.rollback_ms or None,
        "next_cron_time_ms": None if finished or trans.next_cron_ms >= PAUSED_MS else trans.next_cron_ms or None,
        "next_cron_interval_s": trans.next_cron_interval_ms // 1000,
        "rollback_reason": hide(trans.rollback_reason),
        "custom_data": trans.custom_data,
        "query_prepared": hide(trans.query_prepared),
        "options": options,
        "paused": bool(notes.paused_ms) and not finished,
        "paused_at_ms": notes.paused_ms or None,
        "retries": notes.retries,
        # History once finished: it no longer fails (its retries stay, as a record).
        "failing_since_ms": None if finished else notes.failing_since_ms or None,
        "held_until_ms": notes.held_until_ms or None,
        "finished": finished,
    }


def branch_view(trans: Transaction, index: int, branch: Branch, notes: Notes, shown: Redactor | None) -> dict[str, Any]:
    return {
        "index": index,
        "branch_id": branch.branch_id,
        "op": branch.op,
        "url": hide_url_passwords(branch.url) if shown is not None else branch.url,
        "status": str(branch.status),
        "create_time_ms": branch.create_ms,
        "finish_time_ms": branch.finish_ms or None,
        "data": branch.data,
        "last_error": _error(notes.errors.get(index)),
        "operator": _mark_view(notes.marks.get(index)),
        "can_skip": can_skip(trans, branch),
        "can_fail": can_fail(trans, branch),
    }


def _error(error: BranchError | None) -> dict[str, Any] | None:
    if error is None:
        return None
    return {"at_ms": error.at_ms, "outcome": error.outcome, "code": error.code, "detail": error.detail}


def _mark_view(mark: Mark | None) -> dict[str, Any] | None:
    if mark is None:
        return None
    return {"action": mark.action, "reason": mark.reason, "at_ms": mark.at_ms}


routes = [
    Route("/transaction", transaction, methods=["GET"]),
    Route("/retry", retry, methods=["POST"]),
    Route("/pause", pause, methods=["POST"]),
    Route("/resume", resume, methods=["POST"]),
    Route("/skip", skip, methods=["POST"]),
    Route("/fail", fail, methods=["POST"]),
    Route("/attention", attention, methods=["GET"]),
    Route("/bulk", bulk, methods=["POST"]),
    Route("/stats", stats, methods=["GET"]),
    Route("/nodes", nodes, methods=["GET"]),
]
