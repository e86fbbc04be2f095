"""Generated requests against every endpoint of a real node, on the embedded store and on Redis (issue 12).

Hypothesis generates (strategies in `tests/support/fuzz_*.py`):

- transactions of every trans_type as the SDKs drive them against a branch server, sometimes over
  JSON-RPC, each with the replies it must get and the status it must reach;
- the same made hostile: a field set to a boundary, huge, negative or non-integer number (up to 1e308),
  non-ASCII digits, wrong JSON types, deep nesting, control characters, giant strings, bad URLs and
  headers; a field dropped; another trans_type on an existing gid; a call repeated or reordered; a body
  cut short;
- single requests to every operation of `/api/openapi.json`: raw bodies that are no JSON object,
  structured bodies with hostile values, hostile query strings, broken JSON-RPC envelopes and batches.

Every reply must keep the rules of `tests.support.fuzz_target` (no 5xx, no error in the node's log, a
refused request writes nothing, an accepted transaction stays queryable and listed); well-formed
transactions must also get their expected replies and reach their final status.

One node per store kind serves the whole module, started with a cron interval of an hour: nothing moves
in the store unless a request moves it, so a snapshot before and after a request shows what it wrote.

The default run is small and reproducible (derandomized, fixed example counts: about half a minute for both
stores in `make test`). A longer, random run, with the Redis Cluster too and with shrinking of failures
to a minimal example:

    FASTDTM_FUZZ_EXAMPLES=500 .venv/bin/pytest tests/api/test_fuzz.py

(`FASTDTM_FUZZ_EXAMPLES` examples per test and store.)
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Final

import orjson
import pytest
from hypothesis import HealthCheck, Phase, example, given, settings, strategies as st

from fastdtm.api.openapi import document
from tests.conftest import fresh_store_url
from tests.support.busi import BusiServer, Reply as BusiReply
from tests.support.fuzz_calls import ApiCall
from tests.support.fuzz_mutations import ISSUE_12_EXAMPLES, hostile_scenarios
from tests.support.fuzz_requests import operations
from tests.support.fuzz_rules import UNSUPPORTED_MEDIA_TYPE, Description, Reply, Violation
from tests.support.fuzz_scenarios import Scenario, expected_rpc_code, scenarios
from tests.support.fuzz_target import FuzzTarget
from tests.support.fuzz_values import ERROR, FAIL, FAIL_BODY, ONGOING
from tests.support.node import NodeFactory
from tests.support.processes import tail
from tests.support.store_snapshot import reader_for

LONG_RUN: Final = int(os.environ.get("FASTDTM_FUZZ_EXAMPLES", "0") or 0)
STORE_KINDS: Final = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("redis", id="redis"),
    *([pytest.param("cluster", id="cluster", marks=pytest.mark.cluster)] if LONG_RUN else []),
]
OPERATIONS: Final = operations()
# A long run takes as long as it is asked to; shrinking alone may take minutes (Hypothesis stops it at 5).
pytestmark = pytest.mark.timeout(0 if LONG_RUN else 300)
#: The node's default `--max-body-bytes`.
MAX_BODY_BYTES: Final = 1 << 20


def fuzz(default_examples: int) -> settings:
    """The default run: derandomized, no shrinking (a failure shows the example as generated, and the run
    stays bounded); the long run: random, shrinks each failure to a minimal example."""
    return settings(
        max_examples=LONG_RUN or default_examples,
        deadline=None,
        derandomize=not LONG_RUN,
        database=None,
        phases=(Phase.explicit, Phase.generate, *((Phase.shrink,) if LONG_RUN else ())),
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.filter_too_much,
            HealthCheck.large_base_example,
        ],
    )


class UnexpectedReply(Violation):
    """A well-formed request did not get the reply DTM gives it."""


@pytest.fixture(scope="module", params=STORE_KINDS)
def target(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzTarget]:
    store_url = fresh_store_url(request, request.param, tmp_path_factory.mktemp("fuzz-store"))
    busi = BusiServer()
    busi.script(f"/{FAIL}", [409])
    busi.script(f"/{FAIL_BODY}", [BusiReply(200, '{"dtm_result":"FAILURE"}')])
    busi.script(f"/{ONGOING}", [425])
    busi.script(f"/{ERROR}", [500])
    factory = NodeFactory(lambda: tmp_path_factory.mktemp("fuzz-node"))
    fuzz_target: FuzzTarget | None = None
    try:
        # The cron sleeps for an hour: the store changes only when a request changes it.
        node = factory(store_url, "--cron-interval", "3600")
        fuzz_target = FuzzTarget(node, busi.base, reader_for(store_url), Description(document()))
        yield fuzz_target
    finally:
        if fuzz_target is not None:
            fuzz_target.close()
        factory.stop_all()
        busi.close()
        for node in factory.nodes:
            print(f"--- fastdtm node {node.base} log tail ---\n{tail(node.log_text(), 100)}")


def test_every_operation_of_the_openapi_document_is_fuzzed() -> None:
    paths = document()["paths"]
    assert isinstance(paths, dict)
    described = {(method, path) for path, item in paths.items() if isinstance(item, dict) for method in item}
    assert set(OPERATIONS) == described


def test_the_store_reader_sees_what_a_request_writes(target: FuzzTarget) -> None:
    """The refusal check compares snapshots: they must show a write, or every refusal would pass."""
    target.begin()
    before = target.reader.snapshot()
    assert target.reader.snapshot() == before
    reply = target.send(ApiCall("POST", "/api/dtmsvr/submit", body={"gid": "@g1", "trans_type": "saga", "steps": []}))
    assert reply.ok, reply.describe()
    after = target.reader.snapshot()
    assert after != before
    assert target.name("@g1") in before.diff(after)


@pytest.mark.parametrize("operation", sorted(OPERATIONS), ids=" ".join)
@given(data=st.data())
@fuzz(default_examples=12)
def test_hostile_requests_to_every_operation(
    target: FuzzTarget, operation: tuple[str, str], data: st.DataObject
) -> None:
    calls = data.draw(st.lists(OPERATIONS[operation], min_size=1, max_size=2), label="calls")
    target.begin()
    for call in calls:
        send(target, call)
    target.finish()


@given(scenario=scenarios())
@fuzz(default_examples=50)
def test_transactions_as_the_sdks_send_them(target: FuzzTarget, scenario: Scenario) -> None:
    target.begin()
    for call, code in zip(scenario.calls, scenario.codes, strict=True):
        check_expected(send(target, call), code)
    target.wait_terminal(target.name("@g1"), scenario.final)
    target.finish()


def with_issue_12_examples(test: Callable[..., None]) -> Callable[..., None]:
    for scenario in reversed(ISSUE_12_EXAMPLES):
        test = example(scenario=scenario)(test)
    return test


@given(scenario=hostile_scenarios())
@with_issue_12_examples
@fuzz(default_examples=150)
def test_hostile_transactions(target: FuzzTarget, scenario: Scenario) -> None:
    target.begin()
    replies = [send(target, call) for call in scenario.calls]
    # A node that took every call of a transaction whose outcome the mutation did not change must finish it.
    if scenario.final and not any(reply.refused for reply in replies):
        target.wait_terminal(target.name("@g1"), scenario.final)
    target.finish()


def send(target: FuzzTarget, call: ApiCall) -> Reply:
    reply = target.send(call)
    if call.endpoint == "json-rpc":
        check_rpc_envelope(reply)
    return reply


def check_expected(reply: Reply, code: int) -> None:
    if reply.call.endpoint == "json-rpc":
        if reply.rpc_code != expected_rpc_code(code):
            raise UnexpectedReply(f"expected JSON-RPC code {expected_rpc_code(code)}:\n{reply.describe()}")
    elif reply.status != code:
        raise UnexpectedReply(f"expected HTTP {code}:\n{reply.describe()}")


def check_rpc_envelope(reply: Reply) -> None:
    """JSON-RPC 2.0 §5.1: not JSON is -32700 (parse error); JSON that is not a request object (a batch
    included: DTM serves none) is -32600 (invalid request). A body over the limit is not read at all."""
    content = reply.call.content() or b""
    if len(content) > MAX_BODY_BYTES or reply.status == UNSUPPORTED_MEDIA_TYPE:  # refused before it is read
        return
    try:
        envelope = orjson.loads(content)
    except orjson.JSONDecodeError:
        expected = -32700
    else:
        if isinstance(envelope, dict):
            return
        expected = -32600
    if reply.rpc_code != expected:
        raise UnexpectedReply(f"expected JSON-RPC code {expected}:\n{reply.describe()}")
