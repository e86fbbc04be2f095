"""`create.lua`: insert-if-absent of a transaction with its branch records, due entry, listing index entry and,
when it is created already finished, its expiry. Pins KEYS g, b, due, idx, exp; ARGV gid, trans_type, now_ms,
next_cron_ms|"", expire_at_ms|"", n, n field/value pairs, branch records; replies {"CREATED"} | {"EXISTS", status}
| {"WRONG_TYPE", stored_type} (a gid taken by another type, nothing written); and the `RedisStore.create` mapping
of that reply."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from redis.exceptions import ResponseError

from fastdtm.models import Branch, Options, Transaction
from fastdtm.states import BranchStatus, TransStatus, TransType
from fastdtm.store.redis import RedisStore
from tests.lua.support import (
    ABSENT,
    CREATE,
    FINISHED_TTL_MS,
    KEYS,
    NO_TTL,
    T0,
    fields_of,
    gids_in_shard,
    records,
    tagged,
    trans_state,
    wait_gone,
    wall_ms,
)
from tests.support.redis_client import Client


async def create(
    client: Client,
    gid: str,
    fields: Mapping[str, str],
    branches: Sequence[str] = (),
    *,
    now: int = T0,
    next_cron: int | str = T0 + 10_000,
    expire_at: int | str = "",
) -> Any:
    """One `create` call, arguments in the header's order."""
    flat = [item for pair in fields.items() for item in pair]
    args = [gid, fields.get("trans_type", "saga"), now, next_cron, expire_at, len(fields), *flat, *branches]
    return await CREATE(client, list(KEYS.of_trans(gid)), args)


async def test_created_then_exists_with_the_stored_status(client: Client) -> None:
    assert tagged(await create(client, "g1", fields_of("g1", "prepared"), records(2))) == ["CREATED"]
    before = await trans_state(client, "g1")

    # A second create of the same gid (as a repeated prepare or submit would send) must not overwrite anything.
    again = await create(client, "g1", fields_of("g1", "submitted"), records(4), now=T0 + 5, next_cron=T0 + 99)

    assert tagged(again) == ["EXISTS", "prepared"]
    assert await trans_state(client, "g1") == before


async def test_a_gid_taken_by_another_type_is_refused_and_nothing_changes(client: Client) -> None:
    assert tagged(await create(client, "g1", fields_of("g1", "prepared", trans_type="tcc"), records(2))) == ["CREATED"]
    before = await trans_state(client, "g1")

    again = await create(client, "g1", fields_of("g1", "submitted", trans_type="saga"), records(4), now=T0 + 5)

    assert tagged(again) == ["WRONG_TYPE", "tcc"]
    assert await trans_state(client, "g1") == before


async def test_writes_the_hash_fields_and_the_branch_list_in_order(client: Client) -> None:
    fields = fields_of("g1", "submitted", custom_data='{"k": 1}', s1="succeed 1700000000123")
    branches = records(3)

    await create(client, "g1", fields, branches)

    state = await trans_state(client, "g1")
    assert state.fields == fields
    assert state.branches == branches


async def test_without_branch_records_writes_no_list(client: Client) -> None:
    await create(client, "g1", fields_of("g1"))

    g, b, *_ = KEYS.of_trans("g1")
    assert await client.exists(g) == 1
    assert await client.exists(b) == 0


async def test_unfinished_gets_a_due_entry_at_next_cron_and_no_expiry(client: Client) -> None:
    await create(client, "g1", fields_of("g1", "submitted"), records(2), next_cron=T0 + 7_000)

    state = await trans_state(client, "g1")
    assert state.due == {"g1": T0 + 7_000}
    assert state.exp == {}
    # Unfinished transactions must never expire: losing one would lose a transaction.
    assert state.expire_at == (NO_TTL, NO_TTL)


async def test_index_entry_is_scored_with_now(client: Client) -> None:
    await create(client, "g1", fields_of("g1"), now=T0 + 42)

    assert (await trans_state(client, "g1")).idx == {"g1": T0 + 42}


