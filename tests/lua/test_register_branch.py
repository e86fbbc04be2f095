"""`register_branch.lua`: append branch records to a prepared transaction of the caller's type (tcc, xa,
workflow registerBranch), refusing a (branch_id, op) registered before. Pins KEYS g, b; ARGV now_ms, trans_type, limit,
protocol, then triples record / unique field "u:<branch_id>:<op>" / status; on OK the records go to the end of the list
in order, each unique field is set, a record registered with a status other than prepared gets its progress field
s<index> = "<status> <now_ms>" (index = its place in the whole list), and update_time is set; replies {"OK"} |
{"NOT_FOUND"} | {"WRONG_TYPE", stored type} | {"NOT_PREPARED", status} | {"WRONG_PROTOCOL", stored protocol} |
{"DUPLICATE", unique field}, each refusal
writing nothing; and the `RedisStore.register_branches` mapping to `TransNotFound` / `Stale(.current)` /
`Refused`."""

from __future__ import annotations

from typing import Any

import pytest

from fastdtm.errors import Refused, Stale, TransNotFound
from fastdtm.models import Branch
from fastdtm.states import BranchStatus, Op
from fastdtm.store import hashes
from fastdtm.store.redis import RedisStore
from tests.lua.support import (
    KEYS,
    NO_TTL,
    REGISTER_BRANCH,
    T0,
    fields_of,
    gids_in_shard,
    records,
    seed,
    tagged,
    trans_state,
    wall_ms,
)
from tests.support.redis_client import Client

NOW = T0 + 500
DUE_AT = T0 + 10_000

Triple = tuple[str, str, str]


def triple(branch_id: str, op: str, status: str = "prepared") -> Triple:
    """One registered branch as the store sends it: its record, its unique field, its status."""
    return f'["{branch_id}", "{op}", "http://busi/{op}", "{{}}", {NOW}]', f"u:{branch_id}:{op}", status


def tcc_fields(gid: str, status: str = "prepared", **extra: str) -> dict[str, str]:
    return fields_of(gid, status, trans_type="tcc", **extra)


async def register(
    client: Client,
    gid: str,
    *triples: Triple,
    trans_type: str = "tcc",
    now: int = NOW,
    limit: int = 2000,
    protocol: str = "http",
) -> Any:
    """One `register_branch` call, arguments in the header's order."""
    g, b, *_ = KEYS.of_trans(gid)
    flat = (item for t in triples for item in t)
    return await REGISTER_BRANCH(client, [g, b], [now, trans_type, limit, protocol, *flat])


async def test_a_transaction_of_the_other_protocol_is_refused_and_nothing_written(client: Client) -> None:
    await seed(client, "g1", tcc_fields("g1"), due=DUE_AT)  # no protocol field: http, the default
    await seed(client, "g2", tcc_fields("g2", protocol="grpc"), due=DUE_AT)
    before = await trans_state(client, "g1"), await trans_state(client, "g2")

    assert tagged(await register(client, "g1", triple("01", "cancel"), protocol="grpc")) == ["WRONG_PROTOCOL", "http"]
    assert tagged(await register(client, "g2", triple("01", "cancel"))) == ["WRONG_PROTOCOL", "grpc"]

    assert (await trans_state(client, "g1"), await trans_state(client, "g2")) == before
    assert tagged(await register(client, "g2", triple("01", "cancel"), protocol="grpc")) == ["OK"]


async def test_no_more_records_than_the_limit_and_nothing_written(client: Client) -> None:
    await seed(client, "g1", tcc_fields("g1"), due=DUE_AT)
    assert tagged(await register(client, "g1", triple("01", "cancel"), triple("01", "confirm"), limit=3)) == ["OK"]
    before = await trans_state(client, "g1")

    over = await register(client, "g1", triple("02", "cancel"), triple("02", "confirm"), limit=3)

    assert tagged(over) == ["TOO_MANY", "2"]
    assert await trans_state(client, "g1") == before
    assert tagged(await register(client, "g1", triple("02", "cancel"), limit=3)) == ["OK"]


async def test_ok_appends_the_records_in_order_and_marks_them_registered(client: Client) -> None:
    await seed(client, "g1", tcc_fields("g1"), due=DUE_AT)
    cancel, confirm = triple("01", "cancel"), triple("01", "confirm")

    assert tagged(await register(client, "g1", cancel, confirm)) == ["OK"]

    state = await trans_state(client, "g1")
    assert state.branches == [cancel[0], confirm[0]]
    # Registered as prepared: no progress field, only the unique marks and update_time.
    assert state.fields == tcc_fields("g1", **{"u:01:cancel": "1", "u:01:confirm": "1"}, update_time=str(NOW))
    # The schedule, the listing and the expiry are not the script's business.
    assert state.due == {"g1": DUE_AT}
    assert state.idx == {"g1": T0}
    assert state.exp == {}
    assert state.expire_at == (NO_TTL, NO_TTL)


