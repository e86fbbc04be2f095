"""The store contract (tests/store/contract/) on every store: one test per check and store, so a behaviour that
differs between the embedded store and Redis shows up as one red cell."""

from __future__ import annotations

import pytest

from tests.store.contract import CHECKS, Check, Subject


@pytest.mark.parametrize("check", CHECKS, ids=[c.__name__ for c in CHECKS])
async def test_contract(subject: Subject, check: Check) -> None:
    await check(subject)
