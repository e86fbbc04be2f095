"""The ticker stops even when a tick swallows its cancellation (as redis-py's asyncio client can)."""

from __future__ import annotations

import asyncio
import time

from fastdtm.ticker import Ticker


async def test_a_tick_that_swallows_cancellation_does_not_keep_the_loop_alive() -> None:
    ticks = 0

    async def stubborn() -> None:
        nonlocal ticks
        ticks += 1
        try:
            await asyncio.sleep(0.05)
        except asyncio.CancelledError:
            await asyncio.sleep(0.05)  # finishes its work instead of propagating, like a swallowed cancel

    ticker = Ticker("stubborn", 0.01, stubborn)
    ticker.start()
    await asyncio.sleep(0.02)
    started = time.monotonic()
    await ticker.stop(grace=2)
    assert time.monotonic() - started < 0.5
    seen = ticks
    await asyncio.sleep(0.1)
    assert ticks == seen, "the loop kept ticking after stop()"


async def test_errors_are_logged_and_the_loop_goes_on() -> None:
    calls = 0

    async def flaky() -> None:
        nonlocal calls
        calls += 1
        raise RuntimeError("boom")

    ticker = Ticker("flaky", 0.01, flaky)
    ticker.start()
    await asyncio.sleep(0.1)
    await ticker.stop()
    assert calls > 2
