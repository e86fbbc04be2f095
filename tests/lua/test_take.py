"""`take.lua`: a round takes a transaction no other round holds, and reads it. Pins KEYS g, b, due; ARGV gid,
now_ms, held_until_ms, holder; replies {"OK", hash as a flat list, branch records, held_until_ms} after `holder`,
`held_until` and the due score are set in one call; {"HELD", held_until} while another round's hold ends after
now_ms, writing nothing; {"FINISHED", status} and {"NOT_FOUND"}, dropping the gid from `due` and writing nothing
else; and the `RedisStore.take` mapping (`Taken`, `Held`, None)."""

from __future__ import annotations

from typing import Any

import pytest

from fastdtm.errors import Held
from fastdtm.store.redis import RedisStore
from tests.lua.support import KEYS, T0, TAKE, fields_of, records, seed, tagged, trans_state, wall_ms
from tests.support.redis_client import Client


async def take(client: Client, gid: str, now: int, until: int, holder: str = "r2") -> Any:
    g, b, due, _, _ = KEYS.of_trans(gid)
    return await TAKE(client, [g, b, due], [gid, now, until, holder])


async def test_ok_sets_the_holder_holds_reschedules_and_reads(client: Client) -> None:
    await seed(client, "g1", fields_of("g1", "submitted", holder="r1", held_until=str(T0)), records(2), due=T0)

    reply = await take(client, "g1", T0, T0 + 500)

    expected = fields_of("g1", "submitted", holder="r2", held_until=str(T0 + 500))
    assert reply[0] == "OK"
    assert dict(zip(reply[1][::2], reply[1][1::2], strict=True)) == expected
    assert reply[2:] == [records(2), str(T0 + 500)]
    state = await trans_state(client, "g1")
    assert (state.fields, state.due) == (expected, {"g1": T0 + 500})


async def test_held_until_the_hold_ends_writing_nothing(client: Client) -> None:
    await seed(client, "g1", fields_of("g1", "aborting", holder="r1", held_until=str(T0 + 100)), records(2), due=T0)
    before = await trans_state(client, "g1")

    assert tagged(await take(client, "g1", T0 + 99, T0 + 600)) == ["HELD", str(T0 + 100)]

    assert await trans_state(client, "g1") == before
    assert (await take(client, "g1", T0 + 100, T0 + 600))[0] == "OK"


async def test_finished_and_absent_leave_the_due_index_and_nothing_else(client: Client) -> None:
    await seed(client, "g1", fields_of("g1", "failed"), records(2), due=T0, expire_at=wall_ms() + 60_000)
    g2_due = KEYS.of_trans("g2")[2]
    await client.zadd(g2_due, {"g2": T0})
    before = await trans_state(client, "g1")

    assert tagged(await take(client, "g1", T0, T0 + 500)) == ["FINISHED", "failed"]
    assert tagged(await take(client, "g2", T0, T0 + 500)) == ["NOT_FOUND"]

    after = await trans_state(client, "g1")
    assert (after.fields, after.branches, after.expire_at) == (before.fields, before.branches, before.expire_at)
    assert "g1" not in after.due
    assert await client.zscore(g2_due, "g2") is None
    assert (await trans_state(client, "g2")).fields == {}


async def test_store_maps_taken_held_and_nothing(store: RedisStore, client: Client) -> None:
    await seed(client, "g1", fields_of("g1", "submitted", held_until=str(T0 + 100)), records(2), due=T0)

    with pytest.raises(Held) as caught:
        await store.take("g1", T0, T0 + 500, "r1")
    taken = await store.take("g1", T0 + 100, T0 + 500, "r1")

    assert caught.value.until_ms == T0 + 100
    assert taken is not None
    assert (taken.held_until_ms, taken.trans.next_cron_ms, len(taken.branches)) == (T0 + 500, T0 + 500, 2)
    assert await store.take("absent", T0, T0 + 500, "r1") is None
