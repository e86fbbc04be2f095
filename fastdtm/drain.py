"""A node's graceful stop, as Kubernetes (or any supervisor) drives it with SIGTERM.

From the first SIGTERM or SIGINT: `/api/ready` answers 503 (a load balancer stops sending work), the cron
stops claiming and releases its shard leases at once (the other nodes take the shards over without waiting
for the lease TTL), and uvicorn stops accepting connections and lets the requests it has finish. Rounds
already running get until `--drain-timeout` after the signal; any still running then are cancelled and
hand their transaction back (its results so far written, due again at once), so a stop never leaves work
waiting for a hold or a lease to expire. The timeline, measured, is in docs/deploy.md ("Stopping").

uvicorn owns SIGTERM and SIGINT while it serves (its handler starts its own shutdown); `Drain.watch_signals`
chains in front of it for the life of the application, and gives the previous handlers back at the end.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

log = logging.getLogger(__name__)

_SIGNALS = (signal.SIGTERM, signal.SIGINT)
#: How long a round cut short by the drain may take to hand its transaction back (one store write).
HAND_BACK_TIMEOUT = 2.0


class Drain:
    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        #: time.monotonic() when the drain began; None while the node serves normally.
        self.began: float | None = None
        self._listeners: list[Callable[[], object]] = []
        self._previous: dict[int, Any] = {}

    @property
    def draining(self) -> bool:
        return self.began is not None

    def deadline(self) -> float:
        """The time.monotonic() by which running work should be done (from now if no drain began yet)."""
        return (self.began if self.began is not None else time.monotonic()) + self.timeout

    def on_begin(self, listener: Callable[[], object]) -> None:
        """Call `listener` (in the event loop) when the drain begins."""
        self._listeners.append(listener)

    def begin(self, reason: str = "stop requested") -> None:
        """Start draining (once; later calls do nothing). Safe from a signal handler: listeners are only
        scheduled on the running loop here, never run inside the handler."""
        if self.began is not None:
            return
        self.began = time.monotonic()
        log.info("%s: draining (not ready, leases released, %.1f s for running work)", reason, self.timeout)
        loop = _running_loop()
        for listener in self._listeners:
            if loop is None:
                listener()
            else:
                loop.call_soon_threadsafe(listener)

    def watch_signals(self) -> None:
        """Begin the drain on SIGTERM/SIGINT, then pass the signal to the handler that was there (uvicorn's).
        Signal handlers belong to the main thread; elsewhere (an app run in a test's thread) this does nothing."""
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in _SIGNALS:
            self._previous[signum] = signal.signal(signum, self._on_signal)

    def unwatch_signals(self) -> None:
        for signum, handler in self._previous.items():
            # None: a handler not set from Python, which cannot be put back.
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
        self._previous.clear()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.begin(signal.Signals(signum).name)
        previous = self._previous.get(signum)
        if callable(previous):
            previous(signum, frame)
        elif previous == signal.SIG_DFL or previous is None:
            # Nobody else listens (the app runs without uvicorn's handlers): the signal's own action.
            self.unwatch_signals()
            end_by_signal(signum)


async def finish_or_cancel(tasks: set[asyncio.Task[None]], deadline: float) -> None:
    """Let `tasks` (rounds) finish until `deadline` (time.monotonic()), then cancel the rest and give them
    time to hand their transactions back (a second longer than the write itself may take)."""
    if tasks:
        _, pending = await asyncio.wait(set(tasks), timeout=max(0.0, deadline - time.monotonic()))
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=HAND_BACK_TIMEOUT + 1)


def end_by_signal(signum: int) -> None:
    """End the process as the signal's default action would. As PID 1 (a container's entrypoint) the kernel
    ignores a signal whose action is the default, so the process would run on until SIGKILL: exit then with
    the status a shell reports for that signal (128 + its number)."""
    signal.signal(signum, signal.SIG_DFL)
    signal.raise_signal(signum)
    os._exit(128 + signum)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
