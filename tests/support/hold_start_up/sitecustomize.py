"""Test-only: with this directory first on PYTHONPATH and HOLD_START_UP naming a file, each `fastdtm serve` process
(every uvicorn worker) stops in its start-up just before its drain watches SIGTERM, says so on stderr, and goes on
once that file exists (or after HOLD_LIMIT seconds, so that a test that died cannot leave a worker held for good).
A test can then signal a worker at that very moment, not whenever it happens to be there.

Python imports `sitecustomize` at start-up from the path; without HOLD_START_UP this module does nothing."""

from __future__ import annotations

import os
import sys
import time

HELD = "start-up held before the drain watches signals"
HOLD_LIMIT = 60.0


def _hold(release: str) -> None:
    import fastdtm.drain  # here, not at the top: only the processes a test asked to hold import fastdtm early

    watch = fastdtm.drain.Drain.watch_signals

    def held(self: fastdtm.drain.Drain) -> None:
        print(f"{HELD} [{os.getpid()}]", file=sys.stderr, flush=True)
        # A blocking wait, on purpose: nothing of the worker runs meanwhile but a signal's handler.
        given_up = time.monotonic() + HOLD_LIMIT
        while not os.path.exists(release) and time.monotonic() < given_up:
            time.sleep(0.02)
        watch(self)

    fastdtm.drain.Drain.watch_signals = held  # type: ignore[method-assign]


if os.environ.get("HOLD_START_UP"):
    _hold(os.environ["HOLD_START_UP"])