async def test_appends_after_existing_records_with_progress_at_their_list_index(client: Client) -> None:
    # Three records already (one of them finished), then a workflow registers three more steps with mixed statuses.
    await seed(client, "g1", fields_of("g1", trans_type="workflow", s1=f"failed {T0}"), records(3), due=DUE_AT)
    done, pending, failed = triple("02", "a", "succeed"), triple("03", "b"), triple("04", "c", "failed")

    assert tagged(await register(client, "g1", done, pending, failed, trans_type="workflow")) == ["OK"]

    state = await trans_state(client, "g1")
    assert state.branches == [*records(3), done[0], pending[0], failed[0]]
    assert state.fields == fields_of(
        "g1",
        trans_type="workflow",
        s1=f"failed {T0}",
        s3="succeed 0",
        s5="failed 0",
        update_time=str(NOW),
        **{"u:02:a": "1", "u:03:b": "1", "u:04:c": "1"},
    )


async def test_indexes_continue_over_successive_calls(client: Client) -> None:
    await seed(client, "g1", fields_of("g1", trans_type="workflow"))

    first, second = triple("01", "a", "succeed"), triple("02", "a", "failed")
    await register(client, "g1", first, trans_type="workflow", now=NOW)
    await register(client, "g1", second, trans_type="workflow", now=NOW + 1)

    state = await trans_state(client, "g1")
    assert state.branches == [first[0], second[0]]
    assert state.fields["s0"] == "succeed 0"
    assert state.fields["s1"] == "failed 0"
    assert state.fields["update_time"] == str(NOW + 1)


async def test_the_same_branch_id_with_another_op_is_not_a_duplicate(client: Client) -> None:
    await seed(client, "g1", tcc_fields("g1"))
    assert tagged(await register(client, "g1", triple("01", "cancel"))) == ["OK"]

    assert tagged(await register(client, "g1", triple("01", "confirm"), triple("02", "cancel"))) == ["OK"]

    assert len((await trans_state(client, "g1")).branches) == 3


async def test_duplicate_names_the_field_and_writes_nothing(client: Client) -> None:
    await seed(client, "g1", tcc_fields("g1"), due=DUE_AT)
    await register(client, "g1", triple("01", "cancel"), triple("01", "confirm"))
    before = await trans_state(client, "g1")

    # The new branch comes first: it must not be appended before the duplicate behind it is seen.
    reply = await register(client, "g1", triple("02", "cancel"), triple("01", "confirm"), now=NOW + 1)

    assert tagged(reply) == ["DUPLICATE", "u:01:confirm"]
    assert await trans_state(client, "g1") == before


async def test_a_duplicate_within_one_call_writes_nothing(client: Client) -> None:
    # Unreachable through the service today (tcc, xa and workflow always send distinct ops per call), but the
    # script's own contract is "a (branch_id, op) seen before is refused", and the list ends up holding it twice.
    await seed(client, "g1", tcc_fields("g1"), due=DUE_AT)
    before = await trans_state(client, "g1")

    reply = await register(client, "g1", triple("01", "cancel"), triple("01", "cancel"))

    assert tagged(reply) == ["DUPLICATE", "u:01:cancel"]
    assert await trans_state(client, "g1") == before


async def test_not_found_writes_nothing(client: Client) -> None:
    # A gid still in `due` whose data is gone: the script must not create a hash or a list for it.
    _, _, due, _, _ = KEYS.of_trans("g1")
    await client.zadd(due, {"g1": DUE_AT})
    before = await trans_state(client, "g1")

    assert tagged(await register(client, "g1", triple("01", "cancel"))) == ["NOT_FOUND"]

    assert await trans_state(client, "g1") == before
    g, b, *_ = KEYS.of_trans("g1")
    assert await client.exists(g, b) == 0


async def test_another_type_names_the_stored_type_and_writes_nothing(client: Client) -> None:
    await seed(client, "g1", tcc_fields("g1"), records(2), due=DUE_AT)
    before = await trans_state(client, "g1")

    assert tagged(await register(client, "g1", triple("01", "rollback"), trans_type="xa")) == ["WRONG_TYPE", "tcc"]

    assert await trans_state(client, "g1") == before


@pytest.mark.parametrize("status", ["submitted", "aborting", "succeed", "failed"])
async def test_not_prepared_names_the_status_and_writes_nothing(client: Client, status: str) -> None:
    finished = status in ("succeed", "failed")
    await seed(
        client,
        "g1",
        tcc_fields("g1", status),
        records(2),
        due=None if finished else DUE_AT,
        expire_at=wall_ms() + 60_000 if finished else None,
    )
    before = await trans_state(client, "g1")

    assert tagged(await register(client, "g1", triple("01", "cancel"))) == ["NOT_PREPARED", status]

    assert await trans_state(client, "g1") == before


