"""How transactions and branches map to Redis hash fields and list items (and back).

The transaction hash holds the global fields (times in ms as decimal strings, `options` as JSON)
plus one field per branch that left `prepared`: ``s<i>`` = ``"<status> <finish_ms>"``. Branch
records are immutable JSON arrays ``[branch_id, op, url, data, create_ms]`` in a list, so a branch
result is one HSET, never a rewrite of the record.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from fastdtm import wire
from fastdtm.models import Branch, Options, Transaction
from fastdtm.notes import BranchError, Mark, Notes, decode_error, decode_mark
from fastdtm.states import TERMINAL, BranchStatus, TransStatus, TransType
from fastdtm.store.base import Change

_INT_FIELDS = {
    "create_time": "create_ms",
    "update_time": "update_ms",
    "finish_time": "finish_ms",
    "rollback_time": "rollback_ms",
    "next_cron_interval": "next_cron_interval_ms",
}
_STR_FIELDS = ("custom_data", "query_prepared", "protocol", "rollback_reason", "result")
#: A branch's last error `e<i>` or operator's mark `o<i>` (fastdtm/notes.py).
_NOTE = re.compile(r"[eo][0-9]+")


def trans_fields(trans: Transaction) -> list[str]:
    """Flat field/value list of a new transaction hash; empty values are left out."""
    out = [
        "gid",
        trans.gid,
        "trans_type",
        trans.trans_type,
        "status",
        trans.status,
        "options",
        wire.encode_text(trans.options.to_json()),
    ]
    for name in _STR_FIELDS:
        if value := getattr(trans, name):
            out += [name, value]
    for name, attr in _INT_FIELDS.items():
        if value := getattr(trans, attr):
            out += [name, str(value)]
    return out


def hold_fields(holder: str, held_until_ms: int) -> list[str]:
    """The fields of a round's hold (lua/take.lua): its token and when the hold ends (0 = released)."""
    return ["holder", holder, "held_until", str(held_until_ms)]


def branch_record(branch: Branch) -> str:
    return wire.encode_text([branch.branch_id, branch.op, branch.url, branch.data, branch.create_ms])


def branch_progress(index: int, branch: Branch) -> tuple[str, str]:
    # Concatenation rather than an f-string: formatting a StrEnum member is several times slower.
    return f"s{index}", branch.status + " " + str(branch.finish_ms)


def change_fields(change: Change) -> list[str]:
    """Hash fields a transition writes."""
    out = ["update_time", str(change.now_ms)]
    if change.status is TransStatus.SUCCEED and change.expected is not TransStatus.SUCCEED:
        out += ["finish_time", str(change.now_ms)]
    if change.status is TransStatus.FAILED and change.expected is not TransStatus.FAILED:
        out += ["rollback_time", str(change.now_ms)]
    if change.rollback_reason:
        out += ["rollback_reason", change.rollback_reason]
    if change.status not in TERMINAL and change.interval_ms is not None:
        out += ["next_cron_interval", str(change.interval_ms)]
    for index, branch in change.branches.items():
        out += branch_progress(index, branch)
    for name, value in change.fields.items():
        out += [name, value]
    if change.holder:
        out += ["held_until", str(change.held_until_ms)]
    return out


def decode_trans(fields: Mapping[str, str], next_cron_ms: str = "") -> Transaction:
    """A transaction from its hash; its schedule comes from the due index (absent once finished)."""
    ints = {attr: int(fields.get(name) or 0) for name, attr in _INT_FIELDS.items()}
    ints["next_cron_ms"] = int(float(next_cron_ms)) if next_cron_ms else 0
    return Transaction(
        gid=fields["gid"],
        trans_type=TransType(fields["trans_type"]),
        status=TransStatus(fields["status"]),
        options=Options.from_json(wire.decode(fields.get("options") or "{}")),
        custom_data=fields.get("custom_data", ""),
        query_prepared=fields.get("query_prepared", ""),
        protocol=fields.get("protocol", "http"),
        rollback_reason=fields.get("rollback_reason", ""),
        result=fields.get("result", ""),
        **ints,
    )


def decode_branches(fields: Mapping[str, str], records: Sequence[str]) -> list[Branch]:
    branches = []
    for i, record in enumerate(records):
        branch_id, op, url, data, create_ms = wire.decode(record)
        branch = Branch(branch_id, op, url, data, create_ms, update_ms=create_ms)
        progress = fields.get(f"s{i}")
        if progress:
            status, finish_ms = progress.split(" ")
            branch = branch.with_status(BranchStatus(status), int(finish_ms))
        branches.append(branch)
    return branches


def decode_notes(fields: Mapping[str, str]) -> Notes:
    """What the console shows beyond DTM's fields (fastdtm/notes.py): `e<i>`, `o<i>`, `paused`, ..."""
    errors: dict[int, BranchError] = {}
    marks: dict[int, Mark] = {}
    for name, value in fields.items():
        if _NOTE.fullmatch(name):
            if name[0] == "e":
                errors[int(name[1:])] = decode_error(value)
            else:
                marks[int(name[1:])] = decode_mark(value)
    return Notes(
        paused_ms=int(fields.get("paused") or 0),
        failing_since_ms=int(fields.get("failing_since") or 0),
        retries=int(fields.get("retries") or 0),
        held_until_ms=int(fields.get("held_until") or 0),
        errors=errors,
        marks=marks,
    )


def pairs(flat: Sequence[str]) -> dict[str, str]:
    return dict(zip(flat[::2], flat[1::2], strict=True))


def unique_field(branch: Branch) -> str:
    """The hash field marking that (branch_id, op) is registered (register_branch refuses repeats)."""
    return f"u:{branch.branch_id}:{branch.op}"
