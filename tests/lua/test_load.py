"""`load.lua`: read a transaction, its branch records and its schedule in one round trip. Pins KEYS g, b, due;
ARGV gid; replies {} when the gid is absent, else {flat field/value list, branch records in order, the gid's score
in `due` or "" (finished: no schedule)}; the schedule is read from `due` only (one source of truth, never a hash
field); and the `RedisStore.load` decoding of that reply."""

from __future__ import annotations

from typing import Any

from fastdtm.models import Branch, Options, Transaction
from fastdtm.states import BranchStatus, TransStatus, TransType
from fastdtm.store import hashes
from fastdtm.store.redis import RedisStore
from tests.lua.support import KEYS, LOAD, T0, fields_of, gids_in_shard, records, seed, trans_state, wall_ms
from tests.support.redis_client import Client

DUE_AT = T0 + 10_000


async def load(client: Client, gid: str) -> Any:
    """One `load` call, arguments in the header's order."""
    g, b, due, _, _ = KEYS.of_trans(gid)
    return await LOAD(client, [g, b, due], [gid])


async def test_missing_gid_is_an_empty_reply(client: Client) -> None:
    assert await load(client, "g1") == []


async def test_a_due_entry_without_data_is_still_absent(client: Client) -> None:
    # A gid whose data expired but which the cron has not forgotten yet: nothing to load.
    _, _, due, _, _ = KEYS.of_trans("g1")
    await client.zadd(due, {"g1": DUE_AT})

    assert await load(client, "g1") == []


async def test_fields_branch_records_and_the_due_score(client: Client) -> None:
    fields = fields_of("g1", "submitted", s1=f"failed {T0}")
    await seed(client, "g1", fields, records(3), due=DUE_AT)

    reply = await load(client, "g1")

    assert len(reply) == 3
    assert hashes.pairs(reply[0]) == fields
    assert reply[1] == records(3)
    assert reply[2] == str(DUE_AT)


async def test_without_branch_records_the_list_is_empty(client: Client) -> None:
    await seed(client, "g1", fields_of("g1"), due=DUE_AT)

    reply = await load(client, "g1")

    assert hashes.pairs(reply[0]) == fields_of("g1")
    assert reply[1] == []
    assert reply[2] == str(DUE_AT)


async def test_not_in_due_is_an_empty_schedule(client: Client) -> None:
    # Finished transactions leave `due`: they have no next cron time at all.
    await seed(client, "g1", fields_of("g1", "succeed"), records(2), expire_at=wall_ms() + 60_000)

    reply = await load(client, "g1")

    assert hashes.pairs(reply[0]) == fields_of("g1", "succeed")
    assert reply[1] == records(2)
    assert reply[2] == ""


async def test_the_schedule_is_the_due_score_not_a_hash_field(client: Client) -> None:
    # A hash written before the schedule left it still carries the field: `due` wins, the field is just data.
    await seed(client, "g1", fields_of("g1", "submitted", next_cron_time=str(T0 + 1)), due=DUE_AT)

    assert (await load(client, "g1"))[2] == str(DUE_AT)


async def test_only_its_own_gids_score_is_read(client: Client) -> None:
    mine, other = gids_in_shard(4, 2)
    await seed(client, other, fields_of(other), due=DUE_AT + 1)
    await seed(client, mine, fields_of(mine, "failed"))

    assert (await load(client, mine))[2] == ""
    assert (await load(client, other))[2] == str(DUE_AT + 1)


async def test_store_load_round_trips_a_created_transaction(store: RedisStore, client: Client) -> None:
    trans = Transaction(
        "g1", TransType.SAGA, TransStatus.SUBMITTED, Options(retry_interval=7), T0, T0, next_cron_ms=T0 + 10
    )
    done = Branch("01", "action", "http://busi/a", '{"amount": 30}', T0).with_status(BranchStatus.SUCCEED, T0 + 2)
    branches = [Branch("01", "compensate", "http://busi/c", '{"amount": 30}', T0), done]
    await store.create(trans, branches)

    assert await store.load("g1") == (trans, [_as_loaded(branches[0]), done])
    state = await trans_state(client, "g1")
    assert state.due == {"g1": T0 + 10}
    assert "next_cron_time" not in state.fields


async def test_store_load_reads_the_schedule_from_due(store: RedisStore, client: Client) -> None:
    # The cron's claim and `touch` move only the due score: load must report where it now is, even next to a
    # `next_cron_time` field that a hash written before the schedule left it may still carry.
    await seed(client, "g1", fields_of("g1", "submitted", next_cron_time=str(DUE_AT)), due=DUE_AT)
    _, _, due, _, _ = KEYS.of_trans("g1")
    await client.zadd(due, {"g1": T0 + 77})

    loaded = await store.load("g1")

    assert loaded is not None
    assert loaded[0].next_cron_ms == T0 + 77


async def test_store_load_of_a_finished_transaction_has_no_schedule(store: RedisStore, client: Client) -> None:
    await seed(client, "g1", fields_of("g1", "succeed"), expire_at=wall_ms() + 60_000)

    loaded = await store.load("g1")

    assert loaded is not None
    assert loaded[0].status is TransStatus.SUCCEED
    assert loaded[0].next_cron_ms == 0


async def test_store_load_of_a_missing_gid_is_none(store: RedisStore) -> None:
    assert await store.load("g1") is None


def _as_loaded(branch: Branch) -> Branch:
    """A prepared branch comes back with `update_ms` = its create time: the record stores no update time."""
    return Branch(branch.branch_id, branch.op, branch.url, branch.data, branch.create_ms, update_ms=branch.create_ms)
