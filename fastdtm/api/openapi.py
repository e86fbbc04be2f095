"""The OpenAPI 3.1 description of every route a node serves, served at `GET /api/openapi.json`.

Written as data, not derived from the handlers: the handlers read raw JSON for speed and say nothing a
generator could use. Two things keep it honest: the bounds the code enforces are taken from the code's
own constants (gid and branch_id patterns, the step cap, the KV and topic limits, the option ranges of
docs/compatibility.md, "Limits"), and `tests/api/test_openapi.py` checks that the document is valid
OpenAPI and names exactly the app's routes. A bound the code does not define is described by its type only.
"""

from __future__ import annotations

from typing import Final, TypeAlias

from starlette.requests import Request
from starlette.responses import Response

from fastdtm import __version__, wire
from fastdtm.api.admin import ATTENTION_MAX_LIMIT
from fastdtm.api.dtmsvr import ALL_MAX_LIMIT, MAX_RESET_AHEAD, RESET_CRON_MAX_LIMIT
from fastdtm.api.kv import DEFAULT_LIMIT as KV_DEFAULT_LIMIT, MAX_LIMIT as KV_MAX_LIMIT
from fastdtm.auth import ROUTES, Access
from fastdtm.console import BULK_ACTIONS
from fastdtm.kinds.msg import MAX_DELAY
from fastdtm.models import BRANCH_ID_PATTERN, GID_PATTERN, MAX_STEPS, MAX_TIME_MS, OPTION_LIMITS
from fastdtm.notes import MAX_REASON
from fastdtm.states import BranchStatus, TransStatus, TransType
from fastdtm.store.kv import MAX_CAT, MAX_KEY
from fastdtm.topics import MAX_REMARK, MAX_URL

Json: TypeAlias = "dict[str, Json] | list[Json] | str | int | float | bool | None"
JsonObject: TypeAlias = "dict[str, Json]"

DTM: Final = "/api/dtmsvr"
#: What the branch client can send as a header (RFC 9110 §5.1, §5.5), as its `check_header` checks it at
#: the door.
HEADER_NAME: Final = "^[!#$%&'*+\\-.^_`|~0-9A-Za-z]+$"
HEADER_VALUE: Final = "^[^\\x00-\\x08\\x0a-\\x1f\\x7f]*$"

#: The reply codes of DTM's handlers, each with its meaning (reference §2.3 and docs/compatibility.md).
ERROR_REPLIES: Final[dict[int, str]] = {
    400: "The body is not JSON, or not a JSON object; or a required query parameter is missing.",
    404: "No transaction (or topic, or subscriber) of that name.",
    409: "The stored state forbids it; the message ends with FAILURE (`dtm_result` FAILURE).",
    401: "With `--auth-file`: no token, or one the node does not know (docs/security.md).",
    403: "With `--auth-file`: the token's role may not call this (an operator's route).",
    413: "The body is over the node's `--max-body-bytes`.",
    415: "A POST whose Content-Type is a browser's simple one (form, multipart, text/plain): not JSON.",
    422: "Well-formed JSON or query, but a field or value is refused; nothing was written.",
    425: "Not finished yet (`dtm_result` ONGOING): `wait_result` and the round did not reach an outcome.",
    500: "The store failed, or the request found a server fault.",
    503: "The store does not answer.",
}


def _ref(name: str) -> JsonObject:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: JsonObject) -> JsonObject:
    return {"application/json": {"schema": schema}}


def _nullable(type_name: str, **more: Json) -> JsonObject:
    """A field DTM's Go decoder reads with null-is-empty: JSON `null` is the same as leaving it out."""
    return {"type": [type_name, "null"], **more}


def _operation(
    summary: str, codes: tuple[int, ...], ok: JsonObject | None = None, media: str = "application/json", **more: Json
) -> JsonObject:
    """An operation answering 200 with `ok` (DTM's `{"dtm_result": "SUCCESS"}` by default) or an error reply."""
    reply: JsonObject = {media: {"schema": ok or _ref("Success")}}
    responses: JsonObject = {"200": {"description": "Done.", "content": reply}}
    for code in codes:
        responses[str(code)] = {"$ref": f"#/components/responses/E{code}"}
    return {"summary": summary, **more, "responses": responses}


