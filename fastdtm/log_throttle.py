"""Log a lasting fault by its changes, not by its repetitions.

A background loop that fails every tick (and, for the cron, on every shard of a dead Redis master)
would otherwise log a line per tick per shard for as long as the fault lasts: thousands of lines for
an outage of seconds, burying everything else. `FaultLog` says when a fault starts, summarizes it at
most every `every` seconds while it lasts, and says when it ends.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Final

#: Seconds between two summaries of the same lasting fault.
SUMMARY_EVERY: Final = 30.0


class FaultLog:
    """The log lines of one recurring operation's faults (one instance per operation: it holds its state).

    Call `failed` after each failed attempt and `succeeded` after each successful one. Logged: the
    first failure (and the first of each other exception type while the fault lasts, which may be a
    different fault), then at most one summary per `every` seconds, then one line when it recovers.
    """

    def __init__(
        self,
        logger: logging.Logger,
        subject: str,
        *,
        unit: str = "",
        level: int = logging.WARNING,
        every: float = SUMMARY_EVERY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = logger
        self._subject = subject
        self._unit = unit
        self._level = level
        self._every = every
        self._clock = clock
        self._since: float | None = None  # when the fault began; None while all is well
        self._said_at = 0.0
        self._kinds: set[object] = set()
        self._attempts = 0
        self._count = 0

    @property
    def failing(self) -> bool:
        return self._since is not None

    def failed(self, error: BaseException | str, count: int = 0, *, traceback: bool = False) -> None:
        """One failed attempt; `count` is how many `unit`s it failed on (0: not counted). A text
        `error` is its own kind, so it must be fixed text. `traceback`: log the exception's traceback
        with a line that opens a fault."""
        now = self._clock()
        if self._since is None:
            self._since = now
        self._attempts += 1
        self._count = count
        where = self._where(count)
        # An exception of another type is probably another fault: said at once, not left to the summary.
        kind = type(error) if isinstance(error, BaseException) else error
        if kind not in self._kinds:
            self._kinds.add(kind)
            self._said_at = now
            exc_info = None
            if traceback and isinstance(error, BaseException):
                exc_info = (type(error), error, error.__traceback__)
            self._log.log(self._level, "%s failing%s: %s", self._subject, where, error, exc_info=exc_info)
        elif now - self._said_at >= self._every:
            self._said_at = now
            self._log.log(
                self._level,
                "%s still failing%s for %.0f s (%d failed attempts): %s",
                self._subject,
                where,
                now - self._since,
                self._attempts,
                error,
            )

    def succeeded(self) -> None:
        """One successful attempt: ends the fault, if there was one, with a line saying so."""
        if self._since is None:
            return
        self._log.info(
            "%s recovered%s after %.1f s (%d failed attempts)",
            self._subject,
            self._where(self._count),
            self._clock() - self._since,
            self._attempts,
        )
        self._since = None
        self._kinds.clear()
        self._attempts = self._count = 0

    def _where(self, count: int) -> str:
        return f" on {count} {self._unit}" if self._unit and count else ""
