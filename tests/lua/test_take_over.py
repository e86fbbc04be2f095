"""`take_over.lua`: a status change that hands a prepared transaction to a new round (submit: prepared ->
submitted; abort of a tcc/xa: prepared -> aborting). Pins KEYS g, b, due; ARGV gid, expected, new, next_cron_ms,
holder, field/value...; replies {"OK", hash as a flat list, branch records, next_cron_ms} after setting the status,
the fields, the holder and the hold (`held_until` = the due score) in one call, whatever hold was there;
{"STALE", status} and {"NOT_FOUND"} write nothing."""

from __future__ import annotations

from typing import Any

from tests.lua.support import KEYS, T0, TAKE_OVER, fields_of, records, seed, tagged, trans_state
from tests.support.redis_client import Client


async def take_over(client: Client, gid: str, new: str, next_cron: int, *fields: str) -> Any:
    g, b, due, _, _ = KEYS.of_trans(gid)
    return await TAKE_OVER(client, [g, b, due], [gid, "saga", "prepared", new, next_cron, "r2", *fields])


async def test_ok_submits_takes_the_transaction_and_returns_what_load_would(client: Client) -> None:
    await seed(client, "g1", fields_of("g1", "prepared"), records(2), due=T0 + 9)

    reply = await take_over(client, "g1", "submitted", T0 + 50, "update_time", str(T0 + 1), "custom_data", "{}")

    expected = fields_of(
        "g1", "submitted", update_time=str(T0 + 1), custom_data="{}", holder="r2", held_until=str(T0 + 50)
    )
    assert reply[0] == "OK"
    assert dict(zip(reply[1][::2], reply[1][1::2], strict=True)) == expected
    assert reply[2:] == [records(2), str(T0 + 50)]
    state = await trans_state(client, "g1")
    assert state.fields == expected
    assert state.due == {"g1": T0 + 50}
    assert state.branches == records(2)


async def test_a_hold_does_not_stop_it_the_status_change_fences_the_holder(client: Client) -> None:
    # A cron round holds the prepared transaction (a tcc checked for its timeout) when the app aborts it.
    held = fields_of("g1", "prepared", holder="r1", held_until=str(T0 + 10_000))
    await seed(client, "g1", held, records(1), due=T0 + 10_000)

    reply = await take_over(client, "g1", "aborting", T0 + 50, "rollback_reason", "no stock")

    assert reply[0] == "OK"
    fields = (await trans_state(client, "g1")).fields
    assert (fields["status"], fields["holder"], fields["held_until"]) == ("aborting", "r2", str(T0 + 50))
    assert fields["rollback_reason"] == "no stock"


async def test_refusals_write_nothing(client: Client) -> None:
    await seed(client, "g1", fields_of("g1", "submitted"), records(1), due=T0 + 9)
    before = await trans_state(client, "g1")

    assert tagged(await take_over(client, "g1", "submitted", T0 + 50, "update_time", "1")) == ["STALE", "submitted"]
    assert tagged(await take_over(client, "g2", "submitted", T0 + 50, "update_time", "1")) == ["NOT_FOUND"]

    assert await trans_state(client, "g1") == before
    assert (await trans_state(client, "g2")).fields == {}
