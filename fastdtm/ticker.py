"""The one loop primitive every background component uses: run a callable every `interval` seconds.

Drift-compensated (sleeps the rest of the interval), logs and survives errors, never swallows
cancellation, and stops promptly.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)


class Ticker:
    def __init__(self, name: str, interval: float, tick: Callable[[], Awaitable[None]]) -> None:
        self.name = name
        self.interval = interval
        self._tick = tick
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=self.name)

    async def stop(self, grace: float = 5.0) -> None:
        """Cancel the loop; give up waiting after `grace` so a tick stuck in a client library that
        swallows cancellation cannot hold the process's shutdown hostage."""
        if self._task is not None:
            self._task.cancel()
            _, stuck = await asyncio.wait({self._task}, timeout=grace)
            if stuck:
                log.warning("%s did not stop within %.1f s; leaving it", self.name, grace)
            self._task = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            try:
                await self._tick()
            except Exception:
                log.exception("%s tick failed", self.name)
            await asyncio.sleep(max(0.0, self.interval - (loop.time() - started)))
