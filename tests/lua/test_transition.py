"""`transition.lua`: the status compare-and-set that every change of a transaction goes through (branch
results included, as a transition to the same status). Pins KEYS g, b, due, exp, att; ARGV gid, expected, new,
schedule (""=keep, number=re-score, "-"=drop), expire_at_ms|"", holder|"", trans_type|"", attention ("", "-",
ms), field/value pairs;
replies {"OK"} | {"STALE", current} | {"FENCED", current_holder} | {"WRONG_TYPE", stored} | {"NOT_FOUND"}, with no
write at all unless OK; and the
`RedisStore.transition` mapping to `Stale(.current)` / `Fenced(.current)` / `TransNotFound`."""

from __future__ import annotations

from typing import Any

import pytest
from redis.exceptions import ResponseError

from fastdtm.errors import Fenced, Stale, TransNotFound
from fastdtm.models import Branch
from fastdtm.states import BranchStatus, TransStatus
from fastdtm.store.base import Change
from fastdtm.store.redis import RedisStore
from tests.lua.support import (
    FINISHED_TTL_MS,
    KEYS,
    NO_TTL,
    T0,
    TRANSITION,
    fields_of,
    gids_in_shard,
    records,
    seed,
    tagged,
    trans_state,
    wall_ms,
)
from tests.support.redis_client import Client

DUE_AT = T0 + 10_000


async def transition(
    client: Client,
    gid: str,
    expected: str,
    new: str,
    *fields: str,
    schedule: int | str = "",
    expire_at: int | str = "",
    holder: str = "",
    trans_type: str = "",
    attention: str = "",
) -> Any:
    """One `transition` call, arguments in the header's order."""
    args = [gid, expected, new, schedule, expire_at, holder, trans_type, attention, *fields]
    return await TRANSITION(client, list(KEYS.of_transition(gid)), args)


async def test_ok_sets_the_new_status_and_the_fields(client: Client) -> None:
    await seed(client, "g1", fields_of("g1", "prepared"), records(2), due=DUE_AT)

    reply = await transition(client, "g1", "prepared", "submitted", "update_time", str(T0 + 1), "custom_data", "x")

    assert tagged(reply) == ["OK"]
    state = await trans_state(client, "g1")
    assert state.fields == fields_of("g1", "submitted", update_time=str(T0 + 1), custom_data="x")
    assert state.branches == records(2)


async def test_stale_names_the_current_status_and_writes_nothing(client: Client) -> None:
    await seed(client, "g1", fields_of("g1", "aborting"), records(2), due=DUE_AT)
    before = await trans_state(client, "g1")

    # Everything a finishing transition can write is asked for: none of it may happen.
    reply = await transition(
        client, "g1", "submitted", "succeed", "update_time", "1", schedule="-", expire_at=wall_ms() + 60_000
    )

    assert tagged(reply) == ["STALE", "aborting"]
    assert await trans_state(client, "g1") == before


async def test_stale_even_when_the_new_status_is_the_current_one(client: Client) -> None:
    # A writer that saw "prepared" must lose even if someone else already moved it where it wanted to go.
    await seed(client, "g1", fields_of("g1", "submitted"), due=DUE_AT)
    before = await trans_state(client, "g1")

    reply = await transition(client, "g1", "prepared", "submitted", "s0", "succeed 1", schedule=T0)

    assert tagged(reply) == ["STALE", "submitted"]
    assert await trans_state(client, "g1") == before


async def test_not_found_writes_nothing(client: Client) -> None:
    # A gid still in `due` whose data is gone (the cron forgets it later): the script must not resurrect it.
    _, _, due, _, _ = KEYS.of_trans("g1")
    await client.zadd(due, {"g1": DUE_AT})
    before = await trans_state(client, "g1")

    reply = await transition(client, "g1", "submitted", "succeed", "update_time", "1", schedule="-", expire_at="1")

    assert tagged(reply) == ["NOT_FOUND"]
    assert await trans_state(client, "g1") == before
    g, b, *_ = KEYS.of_trans("g1")
    assert await client.exists(g, b) == 0


