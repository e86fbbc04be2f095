"""The pure rules of topics: DTM's stored format, what subscribe and unsubscribe do to a subscriber list,
and which input is refused (with DTM's error texts at the front of the message)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from fastdtm.errors import ApiError, Conflict, Invalid, NotFound, ServerError
from fastdtm.store.kv import KVEntry
from fastdtm.topics import (
    Subscriber,
    check_remark,
    check_topic,
    check_url,
    decode_subscribers,
    encode_subscribers,
    with_subscriber,
    without_url,
)

A = Subscriber("http://a/x", "first")
B = Subscriber("https://b/y")


def stored(v: str) -> KVEntry:
    return KVEntry("topics", "t", v, 1, 0, 0)


def test_stored_format_is_dtms() -> None:
    text = encode_subscribers([A, B])
    assert text == '[{"url":"http://a/x","remark":"first"},{"url":"https://b/y","remark":""}]'
    assert decode_subscribers(stored(text)) == [A, B]
    assert encode_subscribers([]) == "[]"


def test_decode_accepts_what_go_would() -> None:
    assert decode_subscribers(stored('[{"url":"http://a/x"},{"url":"http://c","remark":null}]')) == [
        Subscriber("http://a/x"),
        Subscriber("http://c"),
    ]


@pytest.mark.parametrize("v", ["", "not json", "{}", '["http://a"]', '[{"remark":"x"}]', '[{"url":1}]'])
def test_decode_of_a_foreign_value_is_a_server_fault(v: str) -> None:
    with pytest.raises(ServerError, match="topic 't' holds a value"):
        decode_subscribers(stored(v))


def test_subscribe_appends_and_creates() -> None:
    assert with_subscriber("t", None, A) == [A]
    assert with_subscriber("t", [], A) == [A]
    assert with_subscriber("t", [A], B) == [A, B]


def test_subscribe_of_a_present_url_conflicts() -> None:
    with pytest.raises(Conflict) as caught:
        with_subscriber("t", [A, B], Subscriber(A.url, "other remark"))
    assert caught.value.message.startswith("this url exists")
    assert caught.value.message.endswith("FAILURE")


def test_unsubscribe_keeps_the_order_of_the_rest() -> None:
    c = Subscriber("http://c")
    assert without_url("t", [A, B, c], B.url) == [A, c]
    assert without_url("t", [A], A.url) == []


@pytest.mark.parametrize(
    ("current", "text"),
    [(None, "no such a topic"), ([], "this topic is empty"), ([A], "no such an url")],
)
def test_unsubscribe_of_what_is_not_there(current: list[Subscriber] | None, text: str) -> None:
    with pytest.raises(NotFound) as caught:
        without_url("t", current, B.url)
    assert caught.value.message.startswith(text)


@pytest.mark.parametrize(
    ("check", "value", "text"),
    [
        (check_topic, "", "empty topic"),
        (check_topic, "t" * 129, "topic"),
        (check_topic, "a\nb", "topic"),
        (check_url, "", "empty url"),
        (check_url, "ftp://a/b", "url 'ftp://a/b' is neither an http"),
        (check_url, "/relative", "url '/relative' is neither an http"),
        (check_url, "host:99/pkg.Svc", "url 'host:99/pkg.Svc' is neither an http"),
        (check_url, "http://a/" + "x" * 1100, "url is longer"),
        (check_remark, "r" * 1025, "remark is longer"),
    ],
)
def test_bad_input_is_invalid(check: Callable[[str], str], value: str, text: str) -> None:
    with pytest.raises(Invalid) as caught:
        check(value)
    error: ApiError = caught.value
    assert error.status_code == 422
    assert error.message.startswith(text)


def test_good_input_passes() -> None:
    assert check_topic("orders:created 订单") == "orders:created 订单"
    assert check_url("https://h:8080/p?q=1") == "https://h:8080/p?q=1"
    assert check_remark("") == ""
