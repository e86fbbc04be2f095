"""Hypothesis strategies for single hostile requests to every endpoint: raw bodies that are not what the
endpoint parses (cut short, not JSON, not an object, not UTF-8, nested too deep, at and over the body
limit), query strings (`/query`, `/all`, `/resetCronTime`, the KV and topic routes, and junk for the rest),
and JSON-RPC envelopes.

`operations()` maps every (method, path) of the OpenAPI document to the strategy that exercises it; a test
checks the two agree, so a route is fuzzed from the day it is described (and described from the day it is
served: tests/api/test_openapi.py).
"""

from __future__ import annotations

import string
import time
from collections.abc import Callable
from typing import Final

from hypothesis import strategies as st

from tests.support.fuzz_calls import ApiCall, Json, url_text
from tests.support.fuzz_scenarios import TYPES, D, rpc, scenarios
from tests.support.fuzz_values import (
    BOUNDARY_INTS,
    GIANT_URL_SIZES,
    NON_ASCII_DIGITS,
    OK,
    busi,
    gids,
    json_values,
    texts,
    urls,
    wrong_type_for_string,
)

#: The console's endpoints.
ADMIN: Final = "/api/admin"
POST_BODY_PATHS: Final = tuple(
    f"{D}/{name}"
    for name in (
        "prepare",
        "submit",
        "abort",
        "forceStop",
        "resetNextCronTime",
        "registerBranch",
        "registerTccBranch",
        "registerXaBranch",
        "prepareWorkflow",
    )
)
RAW_BODIES: Final = (
    b"",
    b" ",
    b"null",
    b"[]",
    b"[{}]",
    b"1",
    b'"x"',
    b"{",
    b"}",
    b'{"gid":}',
    b"{} x",
    b"{/*c*/}",
    b"{'gid':'a'}",
    b"\xff\xfe{}",
    b"\xef\xbb\xbf{}",
    '{"gid":"@g1"}'.encode("utf-16"),
    b'{"gid":"\\ud800","trans_type":"saga"}',
    b'{"gid":"@g1","trans_type":"saga","steps":NaN}',
    b'{"gid":"@g1","gid":"@g2","trans_type":"msg","query_prepared":"http://busi/qp"}',
    b'{"gid":"@g1","trans_type":"saga","timeout_to_fail":18446744073709551616}',
    b'{"gid":"@g1","trans_type":"saga","retry_interval":1e400}',
    b'{"gid":"@g1\x00","trans_type":"saga"}',
)


def raw_bodies() -> st.SearchStrategy[bytes]:
    deep = st.sampled_from((1025, 100_000)).map(lambda n: b"[" * n + b"]" * n)
    limit = st.sampled_from((1_048_000, 1_048_576 - 64, 1_048_577, 2_000_000)).map(
        lambda n: b'{"gid":"@g1","trans_type":"saga","custom_data":"' + b"x" * n + b'"}'
    )
    return st.one_of(st.sampled_from(RAW_BODIES), st.binary(max_size=64), deep, limit, _cut_bodies())


def _cut_bodies() -> st.SearchStrategy[bytes]:
    """A well-formed body cut short."""
    whole = scenarios().map(lambda s: s.calls[-1].content() or b"{}")
    return whole.flatmap(lambda b: st.integers(0, max(0, len(b) - 1)).map(lambda n: b[:n]))


def raw_body_calls(path: str) -> st.SearchStrategy[ApiCall]:
    content_types = st.sampled_from(("application/json", "text/plain", "application/x-www-form-urlencoded", ""))
    return st.builds(
        lambda raw, ctype: ApiCall("POST", path, raw=raw, headers=(("content-type", ctype),) if ctype else ()),
        raw_bodies(),
        content_types,
    )


def body_calls(path: str) -> st.SearchStrategy[ApiCall]:
    """Structured bodies with hostile values, and well-formed ones of another route."""
    field = st.sampled_from(
        (
            "gid",
            "trans_type",
            "branch_id",
            "steps",
            "payloads",
            "custom_data",
            "wait_result",
            "req_extra",
            "x",
            # The console's actions (/api/admin/).
            "op",
            "reason",
            "action",
            "filter",
            "confirm",
        )
    )
    hostile = st.dictionaries(field, json_values(), max_size=4).map(lambda d: {"gid": "@g1", **d})
    borrowed = scenarios().map(lambda s: s.calls[-1].fields()).map(dict)
    return st.builds(lambda b: ApiCall("POST", path, body=b), st.one_of(hostile, borrowed))


# --- query strings ----------------------------------------------------------------------------------------


def _integer_text() -> st.SearchStrategy[str]:
    texts_of_numbers = st.sampled_from(
        (
            "",
            "0",
            "1",
            "-1",
            "-0",
            "+1",
            " 1",
            "1 ",
            "1.0",
            "1e3",
            "0x10",
            "99",
            "100",
            "1000",
            "1001",
            "100000",
            "100001",
        )
    )
    return st.one_of(
        texts_of_numbers,
        st.sampled_from(NON_ASCII_DIGITS),
        st.sampled_from(BOUNDARY_INTS).map(str),
        st.integers().map(str),
        texts(GIANT_URL_SIZES),
    )


