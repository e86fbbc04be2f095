"""Fixtures of the unit tests: `run`, a test's coroutine on each event loop the node may use."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest
import uvloop

from tests.support.loops import Run

T = TypeVar("T")


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Run:
    """Runs a test's coroutine on a fresh loop of each kind."""
    factory = uvloop.new_event_loop if request.param == "uvloop" else asyncio.new_event_loop

    def runner(main: Coroutine[Any, Any, T]) -> T:
        with asyncio.Runner(loop_factory=factory) as loop_runner:
            return loop_runner.run(main)

    return runner
