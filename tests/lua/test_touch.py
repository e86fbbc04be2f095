"""`touch.lua`: move an unfinished transaction's next cron time (resetNextCronTime), whatever its status, never
before a round's hold ends (`held_until`).
Pins KEYS g, due; ARGV gid, next_cron_ms, now_ms; replies {"OK", status} (the due score moves, the hash gets only
`update_time`: the schedule lives in `due` alone) | {"FINISHED", status} | {"NOT_FOUND"}, the last two writing
nothing; and the `RedisStore.touch` mapping (status returned, `TransNotFound`)."""

from __future__ import annotations

from typing import Any

import pytest

from fastdtm.errors import TransNotFound
from fastdtm.states import TransStatus
from fastdtm.store.redis import RedisStore
from tests.lua.support import KEYS, T0, TOUCH, fields_of, records, seed, tagged, trans_state, wall_ms
from tests.support.redis_client import Client

DUE_AT = T0 + 10_000


async def touch(client: Client, gid: str, next_cron: int, now: int) -> Any:
    """One `touch` call, arguments in the header's order."""
    g, _, due, _, _ = KEYS.of_trans(gid)
    return await TOUCH(client, [g, due], [gid, next_cron, now])


async def test_ok_moves_the_due_score_and_sets_only_update_time(client: Client) -> None:
    await seed(client, "g1", fields_of("g1", "aborting"), records(2), due=DUE_AT)

    assert tagged(await touch(client, "g1", T0 + 5, T0 + 4)) == ["OK", "aborting"]

    state = await trans_state(client, "g1")
    assert state.due == {"g1": T0 + 5}
    assert state.fields == fields_of("g1", "aborting", update_time=str(T0 + 4))
    # The schedule has one home, the due score: a hash copy of it would drift from the cron's claims.
    assert "next_cron_time" not in state.fields
    assert state.branches == records(2)
    assert state.exp == {}


async def test_never_before_a_rounds_hold_ends(client: Client) -> None:
    await seed(client, "g1", fields_of("g1", "submitted", held_until=str(T0 + 700)), records(1), due=T0 + 700)

    assert tagged(await touch(client, "g1", T0 + 5, T0 + 4)) == ["OK", "submitted"]
    assert (await trans_state(client, "g1")).due == {"g1": T0 + 700}
    assert tagged(await touch(client, "g1", T0 + 900, T0 + 4)) == ["OK", "submitted"]
    assert (await trans_state(client, "g1")).due == {"g1": T0 + 900}


async def test_finished_when_not_due_and_nothing_changes(client: Client) -> None:
    await seed(client, "g1", fields_of("g1", "succeed"), records(2), expire_at=wall_ms() + 60_000)
    before = await trans_state(client, "g1")

    reply = await touch(client, "g1", T0 + 5, T0 + 4)

    assert tagged(reply) == ["FINISHED", "succeed"]
    # Re-adding a finished gid to `due` would make the cron pick up a transaction that has nothing left to do.
    assert await trans_state(client, "g1") == before


async def test_not_found_writes_nothing(client: Client) -> None:
    reply = await touch(client, "g1", T0 + 5, T0 + 4)

    assert tagged(reply) == ["NOT_FOUND"]
    state = await trans_state(client, "g1")
    assert state.fields == {}
    assert state.due == {}


async def test_not_found_leaves_a_stale_due_entry_alone(client: Client) -> None:
    # Removing such leftovers is the cron's job (`forget`); touch must not re-score them into the future.
    _, _, due, _, _ = KEYS.of_trans("g1")
    await client.zadd(due, {"g1": DUE_AT})

    assert tagged(await touch(client, "g1", T0 + 5, T0 + 4)) == ["NOT_FOUND"]

    assert (await trans_state(client, "g1")).due == {"g1": DUE_AT}


async def test_store_returns_the_status_of_a_finished_transaction(store: RedisStore, client: Client) -> None:
    await seed(client, "g1", fields_of("g1", "failed"), expire_at=wall_ms() + 60_000)

    assert await store.touch("g1", T0 + 5, T0 + 4) is TransStatus.FAILED


async def test_store_maps_not_found(store: RedisStore) -> None:
    with pytest.raises(TransNotFound):
        await store.touch("g1", T0 + 5, T0 + 4)


async def test_store_returns_the_status_of_an_unfinished_transaction(store: RedisStore, client: Client) -> None:
    await seed(client, "g1", fields_of("g1", "aborting"), due=DUE_AT)

    assert await store.touch("g1", T0 + 5, T0 + 4) is TransStatus.ABORTING

    state = await trans_state(client, "g1")
    assert state.due == {"g1": T0 + 5}
    assert "next_cron_time" not in state.fields
