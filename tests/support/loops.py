"""The type of the `run` fixture (tests/unit/conftest.py): a test's coroutine on a fresh event loop of each kind
the node may use, since asyncio's and uvloop's transports differ (how they report a reset, a half-close, TLS)."""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, Protocol, TypeVar

T = TypeVar("T")


class Run(Protocol):
    def __call__(self, main: Coroutine[Any, Any, T]) -> T: ...
