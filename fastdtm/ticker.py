"""The one loop primitive every background component uses: run a callable every `interval` seconds.

Drift-compensated (sleeps the rest of the interval), logs and survives errors (a failure that
repeats is logged when it starts, summarized now and then, and when it ends: not once per tick),
never swallows cancellation itself, and stops promptly. Stopping sets a flag as well as cancelling
the task: a tick may absorb a cancellation that lands inside it (a call that completes or cleans up
instead of raising CancelledError), and a loop that relied on cancellation alone would then run on
and hold the process's shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from fastdtm.log_throttle import SUMMARY_EVERY, FaultLog

log = logging.getLogger(__name__)


class Ticker:
    def __init__(
        self, name: str, interval: float, tick: Callable[[], Awaitable[None]], *, summary_every: float = SUMMARY_EVERY
    ) -> None:
        self.name = name
        self.interval = interval
        self._tick = tick
        self._faults = FaultLog(log, f"{name} tick", level=logging.ERROR, every=summary_every)
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    def start(self) -> None:
        self._stopping.clear()
        self._task = asyncio.get_running_loop().create_task(self._run(), name=self.name)

    async def stop(self, grace: float = 5.0) -> None:
        """Stop the loop; give up waiting after `grace` (the loop then ends after its current tick)."""
        if self._task is None:
            return
        self._stopping.set()
        self._task.cancel()
        _, stuck = await asyncio.wait({self._task}, timeout=grace)
        if stuck:
            log.warning("%s did not stop within %.1f s; it ends after its current tick", self.name, grace)
        self._task = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._stopping.is_set():
            started = loop.time()
            try:
                await self._tick()
            except Exception as exc:
                self._faults.failed(exc, traceback=True)
            else:
                self._faults.succeeded()
            pause = max(0.0, self.interval - (loop.time() - started))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), pause)