def _body(schema: str, summary: str, codes: tuple[int, ...], ok: JsonObject | None = None) -> JsonObject:
    body: JsonObject = {"required": True, "content": _json(_ref(schema))}
    return _operation(summary, codes, ok, requestBody=body)


def _query(name: str, schema: JsonObject, description: str, *, required: bool = False) -> JsonObject:
    return {"name": name, "in": "query", "required": required, "description": description, "schema": schema}


def _integer(low: int, high: int | None) -> JsonObject:
    schema: JsonObject = {"type": "integer", "minimum": low}
    if high is not None:
        schema["maximum"] = high
    return schema


def _limit(default: int, high: int) -> JsonObject:
    return {"type": "integer", "minimum": 1, "maximum": high, "default": default}


TRANS_CODES: Final = (400, 404, 409, 413, 422, 425, 500)
GID_CODES: Final = (400, 404, 409, 413, 422, 500)


def _dtmsvr_paths() -> JsonObject:
    trans = ("TransRequest", "GidRequest")
    register = _body("BranchRequest", "Register a branch of a prepared tcc, xa or workflow transaction.", GID_CODES)
    reset_cron = _operation(
        "Bring forward every unfinished transaction scheduled more than `timeout` seconds ahead.",
        (422, 500),
        _ref("ResetCronReply"),
        parameters=[
            _query("timeout", _integer(0, MAX_RESET_AHEAD), "Seconds ahead; default 3 x the default timeout."),
            _query("limit", _limit(100, RESET_CRON_MAX_LIMIT), "At most this many transactions."),
        ],
    )
    return {
        "/version": {"get": _operation("The server's version.", (), _ref("Version"))},
        "/newGid": {
            "get": _operation("A fresh gid.", (), _ref("NewGid")),
            "post": _operation("A fresh gid.", (), _ref("NewGid")),
        },
        "/prepare": {"post": _body(trans[0], "Store a transaction as prepared (msg, tcc, xa).", GID_CODES)},
        "/submit": {"post": _body(trans[0], "Submit a new or prepared transaction; finish a workflow.", TRANS_CODES)},
        "/abort": {
            "post": _body(trans[1], "Roll back a prepared tcc or xa transaction; fail a prepared msg.", TRANS_CODES)
        },
        "/forceStop": {"post": _body(trans[1], "Fail an unfinished transaction now, without compensation.", GID_CODES)},
        "/resetNextCronTime": {"post": _body(trans[1], "Retry one transaction at once.", GID_CODES)},
        "/registerBranch": {"post": register},
        "/registerTccBranch": {"post": register},
        "/registerXaBranch": {"post": register},
        "/prepareWorkflow": {
            "post": _body(trans[0], "Start a workflow, or read it with its progress.", GID_CODES, _ref("Workflow"))
        },
        "/resetCronTime": {"get": reset_cron, "post": reset_cron},
        "/query": {
            "get": _operation(
                "One transaction and its branches; `transaction` is null for an unknown gid.",
                (400, 422, 500),
                _ref("QueryReply"),
                parameters=[_query("gid", _ref("Gid"), "The transaction.", required=True)],
            )
        },
        "/all": {"get": _all()},
        **_kv_paths(),
    }


def _all() -> JsonObject:
    statuses: JsonObject = {"type": "string", "enum": [str(s) for s in TransStatus]}
    types: JsonObject = {"type": "string", "enum": [str(t) for t in TransType]}
    millis = _integer(0, MAX_TIME_MS)
    return _operation(
        "A page of transactions, newest data included, shard by shard.",
        (422, 500),
        _ref("AllReply"),
        parameters=[
            _query("gid", _ref("Gid"), "Only this transaction."),
            _query("position", {"type": "string"}, "The `next_position` of the previous page; empty: the start."),
            _query("limit", _limit(100, ALL_MAX_LIMIT), "Page size."),
            _query("status", statuses, "Only transactions in this status."),
            _query("transType", types, "Only transactions of this type."),
            _query("createTimeStart", millis, "Created at or after (ms since the epoch)."),
            _query("createTimeEnd", millis, "Created at or before (ms since the epoch); 0: no bound."),
        ],
    )