async def test_the_type_is_checked_before_the_status(client: Client) -> None:
    # The store maps the two to different errors (Refused, Stale): which one wins is part of the contract.
    await seed(client, "g1", fields_of("g1", "submitted"))

    assert tagged(await register(client, "g1", triple("01", "cancel"))) == ["WRONG_TYPE", "saga"]


async def test_the_status_is_checked_before_duplicates(client: Client) -> None:
    await seed(client, "g1", tcc_fields("g1", "submitted", **{"u:01:cancel": "1"}), due=DUE_AT)

    assert tagged(await register(client, "g1", triple("01", "cancel"))) == ["NOT_PREPARED", "submitted"]


async def test_only_its_own_transaction_changes(client: Client) -> None:
    mine, other = gids_in_shard(6, 2)
    await seed(client, mine, tcc_fields(mine), due=DUE_AT)
    await seed(client, other, tcc_fields(other), records(1), due=DUE_AT + 1)
    before = await trans_state(client, other)

    assert tagged(await register(client, mine, triple("01", "cancel"))) == ["OK"]

    after = await trans_state(client, other)
    assert (after.fields, after.branches) == (before.fields, before.branches)
    assert after.due == {mine: DUE_AT, other: DUE_AT + 1}


def _tcc_pair(branch_id: str) -> list[Branch]:
    return [
        Branch(branch_id, Op.CANCEL, "http://busi/cancel", '{"amount": 30}', NOW),
        Branch(branch_id, Op.CONFIRM, "http://busi/confirm", '{"amount": 30}', NOW),
    ]


async def test_store_appends_records_that_load_reads_back(store: RedisStore, client: Client) -> None:
    await seed(client, "g1", tcc_fields("g1"), due=DUE_AT)
    branches = _tcc_pair("01")

    await store.register_branches("g1", "tcc", branches, NOW)

    state = await trans_state(client, "g1")
    assert state.branches == [hashes.branch_record(b) for b in branches]
    assert state.fields == tcc_fields("g1", **{"u:01:cancel": "1", "u:01:confirm": "1"}, update_time=str(NOW))
    loaded = await store.load("g1")
    assert loaded is not None
    assert loaded[1] == [Branch(b.branch_id, b.op, b.url, b.data, NOW, update_ms=NOW) for b in branches]


async def test_store_records_the_status_of_a_finished_step(store: RedisStore, client: Client) -> None:
    await seed(client, "g1", fields_of("g1", trans_type="workflow"), records(1), due=DUE_AT)
    step = Branch("01", "transfer", "", "payload", NOW).with_status(BranchStatus.SUCCEED, NOW)

    await store.register_branches("g1", "workflow", [step], NOW)

    assert (await trans_state(client, "g1")).fields["s1"] == "succeed 0"
    loaded = await store.load("g1")
    assert loaded is not None
    assert loaded[1][1] == step.with_status(BranchStatus.SUCCEED, 0)  # no finish time, as DTM


async def test_store_maps_not_found(store: RedisStore) -> None:
    with pytest.raises(TransNotFound):
        await store.register_branches("g1", "tcc", _tcc_pair("01"), NOW)


async def test_store_maps_not_prepared_to_stale_with_the_current_status(store: RedisStore, client: Client) -> None:
    await seed(client, "g1", tcc_fields("g1", "aborting"), due=DUE_AT)

    with pytest.raises(Stale) as caught:
        await store.register_branches("g1", "tcc", _tcc_pair("01"), NOW)

    assert caught.value.current == "aborting"


async def test_store_maps_another_type_to_refused(store: RedisStore, client: Client) -> None:
    await seed(client, "g1", tcc_fields("g1"), due=DUE_AT)
    before = await trans_state(client, "g1")

    with pytest.raises(Refused, match="is a tcc, not a xa"):
        await store.register_branches("g1", "xa", _tcc_pair("01"), NOW)

    assert await trans_state(client, "g1") == before


async def test_store_maps_a_duplicate_to_refused_naming_the_branch(store: RedisStore, client: Client) -> None:
    await seed(client, "g1", tcc_fields("g1"), due=DUE_AT)
    await store.register_branches("g1", "tcc", _tcc_pair("01"), NOW)
    before = await trans_state(client, "g1")

    with pytest.raises(Refused, match="branch 01:cancel of 'g1' is already registered"):
        await store.register_branches("g1", "tcc", [*_tcc_pair("02"), *_tcc_pair("01")], NOW + 1)

    assert await trans_state(client, "g1") == before