async def test_a_rounds_write_names_its_holder_and_a_stale_one_writes_nothing(client: Client) -> None:
    held = fields_of("g1", "submitted", holder="r2", held_until=str(T0 + 50))
    await seed(client, "g1", held, records(2), due=T0 + 50)
    before = await trans_state(client, "g1")

    stale = await transition(client, "g1", "submitted", "submitted", "s0", "succeed 1", schedule=T0 + 99, holder="r1")

    assert tagged(stale) == ["FENCED", "r2"]
    assert await trans_state(client, "g1") == before
    ok = await transition(client, "g1", "submitted", "submitted", "held_until", "0", schedule=T0 + 99, holder="r2")
    assert tagged(ok) == ["OK"]
    assert (await trans_state(client, "g1")).fields["held_until"] == "0"


async def test_without_a_holder_field_every_round_is_fenced_and_writes_without_one_are_unchecked(
    client: Client,
) -> None:
    await seed(client, "g1", fields_of("g1", "submitted"), records(2), due=DUE_AT)

    assert tagged(await transition(client, "g1", "submitted", "submitted", holder="r1")) == ["FENCED", ""]
    assert tagged(await transition(client, "g1", "submitted", "submitted", "update_time", "7")) == ["OK"]


async def test_same_status_records_branch_progress_only(client: Client) -> None:
    await seed(client, "g1", fields_of("g1", "submitted"), records(2), due=DUE_AT)

    reply = await transition(client, "g1", "submitted", "submitted", "s0", f"succeed {T0 + 5}")

    assert tagged(reply) == ["OK"]
    state = await trans_state(client, "g1")
    assert state.fields == fields_of("g1", "submitted", s0=f"succeed {T0 + 5}")
    assert state.due == {"g1": DUE_AT}
    assert state.exp == {}
    assert state.expire_at == (NO_TTL, NO_TTL)


@pytest.mark.parametrize(
    ("schedule", "due_after"),
    [
        pytest.param("", {"g1": DUE_AT}, id="empty-keeps"),
        pytest.param(T0 + 777, {"g1": T0 + 777}, id="number-rescores"),
        pytest.param("-", {}, id="dash-drops"),
    ],
)
async def test_schedule_argument(client: Client, schedule: int | str, due_after: dict[str, float]) -> None:
    await seed(client, "g1", fields_of("g1", "submitted"), due=DUE_AT)

    assert tagged(await transition(client, "g1", "submitted", "submitted", schedule=schedule)) == ["OK"]

    assert (await trans_state(client, "g1")).due == due_after


async def test_finishing_sets_the_expiry_and_the_exp_entry(client: Client) -> None:
    await seed(client, "g1", fields_of("g1", "submitted"), records(2), due=DUE_AT)
    expire_at = wall_ms() + 60_000

    reply = await transition(
        client, "g1", "submitted", "succeed", "finish_time", "1", schedule="-", expire_at=expire_at
    )

    assert tagged(reply) == ["OK"]
    state = await trans_state(client, "g1")
    assert state.fields["status"] == "succeed"
    assert state.due == {}
    assert state.exp == {"g1": expire_at}
    assert state.expire_at == (expire_at, expire_at)
    g, b, *_ = KEYS.of_trans("g1")
    assert await client.pttl(g) > 0
    assert await client.pttl(b) > 0


async def test_only_its_own_gid_moves_in_the_shard_sets(client: Client) -> None:
    mine, other = gids_in_shard(3, 2)
    await seed(client, mine, fields_of(mine, "submitted"), due=DUE_AT)
    await seed(client, other, fields_of(other, "submitted"), records(1), due=DUE_AT + 1)

    await transition(client, mine, "submitted", "failed", schedule="-", expire_at=wall_ms() + 60_000)

    state = await trans_state(client, other)
    assert state.due == {other: DUE_AT + 1}
    assert list(state.exp) == [mine]
    assert state.expire_at == (NO_TTL, NO_TTL)


async def test_many_fields_are_all_or_nothing(client: Client) -> None:
    # One round of a concurrent saga with thousands of branches records all their results in one transition.
    await seed(client, "g1", fields_of("g1", "submitted"), due=DUE_AT)
    before = await trans_state(client, "g1")
    progress = [item for i in range(5_000) for item in (f"s{i}", f"failed {T0}")]
    try:
        reply: Any = await transition(client, "g1", "submitted", "aborting", *progress, schedule=T0)
    except ResponseError:
        reply = None

    state = await trans_state(client, "g1")
    if reply is None:
        assert state == before, "the script failed but left a partial write behind"
    else:
        assert tagged(reply) == ["OK"]
        assert len(state.fields) == len(before.fields) + 5_000