def _kv_paths() -> JsonObject:
    topic: JsonObject = {"type": "string", "minLength": 1, "maxLength": MAX_KEY}
    url: JsonObject = {"type": "string", "minLength": 1, "maxLength": MAX_URL}
    cat: JsonObject = {"type": "string", "minLength": 1, "maxLength": MAX_CAT, "pattern": "^[^:]*$"}
    kv_codes = (422, 500)
    return {
        "/subscribe": {
            "get": _operation(
                "Subscribe a URL to a topic (msg steps `topic://<name>` fan out to its subscribers).",
                (409, 422, 500),
                parameters=[
                    _query("topic", topic, "Topic name.", required=True),
                    _query("url", url, "Subscriber URL.", required=True),
                    _query("remark", {"type": "string", "maxLength": MAX_REMARK}, "Free text."),
                ],
            )
        },
        "/unsubscribe": {
            "get": _operation(
                "Remove a URL from a topic.",
                (404, 422, 500),
                parameters=[
                    _query("topic", topic, "Topic name.", required=True),
                    _query("url", url, "Subscriber URL.", required=True),
                ],
            )
        },
        "/topic/{topicName}": {
            "delete": _operation(
                "Delete a topic (its name may hold '/').",
                (404, 422, 500),
                parameters=[{"name": "topicName", "in": "path", "required": True, "schema": topic}],
            )
        },
        "/scanKV": {
            "get": _operation(
                "A page of KV entries of a category, in key order.",
                kv_codes,
                _ref("ScanKVReply"),
                parameters=[
                    _query("cat", cat, "Category (`topics` holds the topics).", required=True),
                    _query("position", {"type": "string"}, "The `next_position` of the previous page."),
                    _query("limit", _limit(KV_DEFAULT_LIMIT, KV_MAX_LIMIT), "Page size."),
                ],
            )
        },
        "/queryKV": {
            "get": _operation(
                "One KV entry, or every entry of the category.",
                kv_codes,
                _ref("QueryKVReply"),
                parameters=[
                    _query("cat", cat, "Category.", required=True),
                    _query("key", {"type": "string", "maxLength": MAX_KEY}, "Key; empty: every entry."),
                ],
            )
        },
    }


def _ops_paths() -> JsonObject:
    pong = _operation("DTM's liveness check.", (), {"type": "object", "properties": {"msg": {"const": "pong"}}})
    status: JsonObject = {"type": "object", "properties": {"status": {"type": "string"}, "message": {"type": "string"}}}
    ready = _operation("Ready when the store answers and the node is not stopping (draining).", (503,), status)
    metrics = _operation("This process's counters, in Prometheus's text format.", (), {"type": "string"}, "text/plain")
    rpc: JsonObject = {"required": True, "content": _json(_ref("JsonRpcRequest"))}
    return {
        # HEAD is implied wherever GET is (Starlette answers it for every GET route): not listed.
        "/api/ping": {"get": pong, "post": pong, "put": pong},
        "/api/live": {"get": _operation("The process serves requests.", (), status)},
        "/api/ready": {"get": ready},
        "/api/metrics": {"get": metrics},
        "/api/openapi.json": {"get": _operation("This document.", (), {"type": "object"})},
        "/api/json-rpc": {
            "post": _operation(
                "DTM's JSON-RPC 2.0 endpoint: always HTTP 200, errors in the envelope.",
                (),
                _ref("JsonRpcReply"),
                requestBody=rpc,
            )
        },
    }


