"""`promote.lua`: the submit of a prepared transaction. Pins KEYS g, b, due; ARGV gid, next_cron_ms, field/value...;
replies {"OK", hash as a flat list, branch records, next_cron_ms} after setting status `submitted`, the fields and the
due score in one call; {"STALE", status} and {"NOT_FOUND"} write nothing."""

from __future__ import annotations

from typing import Any

from tests.lua.support import KEYS, PROMOTE, T0, fields_of, records, seed, tagged, trans_state
from tests.support.redis_client import Client


async def promote(client: Client, gid: str, next_cron: int, *fields: str) -> Any:
    g, b, due, _, _ = KEYS.of_trans(gid)
    return await PROMOTE(client, [g, b, due], [gid, next_cron, *fields])


async def test_ok_submits_and_returns_what_load_would(client: Client) -> None:
    await seed(client, "g1", fields_of("g1", "prepared"), records(2), due=T0 + 9)

    reply = await promote(client, "g1", T0 + 50, "update_time", str(T0 + 1), "custom_data", "{}")

    expected = fields_of("g1", "submitted", update_time=str(T0 + 1), custom_data="{}")
    assert reply[0] == "OK"
    assert dict(zip(reply[1][::2], reply[1][1::2], strict=True)) == expected
    assert reply[2:] == [records(2), str(T0 + 50)]
    state = await trans_state(client, "g1")
    assert state.fields == expected
    assert state.due == {"g1": T0 + 50}
    assert state.branches == records(2)


async def test_refusals_write_nothing(client: Client) -> None:
    await seed(client, "g1", fields_of("g1", "submitted"), records(1), due=T0 + 9)
    before = await trans_state(client, "g1")

    assert tagged(await promote(client, "g1", T0 + 50, "update_time", "1")) == ["STALE", "submitted"]
    assert tagged(await promote(client, "g2", T0 + 50, "update_time", "1")) == ["NOT_FOUND"]

    assert await trans_state(client, "g1") == before
    assert (await trans_state(client, "g2")).fields == {}
