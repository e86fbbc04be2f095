"""JSON on the wire: decoding request bodies and encoding DTM's reply shapes (Go's omitempty rules).

orjson is used here and nowhere else (stored records and log lines go through here too). Times go
out as Go's RFC 3339 with the local offset and the fraction's trailing zeros dropped
(``2025-01-02T10:11:12.123+08:00``, ``...Z`` in UTC); byte fields (`bin_data`) as standard base64.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

import orjson

from fastdtm.errors import BadRequest, Invalid, NotAnObject
from fastdtm.models import PAUSED_MS, Branch, Transaction
from fastdtm.redaction import Redactor, hide_url_passwords
from fastdtm.states import GRPC, HTTP

if TYPE_CHECKING:  # notes.py encodes through this module
    from fastdtm.notes import Mark


def decode_object(body: bytes) -> dict[str, Any]:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise NotAnObject("request body must be a JSON object.")
    return data


def custom_data_object(text: str) -> dict[str, Any]:
    """`custom_data` of saga and msg: empty, or the JSON text of an object."""
    if not text:
        return {}
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise Invalid("custom_data must be a JSON object.") from None
    if not isinstance(data, dict):
        raise Invalid("custom_data must be a JSON object.")
    return data


def encode(value: Any) -> bytes:
    return orjson.dumps(value)


def encode_text(value: Any) -> str:
    return orjson.dumps(value).decode()


def decode(text: str | bytes) -> Any:
    """JSON this server wrote itself (stored records): no validation needed."""
    return orjson.loads(text)


#: The times `go_time` can show, in ms: datetime's range (years 1..9999), a day inside it for time zones.
_SHOWN_MS: Final = (-62_135_510_400_000, 253_402_214_400_000)


def go_time(ms: int) -> str:
    """A Unix time in ms as Go's RFC3339Nano in local time.

    A time outside the years datetime can show is shown at the nearest end instead of failing the whole
    reply: nothing stored may make a read fail (limits keep new ones inside; an older version's might not)."""
    ms = min(max(ms, _SHOWN_MS[0]), _SHOWN_MS[1])
    moment = datetime.fromtimestamp(ms / 1000, tz=UTC).astimezone()
    text = f"{moment.year:04d}{moment.strftime('-%m-%dT%H:%M:%S')}"  # %Y does not pad years before 1000
    if frac := ms % 1000:
        text += f".{frac:03d}".rstrip("0")
    offset = moment.utcoffset()
    if not offset:
        return text + "Z"
    minutes = int(offset.total_seconds()) // 60
    sign = "+" if minutes >= 0 else "-"
    return f"{text}{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def trans_json(trans: Transaction, redactor: Redactor | None = None) -> dict[str, Any]:
    """A transaction as DTM's `/query` shows it (key order as Go's struct, empty values omitted); with a
    `redactor`, without the secrets it masks (header values, URL passwords)."""
    shown = hide_url_passwords if redactor is not None else _same
    out: dict[str, Any] = {"id": 0, "create_time": go_time(trans.create_ms), "update_time": go_time(trans.update_ms)}
    _put(out, "gid", trans.gid)
    _put(out, "trans_type", str(trans.trans_type))
    _put(out, "status", str(trans.status))
    _put(out, "query_prepared", shown(trans.query_prepared))
    _put(out, "protocol", trans.protocol)
    if trans.finish_ms:
        out["finish_time"] = go_time(trans.finish_ms)
    if trans.rollback_ms:
        out["rollback_time"] = go_time(trans.rollback_ms)
    _put(out, "result", shown(trans.result))
    _put(out, "rollback_reason", shown(trans.rollback_reason))
    options = trans.options.to_json()
    if redactor is not None:
        options = redactor.options(options)
    out["options"] = encode_text(options)
    _put(out, "custom_data", trans.custom_data)
    if trans.next_cron_interval_ms:
        out["next_cron_interval"] = trans.next_cron_interval_ms // 1000
    if trans.next_cron_ms >= PAUSED_MS:
        out["paused"] = True  # an operator paused its retries (fastdtm/console.py): it has no next time
    elif trans.next_cron_ms:
        out["next_cron_time"] = go_time(trans.next_cron_ms)
    out.update(options)  # DTM embeds the option fields in the transaction object too
    return out


def branch_json(
    gid: str, branch: Branch, redactor: Redactor | None = None, *, protocol: str = HTTP, mark: Mark | None = None
) -> dict[str, Any]:
    """A branch as `/query` shows it; `bin_data` is its body in base64, which a gRPC transaction stores as is.
    `mark`: an operator's decision on it (fastdtm/console.py), shown as `operator`."""
    out: dict[str, Any] = {
        "id": 0,
        "create_time": go_time(branch.create_ms),
        "update_time": go_time(branch.update_ms or branch.create_ms),
        "gid": gid,
    }
    _put(out, "url", hide_url_passwords(branch.url) if redactor is not None else branch.url)
    _put(out, "bin_data", branch.data if protocol == GRPC else base64.b64encode(branch.data.encode()).decode())
    out["branch_id"] = branch.branch_id
    out["op"] = branch.op
    out["status"] = str(branch.status)
    if branch.finish_ms:
        out["finish_time"] = go_time(branch.finish_ms)
    if mark is not None:
        out["operator"] = {"action": mark.action, "reason": mark.reason, "time": go_time(mark.at_ms)}
    return out


def _same(text: str) -> str:
    return text


def _put(out: dict[str, Any], key: str, value: str) -> None:
    if value:
        out[key] = value