def _admin_paths() -> JsonObject:
    """The console's endpoints (fastdtm/api/admin.py) and its page (fastdtm/api/admin_ui.py)."""
    gid_body: JsonObject = {
        "required": True,
        "content": _json({"type": "object", "required": ["gid"], "properties": {"gid": _ref("Gid")}}),
    }
    mark: JsonObject = {
        "type": "object",
        "required": ["gid", "branch_id", "op", "reason"],
        "properties": {
            "gid": _ref("Gid"),
            "branch_id": {"type": "string"},
            "op": {"type": "string"},
            "reason": {"type": "string", "minLength": 1, "maxLength": MAX_REASON},
        },
    }
    mark_body: JsonObject = {"required": True, "content": _json(mark)}
    marked: JsonObject = {"type": "object", "properties": {"status": {"enum": ["succeed", "failed"]}}}
    bulk: JsonObject = {
        "type": "object",
        "required": ["action"],
        "properties": {
            "action": {"enum": list(BULK_ACTIONS)},
            "filter": {
                "type": "object",
                "properties": {
                    "status": {"enum": [str(s) for s in TransStatus]},
                    "trans_type": {"enum": [str(t) for t in TransType]},
                    "create_from_ms": _integer(0, MAX_TIME_MS),
                    "create_to_ms": _integer(0, MAX_TIME_MS),
                },
            },
            "confirm": {"type": "integer", "minimum": 0, "description": "The count the preview showed."},
        },
    }
    page = _query("position", {"type": "string"}, "The `next_position` of the page before.")
    obj: JsonObject = {"type": "object"}
    gid_codes = (400, 404, 409, 413, 422, 500)

    def action(summary: str, body: JsonObject = gid_body, ok: JsonObject = obj) -> JsonObject:
        return {"post": _operation(summary, gid_codes, ok, requestBody=body)}

    html = _operation("The console's page (static).", (), {"type": "string"}, "text/html")
    asset = _operation("One of the page's static files.", (404,), {"type": "string"}, "application/octet-stream")
    admin = "/api/admin"
    return {
        f"{admin}/transaction": {
            "get": _operation(
                "A transaction with the console's notes: retries, last errors, operator marks, pause.",
                (404, 422, 500),
                obj,
                parameters=[_query("gid", _ref("Gid"), "The transaction.", required=True)],
            )
        },
        f"{admin}/retry": action("Retry now: the transaction is due at once."),
        f"{admin}/pause": action("Pause the retries of a submitted or aborting transaction."),
        f"{admin}/resume": action("Resume the retries of a paused transaction."),
        f"{admin}/skip": action(
            "Record a branch as succeeded, with a reason; the transaction goes on.", mark_body, marked
        ),
        f"{admin}/fail": action(
            "Record a saga action as failed, with a reason; the saga compensates.", mark_body, marked
        ),
        f"{admin}/attention": {
            "get": _operation(
                "Unfinished transactions whose rounds end in errors, or paused, longest first.",
                (400, 422, 500),
                obj,
                parameters=[_query("limit", _limit(20, ATTENTION_MAX_LIMIT), "Rows per page."), page],
            )
        },
        f"{admin}/bulk": {
            "post": _operation(
                "Force stop or retry the unfinished transactions a filter selects: a preview, then `confirm`.",
                (400, 409, 413, 422, 500),
                obj,
                requestBody={"required": True, "content": _json(bulk)},
            )
        },
        f"{admin}/stats": {
            "get": _operation("This node's live figures and the store's unfinished count.", (500,), obj)
        },
        f"{admin}/nodes": {"get": _operation("Live nodes, their heartbeats and the shards they hold.", (500,), obj)},
        "/admin": {"get": html},
        "/admin/": {"get": html},
        "/admin/static/{name}": {
            "get": {
                **asset,
                "parameters": [
                    {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}},
                ],
            }
        },
    }


def _options() -> JsonObject:
    def number(name: str, description: str) -> JsonObject:
        bound = _integer(0, OPTION_LIMITS.get(name))
        return {**bound, "type": ["integer", "null"], "description": description}

    return {
        "wait_result": _nullable("boolean", description="Process inside the call and report the outcome."),
        "timeout_to_fail": number("timeout_to_fail", "Seconds; 0: the server default (msg, tcc, xa) or none."),
        "request_timeout": number("request_timeout", "Seconds per branch call; 0: the server default."),
        "retry_interval": number("retry_interval", "Base retry interval, seconds; 0: the server default."),
        "branch_headers": _branch_headers(),
        "concurrent": _nullable("boolean", description="msg: run every branch at once."),
        "retry_limit": number("retry_limit", "saga: immediate retries of a failing action."),
        "retry_count": number("retry_count", "saga: internal counter; clients send 0."),
    }


