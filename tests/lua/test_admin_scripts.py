"""The console's scripts (`admin_pause.lua`, `admin_resume.lua`, `admin_mark.lua`) and the attention argument of
`transition.lua`: what each writes, that every refusal writes nothing, and that an operator's action fences a
round that lost its hold (a frozen node waking up cannot undo it)."""

from __future__ import annotations

from typing import Any

import pytest

from fastdtm.models import MAX_TIME_MS, PAUSED_MS
from tests.lua.support import (
    ADMIN_MARK,
    ADMIN_PAUSE,
    ADMIN_RESUME,
    KEYS,
    RESET_CRON,
    T0,
    TAKE,
    TOUCH,
    TRANSITION,
    fields_of,
    records,
    seed,
    tagged,
    trans_state,
    zset,
)
from tests.support.redis_client import Client

GID = "g-admin"
DUE = T0 + 5_000


def att_key(gid: str = GID) -> str:
    return KEYS.attention(KEYS.shard_of(gid))


async def seeded(client: Client, status: str = "submitted", **extra: str) -> None:
    fields = fields_of(GID, status, **{"holder": "round-1", "held_until": "0", **extra})
    await seed(client, GID, fields, records(4), due=DUE)


async def pause(client: Client, now: int = T0, token: str = "op-1") -> Any:
    g, _, due, _, _ = KEYS.of_trans(GID)
    return tagged(await ADMIN_PAUSE(client, [g, due, att_key()], [GID, now, PAUSED_MS, token]))


async def resume(client: Client, now: int = T0 + 100) -> Any:
    g, _, due, _, _ = KEYS.of_trans(GID)
    return tagged(await ADMIN_RESUME(client, [g, due, att_key()], [GID, now]))


async def mark(client: Client, index: int = 2, branch_id: str = "02", op: str = "action", **kw: Any) -> Any:
    g, b, due, _, _ = KEYS.of_trans(GID)
    expected, status, now = kw.get("expected", "submitted"), kw.get("status", "succeed"), kw.get("now", T0 + 50)
    args = [GID, index, branch_id, op, expected, status, '["skip", "by hand", 1]', now, kw.get("token", "op-2")]
    return tagged(await ADMIN_MARK(client, [g, b, due], args))


async def transition(client: Client, attention: str, *, new: str = "submitted", holder: str = "round-1") -> Any:
    expire = str(T0 + 60_000) if new in ("succeed", "failed") else ""
    schedule = "-" if expire else str(DUE)
    args = [GID, "submitted", new, schedule, expire, holder, "", attention, "update_time", str(T0)]
    return tagged(await TRANSITION(client, list(KEYS.of_transition(GID)), args))


# --- transition's attention ---------------------------------------------------------------------------------


async def test_a_round_ending_in_an_error_counts_and_enters_the_attention_index(client: Client) -> None:
    await seeded(client)
    assert await transition(client, str(T0 + 1)) == ["OK"]
    assert await transition(client, str(T0 + 2)) == ["OK"]
    state = await trans_state(client, GID)
    assert state.fields["retries"] == "2" and state.fields["failing_since"] == str(T0 + 1)
    assert state.att == {GID: T0 + 1}  # since the first failed round
    assert await transition(client, "-") == ["OK"]  # a round without an error
    state = await trans_state(client, GID)
    assert "retries" not in state.fields and "failing_since" not in state.fields and state.att == {}


async def test_finishing_leaves_the_attention_index(client: Client) -> None:
    await seeded(client)
    await transition(client, str(T0 + 1))
    assert await transition(client, "", new="failed") == ["OK"]
    assert (await trans_state(client, GID)).att == {}


async def test_finishing_a_paused_transaction_leaves_the_attention_index(client: Client) -> None:
    # Paused, its rounds not failing: in the index by `paused` alone (an operator's forceStop finishes it).
    await seeded(client)
    assert await pause(client) == ["OK"]
    assert await transition(client, "", new="failed", holder="") == ["OK"]
    assert (await trans_state(client, GID)).att == {}


async def test_a_fenced_or_stale_write_touches_no_attention(client: Client) -> None:
    await seeded(client)
    before = await trans_state(client, GID)
    assert (await transition(client, str(T0), holder="round-0"))[0] == "FENCED"
    assert await trans_state(client, GID) == before


# --- pause / resume ------------------------------------------------------------------------------------------


