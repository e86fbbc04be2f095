"""Test-only: with this directory first on PYTHONPATH and HOLD_START_UP naming a file, each `fastdtm serve` process
(every uvicorn worker) stops in its start-up just before its drain watches SIGTERM (or, with HOLD_AT=store, just
before it starts waiting for its store), says so on stderr, and goes on once that file exists (or after HOLD_LIMIT
seconds, so that a test that died cannot leave a worker held for good). A test can then signal a worker at that
very moment, not whenever it happens to be there.

Python imports `sitecustomize` at start-up from the path; without HOLD_START_UP this module does nothing."""

from __future__ import annotations

import os
import sys
import time

HELD = "start-up held before the drain watches signals"
HOLD_LIMIT = 60.0


HELD_BEFORE_THE_STORE = "start-up held before it waits for its store"


def _wait(release: str, said: str) -> None:
    print(f"{said} [{os.getpid()}]", file=sys.stderr, flush=True)
    # A blocking wait, on purpose: nothing of the worker runs meanwhile but a signal's handler.
    given_up = time.monotonic() + HOLD_LIMIT
    while not os.path.exists(release) and time.monotonic() < given_up:
        time.sleep(0.02)


def _hold(release: str) -> None:
    import fastdtm.drain  # here, not at the top: only the processes a test asked to hold import fastdtm early

    watch = fastdtm.drain.Drain.watch_signals

    def held(self: fastdtm.drain.Drain) -> None:
        _wait(release, HELD)
        watch(self)

    fastdtm.drain.Drain.watch_signals = held  # type: ignore[method-assign]


def _hold_before_the_store(release: str) -> None:
    import fastdtm.app
    from fastdtm.store.base import Store

    wait_for = fastdtm.app._wait_for

    async def held(store: Store, url: str) -> None:
        _wait(release, HELD_BEFORE_THE_STORE)
        await wait_for(store, url)

    fastdtm.app._wait_for = held


if os.environ.get("HOLD_START_UP"):
    if os.environ.get("HOLD_AT") == "store":
        _hold_before_the_store(os.environ["HOLD_START_UP"])
    else:
        _hold(os.environ["HOLD_START_UP"])