def _position() -> st.SearchStrategy[str]:
    """Cursors the server never issued: out-of-range shards (negative ones index from the end in Python),
    scores and gids, non-ASCII digits, missing parts."""
    fixed = ("-300:0:x", "-1:0:x", "255:0:x", "256:0:x", "9" * 30 + ":0:x", "0:-1:x", "0:" + "9" * 30 + ":x")
    more = ("0:x:y", ":::", "a", "0:²:x", "²:0:x", "0:0", "0")
    parts = st.tuples(_integer_text(), _integer_text(), st.text(max_size=8)).map(lambda p: ":".join(p))
    return st.one_of(st.sampled_from(fixed), st.sampled_from(more), parts, texts(GIANT_URL_SIZES))


def _millis() -> st.SearchStrategy[str]:
    return st.one_of(st.just("0"), st.integers(0, 2**62).map(str), st.just(str(int(time.time() * 1000))))


#: Values each parameter's route takes: with the other parameters valid, a hostile one reaches its own check.
VALID_QUERY_VALUES: Final[dict[str, Callable[[], st.SearchStrategy[str]]]] = {
    "gid": lambda: st.just("@g1"),
    "limit": lambda: st.integers(1, 1000).map(str),
    "timeout": lambda: st.integers(0, 100_000).map(str),
    "createTimeStart": _millis,
    "createTimeEnd": _millis,
    "position": lambda: st.sampled_from(("", "0:0:")),
    "status": lambda: st.sampled_from(("prepared", "submitted", "aborting", "succeed", "failed")),
    "transType": lambda: st.sampled_from(TYPES),
    "cat": lambda: st.just("topics"),
    "key": lambda: st.just("@t1"),
    "topic": lambda: st.just("@t1"),
    "url": lambda: st.just(busi(OK)),
    "remark": lambda: st.just("fuzz"),
}
HOSTILE_QUERY_VALUES: Final[dict[str, Callable[[], st.SearchStrategy[str]]]] = {
    "gid": lambda: gids(GIANT_URL_SIZES),
    "limit": _integer_text,
    "timeout": _integer_text,
    "createTimeStart": _integer_text,
    "createTimeEnd": _integer_text,
    "position": _position,
    "status": lambda: st.one_of(st.sampled_from(("x", "SUCCEED", "succeed ")), texts(GIANT_URL_SIZES)),
    "transType": lambda: st.one_of(st.sampled_from(("SAGA", "saga\n")), texts(GIANT_URL_SIZES)),
    "cat": lambda: st.one_of(st.sampled_from(("a:b", "x" * 46)), texts(GIANT_URL_SIZES)),
    "key": lambda: texts(GIANT_URL_SIZES),
    "topic": lambda: st.one_of(st.text(max_size=10).map(lambda s: "@t1" + s), texts(GIANT_URL_SIZES)),
    "url": lambda: urls().filter(lambda u: isinstance(u, str)).map(str),
    "remark": lambda: texts(GIANT_URL_SIZES),
}


#: Query parameters each GET route reads; the others get junk.
READS: Final[dict[str, tuple[str, ...]]] = {
    "query": ("gid",),
    "all": ("gid", "position", "limit", "status", "transType", "createTimeStart", "createTimeEnd"),
    "resetCronTime": ("timeout", "limit"),
    "scanKV": ("cat", "position", "limit"),
    "queryKV": ("cat", "key"),
    "subscribe": ("topic", "url", "remark"),
    "unsubscribe": ("topic", "url"),
    "transaction": ("gid",),
    "attention": ("limit", "position"),
}
#: Query strings with escapes a decoder must survive.
RAW_QUERIES: Final = ("limit=%B2", "limit=%FF", "gid=%00", "a=%", "limit=1&limit=2", "limit=%EF%BC%91", "=&&=")


@st.composite
def query_calls(draw: st.DrawFn, method: str, path: str) -> ApiCall:
    """The parameters the route reads (see READS), each valid or hostile, and maybe one it does not read."""
    if draw(st.integers(0, 9)) == 0:
        return ApiCall(method, f"{path}?{draw(st.sampled_from(RAW_QUERIES))}", headers=())
    names = READS.get(path.rpartition("/")[2], ())
    chosen = draw(st.lists(st.sampled_from(names), unique=True, max_size=len(names))) if names else []
    params = []
    for name in chosen:
        # Two in three values valid: a hostile one then gets past the checks of the others.
        valid = VALID_QUERY_VALUES[name]()
        params.append((name, url_text(draw(st.one_of(valid, valid, HOSTILE_QUERY_VALUES[name]())))))
    junk = draw(st.lists(st.tuples(st.text(max_size=6), texts(GIANT_URL_SIZES)), max_size=1))
    params += [(url_text(k), url_text(v)) for k, v in junk]
    return ApiCall(method, path, tuple(params), headers=())


