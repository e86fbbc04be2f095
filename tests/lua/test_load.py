"""`load.lua`: read a transaction and its branch records in one round trip. Pins KEYS g, b; no ARGV; replies {}
when the gid is absent, else {flat field/value list, branch records in order}; and the `RedisStore.load` decoding
of that reply."""

from __future__ import annotations

from typing import Any

from fastdtm.models import Branch, Options, Transaction
from fastdtm.states import BranchStatus, TransStatus, TransType
from fastdtm.store import hashes
from fastdtm.store.redis import Client, RedisStore
from tests.lua.support import KEYS, LOAD, T0, fields_of, records, seed


async def load(client: Client, gid: str) -> Any:
    """One `load` call, arguments in the header's order."""
    g, b, *_ = KEYS.of_trans(gid)
    return await LOAD(client, [g, b], [])


async def test_missing_gid_is_an_empty_reply(client: Client) -> None:
    assert await load(client, "g1") == []


async def test_fields_and_branch_records(client: Client) -> None:
    fields = fields_of("g1", "submitted", s1=f"failed {T0}")
    await seed(client, "g1", fields, records(3))

    reply = await load(client, "g1")

    assert len(reply) == 2
    assert hashes.pairs(reply[0]) == fields
    assert reply[1] == records(3)


async def test_without_branch_records_the_list_is_empty(client: Client) -> None:
    await seed(client, "g1", fields_of("g1"))

    reply = await load(client, "g1")

    assert hashes.pairs(reply[0]) == fields_of("g1")
    assert reply[1] == []


async def test_store_load_round_trips_a_created_transaction(store: RedisStore) -> None:
    trans = Transaction(
        "g1", TransType.SAGA, TransStatus.SUBMITTED, Options(retry_interval=7), T0, T0, next_cron_ms=T0 + 10
    )
    done = Branch("01", "action", "http://busi/a", '{"amount": 30}', T0).with_status(BranchStatus.SUCCEED, T0 + 2)
    branches = [Branch("01", "compensate", "http://busi/c", '{"amount": 30}', T0), done]
    await store.create(trans, branches)

    assert await store.load("g1") == (trans, [_as_loaded(branches[0]), done])


async def test_store_load_of_a_missing_gid_is_none(store: RedisStore) -> None:
    assert await store.load("g1") is None


def _as_loaded(branch: Branch) -> Branch:
    """A prepared branch comes back with `update_ms` = its create time: the record stores no update time."""
    return Branch(branch.branch_id, branch.op, branch.url, branch.data, branch.create_ms, update_ms=branch.create_ms)