def _branch_headers() -> JsonObject:
    return _nullable(
        "object",
        propertyNames={"pattern": HEADER_NAME},
        additionalProperties={"type": "string", "pattern": HEADER_VALUE},
        description="Sent with every branch call: names are RFC 9110 tokens, values hold no control character but "
        "tab (Content-Length and Transfer-Encoding are the branch client's own).",
    )


def _trans_request(*, by_gid: bool) -> JsonObject:
    """The body of prepare / submit / prepareWorkflow, or (`by_gid`) of the calls that name a stored
    transaction: abort, forceStop, resetNextCronTime, which read every field the same way but need only a gid."""
    strings: JsonObject = {"type": "string"}
    step: JsonObject = {"type": "object", "additionalProperties": strings}
    trans_type: JsonObject = {"type": ["string", "null"]}
    if not by_gid:
        trans_type["enum"] = [*(str(t) for t in TransType), None]
    return {
        "type": "object",
        "required": ["gid"] if by_gid else ["gid", "trans_type"],
        "properties": {
            "gid": _ref("Gid"),
            "trans_type": trans_type,
            "steps": _nullable("array", items=step, maxItems=MAX_STEPS),
            "payloads": _nullable("array", items=strings),
            "custom_data": _nullable(
                "string",
                contentMediaType="application/json",
                description='JSON text: saga {"concurrent", "orders"}, msg {"delay"} (seconds'
                + f", 0..{MAX_DELAY}"
                + '), workflow {"name", "data"}.',
            ),
            "query_prepared": _nullable("string", description="msg: check-back URL; workflow: resume callback."),
            "protocol": {"type": ["string", "null"], "enum": ["http", "", None]},
            "rollback_reason": _nullable("string"),
            "req_extra": _nullable("object", additionalProperties=strings),
            **_options(),
        },
    }


def _reply_schemas() -> JsonObject:
    text: JsonObject = {"type": "string"}
    trans: JsonObject = {
        "type": "object",
        "properties": {"gid": text, "status": {"enum": [str(s) for s in TransStatus]}},
    }
    branch: JsonObject = {
        "type": "object",
        "properties": {"branch_id": text, "op": text, "status": {"enum": [str(s) for s in BranchStatus]}},
    }
    kv: JsonObject = {
        "type": "object",
        "properties": {"cat": text, "k": text, "v": text, "version": {"type": "integer"}},
    }
    return {
        "Success": {"type": "object", "properties": {"dtm_result": {"const": "SUCCESS"}}},
        "Error": {
            "type": "object",
            "required": ["message"],
            "properties": {"message": text, "dtm_result": {"enum": ["FAILURE", "ONGOING"]}},
        },
        "Version": {"type": "object", "properties": {"version": text}},
        "NewGid": {"type": "object", "properties": {"gid": _ref("Gid"), "dtm_result": {"const": "SUCCESS"}}},
        "Transaction": trans,
        "Branch": branch,
        "QueryReply": {
            "type": "object",
            "properties": {
                "transaction": {"oneOf": [trans, {"type": "null"}]},
                "branches": {"type": "array", "items": branch},
            },
        },
        "AllReply": {
            "type": "object",
            "properties": {"transactions": {"type": "array", "items": trans}, "next_position": text},
        },
        "Workflow": {
            "type": "object",
            "properties": {"transaction": trans, "progresses": {"type": "array", "items": branch}},
        },
        "ResetCronReply": {
            "type": "object",
            "properties": {"has_remaining": {"type": "boolean"}, "succeed_count": {"type": "integer"}},
        },
        "ScanKVReply": {"type": "object", "properties": {"kv": {"type": "array", "items": kv}, "next_position": text}},
        "QueryKVReply": {"type": "object", "properties": {"kv": {"type": "array", "items": kv}}},
    }


