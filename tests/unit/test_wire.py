"""Wire details: Go's time format, DTM's reply mapping of branch answers, branch URLs."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest

from fastdtm.errors import BadRequest, Conflict
from fastdtm.invoker import branch_url, classify
from fastdtm.kinds.base import Call
from fastdtm.models import Options, Transaction
from fastdtm.states import Outcome, TransStatus, TransType
from fastdtm.wire import decode_object, go_time


@pytest.fixture
def zone(request: pytest.FixtureRequest) -> Iterator[None]:
    old = os.environ.get("TZ")
    os.environ["TZ"] = request.param
    time.tzset()
    yield
    if old is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = old
    time.tzset()


@pytest.mark.parametrize("zone", ["UTC"], indirect=True)
@pytest.mark.usefixtures("zone")
def test_go_time_in_utc_drops_trailing_zeros() -> None:
    assert go_time(1_700_000_000_120) == "2023-11-14T22:13:20.12Z"
    assert go_time(1_700_000_000_000) == "2023-11-14T22:13:20Z"


@pytest.mark.parametrize("zone", ["Asia/Shanghai"], indirect=True)
@pytest.mark.usefixtures("zone")
def test_go_time_carries_the_local_offset() -> None:
    assert go_time(1_700_000_000_007) == "2023-11-15T06:13:20.007+08:00"


@pytest.mark.parametrize(
    ("status", "body", "outcome"),
    [
        (200, '{"dtm_result":"SUCCESS"}', Outcome.SUCCESS),
        (200, "", Outcome.SUCCESS),
        (409, "", Outcome.FAILURE),
        (200, '{"dtm_result":"FAILURE"}', Outcome.FAILURE),
        (425, "", Outcome.ONGOING),
        (200, '{"dtm_result":"ONGOING"}', Outcome.ONGOING),
        (409, "ONGOING", Outcome.ONGOING),  # the ONGOING test comes first
        (201, "", Outcome.ERROR),
        (204, "", Outcome.ERROR),
        (500, "", Outcome.ERROR),
        (404, "", Outcome.ERROR),
    ],
)
def test_branch_replies_map_like_dtm(status: int, body: str, outcome: Outcome) -> None:
    assert classify(status, body) is outcome


def test_branch_url_appends_dtms_query() -> None:
    trans = Transaction("g 1", TransType.SAGA, TransStatus.SUBMITTED, Options(), 0, 0)
    call = Call(1, "01", "action", "http://h/p", "")
    assert branch_url("http://h/p", trans, call) == "http://h/p?gid=g+1&trans_type=saga&branch_id=01&op=action"
    assert branch_url("http://h/p?x=1", trans, call).startswith("http://h/p?x=1&gid=")


def test_request_bodies_must_be_json_objects() -> None:
    assert decode_object(b'{"a": null}') == {"a": None}
    with pytest.raises(BadRequest):
        decode_object(b"[]")


def test_conflict_messages_end_with_failure_once() -> None:
    assert Conflict("cannot prepare.").message == "cannot prepare. FAILURE"
    assert Conflict("x FAILURE").message == "x FAILURE"
    assert Conflict("x").body() == {"dtm_result": "FAILURE", "message": "x FAILURE"}
