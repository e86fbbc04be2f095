"""Hostile transactions: this module owns `mutated`, which turns a well-formed `Scenario` into a hostile one
(a field set to a hostile value or dropped, another trans_type on an existing gid, a call repeated or
reordered, a body cut short), and the inputs issue 12 lists, as explicit examples.

A mutation that would not change the outcome if the node took it (a hostile header, a huge interval) keeps
the scenario's final status: a node that accepts a request must also finish it. Any other drops the
expectations, and only the rules every reply keeps apply.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Final

from hypothesis import strategies as st

from tests.support.fuzz_calls import ApiCall, Json, RawJson, encode
from tests.support.fuzz_scenarios import SECONDS, TYPES, D, Scenario, post, scenarios
from tests.support.fuzz_values import (
    CHECK_BACK,
    OK,
    branch_ids,
    busi,
    deep_nesting,
    gids,
    headers,
    json_values,
    numbers,
    texts,
    urls,
    wrong_type_for_string,
)

#: Hostile values per field; a field not named here gets `json_values()`.
FIELD_VALUES: Final[dict[str, Callable[[], st.SearchStrategy[Json]]]] = {
    "gid": lambda: st.one_of(gids(), wrong_type_for_string(), st.just("@g2")),
    "trans_type": lambda: st.one_of(st.sampled_from((*TYPES, "SAGA", "sagaa", "")), wrong_type_for_string()),
    "steps": lambda: st.one_of(_hostile_steps(), json_values()),
    "payloads": lambda: st.one_of(st.lists(st.one_of(texts(), numbers()), max_size=3), json_values()),
    "custom_data": lambda: _custom_data(),
    "query_prepared": urls,
    "branch_headers": headers,
    "wait_result": lambda: st.one_of(st.sampled_from(("true", 1, 0, [])), json_values()),
    "concurrent": lambda: st.one_of(st.sampled_from(("true", 1)), json_values()),
    "req_extra": lambda: st.one_of(_req_extra(), json_values()),
    "branch_id": branch_ids,
    "confirm": urls,
    "cancel": urls,
    "url": urls,
    "op": lambda: st.one_of(texts(), wrong_type_for_string()),
    "status": lambda: st.one_of(st.sampled_from(("prepared", "submitted", "SUCCEED", "succeed\n")), texts()),
    "data": lambda: st.one_of(texts(), wrong_type_for_string()),
    "protocol": lambda: st.one_of(st.sampled_from(("grpc", "json-rpc", "HTTP")), wrong_type_for_string()),
    **{name: numbers for name in SECONDS},
}
#: Mutations of these fields would not change the outcome of a node that took them: it must still finish.
OUTCOME_KEEPING: Final = frozenset(
    {"branch_headers", "request_timeout", "retry_interval", "retry_limit", "retry_count"}
)


def _hostile_steps() -> st.SearchStrategy[Json]:
    step = st.dictionaries(st.sampled_from(("action", "compensate", "data", "extra")), urls(), max_size=3)
    over_cap = st.just([{"action": busi(OK)}] * 1001)
    missing_topic = st.just([{"action": "topic://@t9"}])
    return st.one_of(st.lists(step, max_size=3), over_cap, missing_topic, st.lists(json_values(), max_size=2))


def _custom_data() -> st.SearchStrategy[Json]:
    orders = st.sampled_from(
        (
            '{"orders":{"²":[0]}}',
            '{"orders":{"0":[0]}}',
            '{"orders":{"-1":[0]}}',
            '{"orders":{"0":["1"]}}',
            '{"orders":{"01":[0]}}',
            '{"orders":{"1":[1e308]}}',
            '{"orders":[]}',
            '{"concurrent":"yes"}',
        )
    )
    delay = numbers().map(lambda d: '{"delay":' + encode(d).decode() + "}")
    workflow = st.sampled_from(('{"name":"","data":""}', '{"name":"w","data":"!!"}', '{"name":1}'))
    junk = st.one_of(st.sampled_from(("{not json", "[]", "null", "1", '"x"')), texts())
    nested = deep_nesting().map(lambda raw: '{"a":' + raw.text + "}" if isinstance(raw, RawJson) else "")
    return st.one_of(orders, delay, workflow, junk, nested, wrong_type_for_string())


def _req_extra() -> st.SearchStrategy[Json]:
    status = st.one_of(st.sampled_from(("succeed", "failed", "prepared", "succeed\n", "")), wrong_type_for_string())
    return st.fixed_dictionaries({"status": status}, optional={"result": texts(), "rollback_reason": texts()})


@st.composite
def mutated(draw: st.DrawFn, scenario: Scenario) -> Scenario:
    """The scenario with one hostile change; see the module docstring for which keep the final status."""
    calls = list(scenario.calls)
    # The calls with a body (a topic subscription has none): what set, drop, retype and truncate change.
    bodies = [j for j, call in enumerate(calls) if call.has_body]
    i = draw(st.sampled_from(bodies))
    kind = draw(st.sampled_from(("set", "set", "set", "drop", "retype", "repeat", "reorder", "truncate")))
    keeps = False
    if kind == "retype" and len(bodies) > 1:
        i = draw(st.sampled_from(bodies[1:]))
        others = [t for t in TYPES if t != _fields(calls[i]).get("trans_type")]
        value: Json = draw(st.sampled_from(others))
        calls[i] = _with_field(calls[i], "trans_type", value)
        if value == "workflow":
            calls[i] = _with_field(calls[i], "req_extra", {"status": "succeed"})
    elif kind in ("set", "drop", "retype"):
        name = draw(st.sampled_from(sorted(set(_fields(calls[i])) | _candidates(calls[i]))))
        value = draw(FIELD_VALUES.get(name, json_values)()) if kind != "drop" else _DROP
        calls[i] = _with_field(calls[i], name, value)
        keeps = name in OUTCOME_KEEPING and kind == "set" and _keeps_outcome(name, value)
    elif kind == "repeat":
        calls.insert(i, calls[i])
    elif kind == "reorder" and len(calls) > 1:
        j = draw(st.integers(0, len(calls) - 1))
        calls[i], calls[j] = calls[j], calls[i]
    else:
        kind = "truncate"
        content = calls[i].content() or b"{}"
        cut = draw(st.integers(0, max(0, len(content) - 1)))
        calls[i] = dataclasses.replace(calls[i], raw=content[:cut])
    return Scenario(tuple(calls), (), scenario.final if keeps else "", mutation=kind)


_DROP: Final = RawJson("<drop>")
#: Fields a mutation may add to a body that lacks them: every field the endpoint reads.
TRANS_FIELDS: Final = frozenset(
    {"gid", "trans_type", "steps", "payloads", "custom_data", "query_prepared", "protocol", "req_extra"}
    | {"wait_result", "concurrent", "branch_headers", *SECONDS}
)
BRANCH_FIELDS: Final = frozenset({"gid", "trans_type", "branch_id", "data", "confirm", "cancel", "url", "op", "status"})


def _candidates(call: ApiCall) -> frozenset[str]:
    kind = call.rpc_method() if call.endpoint == "json-rpc" else call.endpoint
    return BRANCH_FIELDS if kind.startswith("register") else TRANS_FIELDS


def _fields(call: ApiCall) -> dict[str, Json]:
    return dict(call.fields())


def _with_field(call: ApiCall, name: str, value: Json) -> ApiCall:
    fields = _fields(call)
    if value is _DROP:
        fields.pop(name, None)
    else:
        fields[name] = value
    body = call.body
    if call.endpoint == "json-rpc" and isinstance(body, dict):
        return dataclasses.replace(call, body={**body, "params": fields})
    return dataclasses.replace(call, body=fields)


def _keeps_outcome(name: str, value: Json) -> bool:
    """A value that, if taken, changes nothing for branches that answer at once: large or zero, an integer."""
    if name == "branch_headers":
        # Many headers may be more than a branch server takes (Python's takes 100): its limit, not the node's.
        return not isinstance(value, dict) or len(value) <= 50
    return isinstance(value, int | float) and not isinstance(value, bool) and (value == 0 or value >= 60)


def hostile_scenarios() -> st.SearchStrategy[Scenario]:
    return scenarios().flatmap(lambda s: mutated(s))


def _get(endpoint: str, **params: str) -> ApiCall:
    return ApiCall("GET", f"{D}/{endpoint}", tuple(params.items()), headers=())


def _issue_12_examples() -> list[Scenario]:
    """The inputs issue 12 lists (items 1-7), run first by every run of the hostile test: they must keep
    the same rules as any generated request."""
    ok = busi(OK)
    saga_body: dict[str, Json] = {"gid": "@g1", "trans_type": "saga", "steps": [{"action": ok}], "payloads": ["{}"]}
    msg_body: dict[str, Json] = {**saga_body, "trans_type": "msg", "query_prepared": busi(CHECK_BACK)}
    tcc_branch: dict[str, Json] = {"gid": "@g1", "trans_type": "tcc", "branch_id": "01", "confirm": ok, "cancel": ok}
    finish_workflow: dict[str, Json] = {"gid": "@g1", "trans_type": "workflow", "req_extra": {"status": "succeed"}}

    def saga_with(final: str = "", **fields: Json) -> Scenario:
        return Scenario((post("submit", {**saga_body, **fields}),), final=final, mutation="issue 12")

    def calls(*chosen: ApiCall) -> Scenario:
        return Scenario(chosen, mutation="issue 12")

    bad_headers: list[Json] = [{"X-A": "a\r\nb"}, {"": "v"}, {"a b": "v"}, {"X-A": "a\x00b"}]
    rpc_call: dict[str, Json] = {"jsonrpc": "2.0", "id": "1"}
    return [
        calls(
            post("prepare", {"gid": "@g1", "trans_type": "tcc"}),
            post("registerBranch", tcc_branch),
            post("submit", finish_workflow),
        ),
        calls(post("prepare", {"gid": "@g1", "trans_type": "xa"}), post("submit", finish_workflow)),
        calls(post("prepare", {"gid": "@g1", "trans_type": "tcc", "retry_interval": 10**12})),
        calls(post("submit", {**msg_body, "custom_data": '{"delay":1e20}'})),
        saga_with(retry_interval=1e300),
        saga_with(timeout_to_fail=1e308),
        saga_with(request_timeout=1e20),
        saga_with(retry_interval=2**63 - 1),
        calls(_get("all", limit="²"), _get("all", createTimeStart="²"), _get("resetCronTime", limit="²")),
        saga_with(custom_data='{"orders":{"²":[0]}}'),
        calls(_get("all", position="-300:0:x")),
        calls(ApiCall("POST", "/api/json-rpc", body={**rpc_call, "method": []})),
        calls(ApiCall("POST", "/api/json-rpc", body={**rpc_call, "method": {}})),
        calls(ApiCall("POST", "/api/json-rpc", body=[{**rpc_call, "method": "newGid"}])),
        *(saga_with("succeed", branch_headers=bad) for bad in bad_headers),
        calls(post("prepare", msg_body), post("submit", {**msg_body, "custom_data": '{"delay":1e308}'})),
    ]


#: See `_issue_12_examples`.
ISSUE_12_EXAMPLES: Final = _issue_12_examples()