def _json_rpc_schemas() -> JsonObject:
    return {
        "JsonRpcRequest": {
            "type": "object",
            "required": ["jsonrpc", "id", "method"],
            "properties": {
                "jsonrpc": {"const": "2.0"},
                "id": {"type": "string", "minLength": 1},
                "method": {"enum": ["newGid", "prepare", "submit", "abort", "registerBranch"]},
                "params": {"type": "object", "description": "The HTTP body of the same endpoint."},
            },
        },
        "JsonRpcReply": {
            "type": "object",
            "properties": {
                "jsonrpc": {"const": "2.0"},
                "id": {},
                "result": {},
                "error": {
                    "oneOf": [
                        {"type": "null"},
                        {
                            "type": "object",
                            "properties": {
                                "code": {"enum": [-32700, -32600, -32601, -32602, -32603, -32901, -32902]},
                                "message": {"type": "string"},
                            },
                        },
                    ]
                },
            },
        },
    }


def _components() -> JsonObject:
    strings: JsonObject = {"type": "string"}
    branch_fields = {name: strings for name in ("data", "confirm", "cancel", "url", "op", "status", "sync")}
    schemas: JsonObject = {
        "Gid": {
            "type": "string",
            "pattern": f"^{GID_PATTERN.pattern}$",
            "description": "Printable ASCII, no ' ' or ';'.",
        },
        "TransRequest": _trans_request(by_gid=False),
        "GidRequest": _trans_request(by_gid=True),
        "BranchRequest": {
            "type": "object",
            "description": "A flat object of strings (DTM binds it to map[string]string).",
            "required": ["gid", "trans_type", "branch_id"],
            "additionalProperties": strings,
            "properties": {
                "gid": _ref("Gid"),
                "trans_type": {"enum": [str(TransType.TCC), str(TransType.XA), str(TransType.WORKFLOW)]},
                "branch_id": {"type": "string", "pattern": f"^{BRANCH_ID_PATTERN.pattern}$"},
                **branch_fields,
            },
        },
        **_reply_schemas(),
        **_json_rpc_schemas(),
    }
    responses: JsonObject = {
        f"E{code}": {"description": meaning, "content": _json(_ref("Error"))} for code, meaning in ERROR_REPLIES.items()
    }
    schemes: JsonObject = {
        "bearer": {"type": "http", "scheme": "bearer", "description": "A token of the node's --auth-file."},
        "basic": {"type": "http", "scheme": "basic", "description": "Any user name, the token as password."},
    }
    return {"schemas": schemas, "responses": responses, "securitySchemes": schemes}


def document() -> JsonObject:
    """The whole OpenAPI document, built anew (callers may change their copy)."""
    paths: JsonObject = {f"{DTM}{path}": item for path, item in _dtmsvr_paths().items()}
    paths.update(_ops_paths())
    paths.update(_admin_paths())
    _secure(paths)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "fastdtm",
            "version": __version__,
            "description": "DTM's HTTP API as fastdtm serves it; differences from DTM: docs/compatibility.md.",
        },
        "paths": paths,
        "components": _components(),
        # Optional ({}): authentication is off unless the node has an --auth-file.
        "security": [{}, {"bearer": []}, {"basic": []}],
    }


def _secure(paths: JsonObject) -> None:
    """The refusals of the authentication gate on each operation: 401 and 403 by the route's access (one
    table: fastdtm.auth.ROUTES), 415 on every POST but the health checks'."""
    by_path = {route.replace(":path}", "}"): access for route, access in ROUTES.items()}
    for path, item in paths.items():
        access = by_path[path]
        assert isinstance(item, dict)
        for method, operation in item.items():
            assert isinstance(operation, dict) and isinstance(operation["responses"], dict)
            codes = [] if access is Access.OPEN else [401]
            codes += [403] if access in (Access.OPERATOR, Access.PER_METHOD) else []
            codes += [415] if method == "post" and access is not Access.OPEN else []
            for code in codes:
                operation["responses"].setdefault(str(code), {"$ref": f"#/components/responses/E{code}"})


#: Encoded once: the document is fixed for the process's life.
DOCUMENT_JSON: Final = wire.encode(document())


async def openapi_json(request: Request) -> Response:
    return Response(DOCUMENT_JSON, media_type="application/json")
