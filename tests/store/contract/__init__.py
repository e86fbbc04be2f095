"""The store contract: checks every `Store` (and the `KV` next to it) must pass, written against the protocols
only, so the same checks run on the embedded store, standalone Redis and Redis Cluster (tests/store/test_contract.py).

Each check is a plain `async def check(subject) -> None`; `CHECKS` lists them all. A new store passes the contract
when a `Subject` for it (tests/store/subjects.py) runs every check green.
"""

from __future__ import annotations

from tests.store.contract import console, cron, durability, holds, kv, listing, register, trans, wrong_type
from tests.store.contract.support import Check, Subject

CHECKS: tuple[Check, ...] = (
    *trans.CHECKS,
    *holds.CHECKS,
    *wrong_type.CHECKS,
    *register.CHECKS,
    *cron.CHECKS,
    *listing.CHECKS,
    *kv.CHECKS,
    *durability.CHECKS,
    *console.CHECKS,
)

__all__ = ["CHECKS", "Check", "Subject"]