async def test_a_status_change_writes_every_field_of_a_long_run(client: Client) -> None:
    # The status rides with the first run of fields: no pair may be split or lost at a run's end.
    await seed(client, "g1", fields_of("g1", "submitted"), due=DUE_AT)
    progress = {f"s{i}": f"succeed {T0 + i}" for i in range(1_200)}

    reply = await transition(client, "g1", "submitted", "succeed", *[x for kv in progress.items() for x in kv])

    assert tagged(reply) == ["OK"]
    assert (await trans_state(client, "g1")).fields == {**fields_of("g1", "succeed"), **progress}


async def test_store_maps_stale_with_the_current_status(store: RedisStore, client: Client) -> None:
    await seed(client, "g1", fields_of("g1", "aborting"), due=DUE_AT)

    with pytest.raises(Stale) as caught:
        await store.transition(Change("g1", TransStatus.SUBMITTED, TransStatus.SUCCEED, T0))

    assert caught.value.current == "aborting"


async def test_store_maps_fenced_with_the_current_holder(store: RedisStore, client: Client) -> None:
    await seed(client, "g1", fields_of("g1", "submitted", holder="r2"), records(1), due=DUE_AT)
    change = Change("g1", TransStatus.SUBMITTED, TransStatus.SUBMITTED, T0 + 1, holder="r1", held_until_ms=T0 + 9)

    with pytest.raises(Fenced) as caught:
        await store.transition(change)

    assert caught.value.current == "r2"


async def test_store_maps_not_found(store: RedisStore) -> None:
    with pytest.raises(TransNotFound):
        await store.transition(Change("g1", TransStatus.SUBMITTED, TransStatus.SUCCEED, T0))


async def test_store_records_a_branch_and_reschedules(store: RedisStore, client: Client) -> None:
    await seed(client, "g1", fields_of("g1", "submitted"), records(2), due=DUE_AT)
    branch = Branch("01", "action", "http://busi/0", "{}", T0).with_status(BranchStatus.SUCCEED, T0 + 9)

    change = Change("g1", TransStatus.SUBMITTED, TransStatus.SUBMITTED, T0 + 9, {0: branch}, next_cron_ms=T0 + 99)
    await store.transition(change)

    state = await trans_state(client, "g1")
    assert state.fields == fields_of("g1", "submitted", s0=f"succeed {T0 + 9}", update_time=str(T0 + 9))
    # The new schedule is the due score alone: no hash copy of it.
    assert "next_cron_time" not in state.fields
    assert state.due == {"g1": T0 + 99}


async def test_store_reschedules_with_an_interval_but_no_next_cron_time_field(
    store: RedisStore, client: Client
) -> None:
    await seed(client, "g1", fields_of("g1", "prepared"), due=DUE_AT)

    await store.transition(
        Change("g1", TransStatus.PREPARED, TransStatus.SUBMITTED, T0 + 3, next_cron_ms=T0 + 50, interval_ms=40)
    )

    state = await trans_state(client, "g1")
    assert state.fields == fields_of("g1", "submitted", update_time=str(T0 + 3), next_cron_interval="40")
    assert "next_cron_time" not in state.fields
    assert state.due == {"g1": T0 + 50}


async def test_store_finishing_drops_due_and_expires_after_the_ttl(store: RedisStore, client: Client) -> None:
    await seed(client, "g1", fields_of("g1", "submitted"), records(2), due=DUE_AT)
    now = wall_ms()

    await store.transition(Change("g1", TransStatus.SUBMITTED, TransStatus.SUCCEED, now, next_cron_ms=T0 + 1))

    state = await trans_state(client, "g1")
    assert state.fields["finish_time"] == str(now)
    assert "next_cron_time" not in state.fields
    assert state.due == {}
    assert state.exp == {"g1": now + FINISHED_TTL_MS}
    assert state.expire_at == (now + FINISHED_TTL_MS, now + FINISHED_TTL_MS)