async def test_pause_parks_the_schedule_and_fences_the_round_that_held_it(client: Client) -> None:
    await seeded(client)
    assert await pause(client) == ["OK"]
    state = await trans_state(client, GID)
    assert state.fields["paused"] == str(T0) and state.fields["holder"] == "op-1"
    assert state.due == {GID: PAUSED_MS} and state.att == {GID: T0}
    # The round that held it before (its node frozen past the hold) can write nothing any more.
    assert (await transition(client, str(T0 + 9)))[0] == "FENCED"
    # No round takes it, resetNextCronTime does not move it, resetCronTime leaves it.
    g, b, due, _, _ = KEYS.of_trans(GID)
    assert tagged(await TAKE(client, [g, b, due], [GID, T0 + 10, T0 + 20, "round-2"])) == ["PAUSED", str(T0)]
    assert tagged(await TOUCH(client, [g, due], [GID, T0 + 10, T0 + 10])) == ["PAUSED", str(T0)]
    assert await RESET_CRON(client, [due], [T0, T0 + 10, 100, PAUSED_MS]) == [0, 0]
    assert (await trans_state(client, GID)).due == {GID: PAUSED_MS}
    assert await pause(client, T0 + 30) == ["ALREADY", str(T0)]


@pytest.mark.parametrize(
    ("status", "extra", "reply"),
    [
        ("prepared", {}, ["STALE", "prepared"]),
        ("succeed", {}, ["STALE", "succeed"]),
        ("failed", {}, ["STALE", "failed"]),
        ("aborting", {"held_until": str(T0 + 1)}, ["HELD", str(T0 + 1)]),
    ],
)
async def test_pause_refusals_write_nothing(
    client: Client, status: str, extra: dict[str, str], reply: list[str]
) -> None:
    await seed(client, GID, fields_of(GID, status, holder="round-1", **extra), records(2), due=DUE)
    before = await trans_state(client, GID)
    assert await pause(client) == reply
    assert await trans_state(client, GID) == before


async def test_pause_of_a_missing_transaction(client: Client) -> None:
    assert await pause(client) == ["NOT_FOUND"]
    assert await zset(client, att_key()) == {}


async def test_resume_makes_it_due_and_keeps_a_failing_one_in_the_index(client: Client) -> None:
    await seeded(client)
    await transition(client, str(T0 - 10))  # its rounds were failing before the pause
    await pause(client)
    assert await resume(client) == ["OK"]
    state = await trans_state(client, GID)
    assert "paused" not in state.fields and state.due == {GID: T0 + 100} and state.att == {GID: T0 - 10}
    assert await resume(client) == ["NOT_PAUSED", "submitted"]


async def test_resume_of_a_healthy_one_leaves_the_index(client: Client) -> None:
    await seeded(client)
    await pause(client)
    assert await resume(client) == ["OK"]
    assert (await trans_state(client, GID)).att == {}


async def test_resume_refusals_write_nothing(client: Client) -> None:
    assert await resume(client) == ["NOT_FOUND"]
    await seeded(client, "succeed", paused=str(T0))
    before = await trans_state(client, GID)
    assert await resume(client) == ["NOT_PAUSED", "succeed"]
    assert await trans_state(client, GID) == before


# --- mark ----------------------------------------------------------------------------------------------------


async def test_mark_records_the_result_and_the_reason_and_makes_it_due(client: Client) -> None:
    await seeded(client)
    assert await mark(client) == ["OK"]
    state = await trans_state(client, GID)
    assert state.fields["s2"] == f"succeed {T0 + 50}"
    assert state.fields["o2"] == '["skip", "by hand", 1]'
    assert state.fields["holder"] == "op-2"
    assert state.due == {GID: T0 + 50}
    assert (await transition(client, ""))[0] == "FENCED"  # the round that held it before
    assert await mark(client) == ["BRANCH_DONE", f"succeed {T0 + 50}"]


async def test_mark_on_a_paused_transaction_keeps_it_paused(client: Client) -> None:
    await seeded(client)
    await pause(client)
    assert await mark(client, status="failed") == ["OK"]
    state = await trans_state(client, GID)
    assert state.fields["s2"] == f"failed {T0 + 50}" and state.due == {GID: PAUSED_MS}


@pytest.mark.parametrize(
    ("kwargs", "extra", "reply"),
    [
        ({"expected": "aborting"}, {}, ["STALE", "submitted"]),
        ({}, {"held_until": str(T0 + 51)}, ["HELD", str(T0 + 51)]),
        ({"index": 9, "branch_id": "05"}, {}, ["NO_BRANCH"]),
        ({"branch_id": "01"}, {}, ["NO_BRANCH"]),  # index 2 is 02 action
        ({"op": "compensate"}, {}, ["NO_BRANCH"]),
        ({}, {"s2": f"failed {T0}"}, ["BRANCH_DONE", f"failed {T0}"]),
    ],
)
async def test_mark_refusals_write_nothing(
    client: Client, kwargs: dict[str, Any], extra: dict[str, str], reply: list[str]
) -> None:
    await seeded(client, **extra)
    before = await trans_state(client, GID)
    assert await mark(client, **kwargs) == reply
    assert await trans_state(client, GID) == before


async def test_mark_of_a_missing_transaction(client: Client) -> None:
    assert await mark(client) == ["NOT_FOUND"]


def test_the_paused_score_is_past_every_time_a_transaction_can_be_scheduled() -> None:
    # A client may name times up to MAX_TIME_MS; the paused score must never be one of them.
    assert PAUSED_MS > MAX_TIME_MS
