"""`FaultLog`: a lasting fault is logged when it starts, summarized at most every `every` seconds, and logged
when it ends; and the ticker uses it, so a tick that fails every time logs one traceback, not one per tick."""

from __future__ import annotations

import asyncio
import logging

import pytest

from fastdtm.log_throttle import FaultLog
from fastdtm.ticker import Ticker

LOGGER = "tests.log_throttle"


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def faults(clock: FakeClock) -> FaultLog:
    return FaultLog(logging.getLogger(LOGGER), "claims", unit="shards", every=30.0, clock=clock)


def lines(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    return [(r.levelno, r.getMessage()) for r in caplog.records if r.name == LOGGER]


def test_a_fault_is_logged_once_then_summarized_then_its_recovery(
    faults: FaultLog, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, LOGGER)
    for _ in range(29):  # one attempt a second: inside the summary interval
        faults.failed(ConnectionError("refused"), 86)
        clock.now += 1
    assert lines(caplog) == [(logging.WARNING, "claims failing on 86 shards: refused")]

    clock.now += 1  # 30 s after the first line
    faults.failed(ConnectionError("no reply"), 85)
    faults.failed(ConnectionError("no reply"), 85)
    clock.now += 2.5
    faults.succeeded()
    faults.succeeded()

    assert lines(caplog)[1:] == [
        (logging.WARNING, "claims still failing on 85 shards for 30 s (30 failed attempts): no reply"),
        (logging.INFO, "claims recovered on 85 shards after 32.5 s (31 failed attempts)"),
    ]
    assert not faults.failing


def test_summaries_come_at_most_every_interval(
    faults: FaultLog, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, LOGGER)
    for _ in range(1000):  # 100 s of attempts ten times a second
        faults.failed(OSError("down"), 3)
        clock.now += 0.1

    # The start, then a summary at 30, 60 and 90 s.
    assert len(lines(caplog)) == 4
    assert [message.split(" for ")[1].split(" ")[0] for _, message in lines(caplog)[1:]] == ["30", "60", "90"]


def test_another_kind_of_error_is_logged_at_once_but_only_once(
    faults: FaultLog, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, LOGGER)
    for _ in range(5):
        faults.failed(ConnectionError("refused"), 1)
        faults.failed(ValueError("bad reply"), 1)

    assert lines(caplog) == [
        (logging.WARNING, "claims failing on 1 shards: refused"),
        (logging.WARNING, "claims failing on 1 shards: bad reply"),
    ]


def test_a_new_fault_after_a_recovery_is_logged_again(
    faults: FaultLog, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, LOGGER)
    faults.succeeded()  # nothing to recover from: silent
    faults.failed(OSError("down"), 2)
    clock.now += 1
    faults.succeeded()
    faults.failed(OSError("down again"), 4)

    assert lines(caplog) == [
        (logging.WARNING, "claims failing on 2 shards: down"),
        (logging.INFO, "claims recovered on 2 shards after 1.0 s (1 failed attempts)"),
        (logging.WARNING, "claims failing on 4 shards: down again"),
    ]
    assert faults.failing


def test_without_a_unit_or_count_the_lines_name_none(clock: FakeClock, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, LOGGER)
    faults = FaultLog(logging.getLogger(LOGGER), "heartbeat", level=logging.ERROR, clock=clock)
    try:
        raise RuntimeError("boom")
    except RuntimeError as exc:
        faults.failed(exc, traceback=True)
    faults.succeeded()

    first, recovered = [r for r in caplog.records if r.name == LOGGER]
    assert (first.levelno, first.getMessage()) == (logging.ERROR, "heartbeat failing: boom")
    assert first.exc_info is not None and first.exc_info[1] is not None and "boom" in str(first.exc_info[1])
    assert recovered.getMessage() == "heartbeat recovered after 0.0 s (1 failed attempts)"


async def test_a_tick_that_keeps_failing_logs_one_traceback_and_then_its_recovery(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "fastdtm.ticker")
    calls = 0

    async def flaky() -> None:
        nonlocal calls
        calls += 1
        if calls <= 20:
            raise RuntimeError("store down")

    ticker = Ticker("flaky", 0.001, flaky, summary_every=60.0)
    ticker.start()
    for _ in range(500):
        if calls > 25:
            break
        await asyncio.sleep(0.005)
    await ticker.stop()

    records = [r for r in caplog.records if r.name == "fastdtm.ticker"]
    assert [(r.levelno, r.getMessage().split(" after ")[0]) for r in records] == [
        (logging.ERROR, "flaky tick failing: store down"),
        (logging.INFO, "flaky tick recovered"),
    ]
    assert records[0].exc_info is not None  # the first failure keeps its traceback
    assert "(20 failed attempts)" in records[1].getMessage()