async def test_created_finished_expires_and_is_never_due(client: Client) -> None:
    expire_at = wall_ms() + 60_000

    await create(client, "g1", fields_of("g1", "succeed"), records(2), next_cron="", expire_at=expire_at)

    state = await trans_state(client, "g1")
    assert state.due == {}
    assert state.expire_at == (expire_at, expire_at)
    assert state.exp == {"g1": expire_at}
    g, b, *_ = KEYS.of_trans("g1")
    assert await client.pttl(g) > 0
    assert await client.pttl(b) > 0


async def test_a_gid_back_after_its_data_expired_leaves_exp(client: Client) -> None:
    g, *_ = KEYS.of_trans("g1")
    # A real, short expiry: Redis expires by its own clock, whatever now_ms the scripts were given.
    await create(client, "g1", fields_of("g1", "failed"), records(2), next_cron="", expire_at=wall_ms() + 100)
    await wait_gone(client, g)

    reply = await create(client, "g1", fields_of("g1", "prepared"), records(1), now=T0 + 1, next_cron=T0 + 500)

    assert tagged(reply) == ["CREATED"]
    state = await trans_state(client, "g1")
    # Left in `exp`, the old expiry would make claim_due drop the live transaction from the listing.
    assert state.exp == {}
    assert state.idx == {"g1": T0 + 1}
    assert state.due == {"g1": T0 + 500}
    assert state.branches == records(1)
    assert state.expire_at == (NO_TTL, NO_TTL)


async def test_only_its_own_gid_is_written_in_the_shard_sets(client: Client) -> None:
    # Two gids of the same shard share the sorted sets: creating the second must leave the first's entries.
    first, second = gids_in_shard(7, 2)
    await create(client, first, fields_of(first), next_cron=T0 + 1)
    await create(client, second, fields_of(second), now=T0 + 2, next_cron=T0 + 3)

    state = await trans_state(client, first)
    assert state.due == {first: T0 + 1, second: T0 + 3}
    assert state.idx == {first: T0, second: T0 + 2}


async def test_many_branch_records_are_all_or_nothing(client: Client) -> None:
    # A saga of 4000 steps (8000 branches) fits in the default 1 MiB request body.
    branches = records(8_000)
    try:
        reply: Any = await create(client, "g1", fields_of("g1", "submitted"), branches)
    except ResponseError:
        reply = None

    state = await trans_state(client, "g1")
    if reply is None:
        assert state.fields == {}, "the script failed but left the transaction hash behind"
        assert state.expire_at == (ABSENT, ABSENT)
    else:
        assert tagged(reply) == ["CREATED"]
        assert len(state.branches) == len(branches)


async def test_store_create_returns_none_then_the_stored_status(store: RedisStore, client: Client) -> None:
    trans = Transaction(
        "g1", TransType.SAGA, TransStatus.SUBMITTED, Options(), create_ms=T0, update_ms=T0, next_cron_ms=T0 + 3_000
    )
    branches = [
        Branch("01", "compensate", "http://busi/c", "{}", T0),
        Branch("01", "action", "http://busi/a", "{}", T0).with_status(BranchStatus.SUCCEED, T0 + 1),
    ]

    assert await store.create(trans, branches) is None
    assert await store.create(trans, branches) is TransStatus.SUBMITTED

    state = await trans_state(client, "g1")
    assert state.due == {"g1": T0 + 3_000}
    # The schedule is the due score alone: the hash gets no copy of it.
    assert "next_cron_time" not in state.fields
    # Only branches past `prepared` get a progress field, "<status> <finish_ms>".
    assert state.fields["s1"] == f"succeed {T0 + 1}"
    assert "s0" not in state.fields


async def test_store_create_of_a_finished_transaction_expires_after_the_ttl(store: RedisStore, client: Client) -> None:
    update_ms = wall_ms()
    trans = Transaction("g1", TransType.MSG, TransStatus.SUCCEED, Options(), create_ms=update_ms, update_ms=update_ms)

    assert await store.create(trans, [Branch("01", "action", "", "", update_ms)]) is None

    state = await trans_state(client, "g1")
    assert state.due == {}
    assert state.expire_at == (update_ms + FINISHED_TTL_MS, update_ms + FINISHED_TTL_MS)
    assert state.exp == {"g1": update_ms + FINISHED_TTL_MS}
