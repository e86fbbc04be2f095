"""Hypothesis strategies for DTM transactions as an SDK drives them, each with what it must end in.

A `Scenario` is the calls of one transaction of one trans_type (saga, msg, tcc, xa, workflow), against the
branch server, sometimes over JSON-RPC, with the reply each call must get and the status the transaction
must reach. `tests.support.fuzz_mutations` makes them hostile.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from hypothesis import strategies as st

from tests.support.fuzz_calls import ApiCall, Json, encode
from tests.support.fuzz_values import (
    CHECK_BACK,
    FAIL,
    FAIL_BODY,
    OK,
    RESUME,
    busi,
    payload,
    sane_headers,
    sane_text,
    workflow_data,
)

D: Final = "/api/dtmsvr"
TYPES: Final = ("saga", "msg", "tcc", "xa", "workflow")
SECONDS: Final = ("timeout_to_fail", "request_timeout", "retry_interval", "retry_limit", "retry_count")
#: Ids as the SDKs make them (nested TCC branches too), all valid.
BRANCH_IDS: Final = ("01", "02", "03", "0101", "0201", "a_b-C")


@dataclass(frozen=True, slots=True)
class Scenario:
    calls: tuple[ApiCall, ...]
    #: The HTTP status each call must get (a JSON-RPC call: 200 = no error, 409 = -32901); () = unknown.
    codes: tuple[int, ...] = ()
    #: The status `@g1` must reach once every call was accepted; "" = unknown.
    final: str = ""
    #: Which mutation made it hostile, for the report.
    mutation: str = ""

    def __repr__(self) -> str:
        lines = [f"  {call!r}" for call in self.calls]
        expect = f" codes={list(self.codes)}" if self.codes else ""
        final = f" final={self.final!r}" if self.final else ""
        mutation = f" mutation={self.mutation!r}" if self.mutation else ""
        return "Scenario(" + expect + final + mutation + "\n" + "\n".join(lines) + "\n)"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))


def post(endpoint: str, body: Json) -> ApiCall:
    return ApiCall("POST", f"{D}/{endpoint}", body=body)


def rpc(method: str, params: Json, rpc_id: Json = "1") -> ApiCall:
    return ApiCall("POST", "/api/json-rpc", body={"jsonrpc": "2.0", "id": rpc_id, "method": method, "params": params})


@st.composite
def _options(draw: st.DrawFn, *, wait: bool = True) -> dict[str, Json]:
    """Options as an SDK sets them: no timeout short enough to fire during the test."""
    chosen: dict[str, st.SearchStrategy[Json]] = {
        "timeout_to_fail": st.sampled_from((0, 60, 600, 3600)),
        "request_timeout": st.integers(0, 10),
        "retry_interval": st.sampled_from((0, 1, 15, 600)),
        "retry_limit": st.integers(0, 3),
        "branch_headers": sane_headers(),
        "concurrent": st.booleans(),
        "passthrough_headers": st.just(["X-A"]),  # removed from DTM in v1.16: ignored
        "owner": sane_text(),
    }
    if wait:
        chosen["wait_result"] = st.booleans()
    names = draw(st.lists(st.sampled_from(sorted(chosen)), unique=True, max_size=4))
    # Go's null-is-empty: an SDK may send null for any option.
    return {name: draw(st.one_of(chosen[name], st.none())) for name in names}


def _transport(draw: st.DrawFn, endpoint: str, body: dict[str, Json]) -> ApiCall:
    if endpoint in ("prepare", "submit", "abort", "registerBranch") and draw(st.integers(0, 4)) == 0:
        return rpc(endpoint, body)
    return post(endpoint, body)


@st.composite
def saga(draw: st.DrawFn) -> Scenario:
    n = draw(st.integers(1, 3))
    actions = draw(st.lists(st.sampled_from((OK, OK, OK, FAIL, FAIL_BODY)), min_size=n, max_size=n))
    steps: list[Json] = []
    payloads: list[Json] = []
    old_format = draw(st.booleans())
    for action in actions:
        step: dict[str, Json] = {"action": busi(action)}
        if draw(st.booleans()):
            step["compensate"] = busi(OK)
        data = draw(payload())
        if old_format:
            step["data"] = data  # DTM's old format: the body inside the step
        steps.append(step)
        payloads.append(data)
    body: dict[str, Json] = {"gid": "@g1", "trans_type": "saga", "steps": steps, **draw(_options())}
    if not old_format:
        body["payloads"] = payloads
    if n > 1 and draw(st.booleans()):
        # Step i after step i-1: acyclic by construction.
        body["custom_data"] = encode({"concurrent": True, "orders": {str(i): [i - 1] for i in range(1, n)}}).decode()
    failed = FAIL in actions or FAIL_BODY in actions
    code = 409 if failed and body.get("wait_result") is True else 200
    return Scenario((post("submit", body),), (code,), "failed" if failed else "succeed")


@st.composite
def msg(draw: st.DrawFn) -> Scenario:
    n = draw(st.integers(1, 3))
    topic = draw(st.booleans())
    steps: list[Json] = [{"action": busi(OK)} for _ in range(n)]
    calls: list[ApiCall] = []
    if topic:
        calls.append(ApiCall("GET", f"{D}/subscribe", (("topic", "@t1"), ("url", busi(OK)), ("remark", "fuzz"))))
        steps[0] = {"action": "topic://@t1"}
    body: dict[str, Json] = {
        "gid": "@g1",
        "trans_type": "msg",
        "steps": steps,
        "payloads": [draw(payload()) for _ in range(n)],
        "query_prepared": busi(CHECK_BACK),
        **draw(_options()),
    }
    if draw(st.booleans()):
        body["custom_data"] = '{"delay":0}'
    flow = draw(st.sampled_from(("submit", "prepare-submit", "prepare-thin-submit", "prepare-abort")))
    if flow != "submit":
        calls.append(_transport(draw, "prepare", body))
    final = "succeed"
    if flow == "prepare-abort":
        calls.append(_transport(draw, "abort", {"gid": "@g1", "trans_type": "msg"}))
        final = "failed"
    else:
        thin: dict[str, Json] = {"gid": "@g1", "trans_type": "msg"}
        calls.append(_transport(draw, "submit", thin if flow == "prepare-thin-submit" else body))
    return Scenario(tuple(calls), (200,) * len(calls), final)


@st.composite
def two_phase(draw: st.DrawFn, trans_type: str) -> Scenario:
    """tcc and xa: prepare, register the branches, then submit (confirm / commit) or abort."""
    options = draw(_options())
    calls = [_transport(draw, "prepare", {"gid": "@g1", "trans_type": trans_type, **options})]
    aliases = ("registerBranch", "registerTccBranch" if trans_type == "tcc" else "registerXaBranch")
    for branch_id in draw(st.lists(st.sampled_from(BRANCH_IDS), unique=True, max_size=3)):
        branch: dict[str, Json] = {"gid": "@g1", "trans_type": trans_type, "branch_id": branch_id}
        if trans_type == "tcc":
            branch |= {"confirm": busi(OK), "cancel": draw(st.sampled_from((busi(OK), ""))), "try": busi(OK)}
        else:
            branch["url"] = busi(OK)
        branch["data"] = draw(payload())
        calls.append(_transport(draw, draw(st.sampled_from(aliases)), branch))
    end = draw(st.sampled_from(("submit", "abort")))
    finish: dict[str, Json] = {"gid": "@g1", "trans_type": trans_type}
    if end == "abort":
        finish["rollback_reason"] = draw(sane_text())
    calls.append(_transport(draw, end, finish))
    # abort runs with the stored options: with wait_result the failed outcome is a 409.
    last = 409 if end == "abort" and options.get("wait_result") is True else 200
    codes = (200,) * (len(calls) - 1) + (last,)
    return Scenario(tuple(calls), codes, "succeed" if end == "submit" else "failed")


@st.composite
def workflow(draw: st.DrawFn) -> Scenario:
    start = {
        "gid": "@g1",
        "trans_type": "workflow",
        "custom_data": workflow_data(draw(st.sampled_from(("transfer", "wf-é"))), draw(payload())),
        "query_prepared": busi(RESUME),
        **draw(_options(wait=False)),
    }
    calls = [post("prepareWorkflow", start)]
    for branch_id, op in draw(
        st.lists(
            st.tuples(st.sampled_from(BRANCH_IDS), st.sampled_from(("action", "compensate"))), unique=True, max_size=3
        )
    ):
        status = draw(st.sampled_from(("succeed", "failed")))
        branch = {"gid": "@g1", "trans_type": "workflow", "branch_id": branch_id, "op": op, "status": status}
        calls.append(_transport(draw, "registerBranch", {**branch, "data": draw(payload())}))
    final = draw(st.sampled_from(("succeed", "failed")))
    result = draw(st.sampled_from(("", "eyJvayI6MX0=")))
    extra: dict[str, Json] = {"status": final, "rollback_reason": "", "result": result}
    calls.append(_transport(draw, "submit", {"gid": "@g1", "trans_type": "workflow", "req_extra": extra}))
    return Scenario(tuple(calls), (200,) * len(calls), final)


def scenarios() -> st.SearchStrategy[Scenario]:
    return st.one_of(saga(), msg(), two_phase("tcc"), two_phase("xa"), workflow())


def expected_rpc_code(status: int) -> int:
    """The JSON-RPC error code of a call that must get HTTP `status` over HTTP."""
    return {200: 0, 409: -32901, 425: -32902}.get(status, -1)