@st.composite
def topic_delete_calls(draw: st.DrawFn) -> ApiCall:
    name = draw(st.one_of(st.just("@t1"), st.text(max_size=10).map(lambda s: "@t1" + s), texts(GIANT_URL_SIZES)))
    quoted = "".join(c if c in string.ascii_letters + string.digits + "-_.@/" else _pct(c) for c in name[:2000])
    return ApiCall("DELETE", f"{D}/topic/{quoted}", headers=())


def _pct(char: str) -> str:
    return "".join(f"%{b:02X}" for b in char.encode("utf-8", "surrogatepass"))


# --- JSON-RPC ---------------------------------------------------------------------------------------------

RPC: Final = "/api/json-rpc"
RPC_METHODS: Final = ("newGid", "prepare", "submit", "abort", "registerBranch")


@st.composite
def rpc_calls(draw: st.DrawFn) -> ApiCall:
    """Envelopes: mostly well-formed around generated params, some broken, some batches."""
    if draw(st.integers(0, 5)) == 0:
        batch = draw(st.lists(st.builds(rpc, st.sampled_from(RPC_METHODS), st.just({})), max_size=3))
        return ApiCall("POST", RPC, body=[call.body for call in batch])
    method: st.SearchStrategy[Json] = st.one_of(
        st.sampled_from(RPC_METHODS), st.sampled_from(("unknown", "__class__", "")), wrong_type_for_string()
    )
    params: st.SearchStrategy[Json] = st.one_of(
        scenarios().map(lambda s: s.calls[-1].fields()).map(dict), json_values(), st.just({})
    )
    envelope: dict[str, Json] = {
        "jsonrpc": draw(st.sampled_from(("2.0", "2.0", "2.0", "1.0", 2.0, None))),
        "id": draw(st.one_of(st.just("1"), st.sampled_from(("", 1, None, [], "x" * 10_000)))),
        "method": draw(st.one_of(method, st.just({}), st.just([]))),
        "params": draw(params),
    }
    for key in draw(st.lists(st.sampled_from(sorted(envelope)), unique=True, max_size=1)):
        del envelope[key]
    return ApiCall("POST", RPC, body=envelope)


# --- every operation --------------------------------------------------------------------------------------

#: Routes that take no body and read no query: junk query strings only.
PLAIN_GETS: Final = (
    f"{D}/version",
    "/api/live",
    "/api/ready",
    "/api/metrics",
    "/api/openapi.json",
    f"{ADMIN}/stats",
    f"{ADMIN}/nodes",
    "/admin",
    "/admin/",
)
#: The console's actions: a JSON body each.
ADMIN_POSTS: Final = tuple(f"{ADMIN}/{name}" for name in ("retry", "pause", "resume", "skip", "fail", "bulk"))


@st.composite
def static_calls(draw: st.DrawFn) -> ApiCall:
    """Names of the console's static files, real ones and ones that try to leave the directory."""
    name = draw(
        st.one_of(
            st.sampled_from(("console.js", "console.css", "index.html", "", ".", "..", "__init__.py")),
            st.sampled_from(("..%2f..%2fpyproject.toml", "%2e%2e", "console.js%00", "CONSOLE.JS", "x.map")),
            st.text(max_size=12).map(lambda t: "".join(c if c.isalnum() or c in "._-" else _pct(c) for c in t)),
        )
    )
    return ApiCall("GET", f"/admin/static/{name}", headers=())


def operations() -> dict[tuple[str, str], st.SearchStrategy[ApiCall]]:
    """(method, OpenAPI path) -> requests to it."""
    ops: dict[tuple[str, str], st.SearchStrategy[ApiCall]] = {
        ("post", path): st.one_of(raw_body_calls(path), body_calls(path)) for path in POST_BODY_PATHS
    }
    for name in ("query", "all", "scanKV", "queryKV", "subscribe", "unsubscribe"):
        ops[("get", f"{D}/{name}")] = query_calls("GET", f"{D}/{name}")
    for method in ("get", "post"):
        for path in (f"{D}/resetCronTime", f"{D}/newGid"):
            ops[(method, path)] = query_calls(method.upper(), path)
    for method in ("get", "post", "put"):
        ops[(method, "/api/ping")] = query_calls(method.upper(), "/api/ping")
    for path in PLAIN_GETS:
        ops[("get", path)] = query_calls("GET", path)
    for path in ADMIN_POSTS:
        ops[("post", path)] = st.one_of(raw_body_calls(path), body_calls(path))
    for name in ("transaction", "attention"):
        ops[("get", f"{ADMIN}/{name}")] = query_calls("GET", f"{ADMIN}/{name}")
    ops[("get", "/admin/static/{name}")] = static_calls()
    ops[("delete", f"{D}/topic/{{topicName}}")] = topic_delete_calls()
    ops[("post", RPC)] = st.one_of(rpc_calls(), raw_body_calls(RPC))
    return ops
