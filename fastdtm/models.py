"""Transactions, branches and requests as values: parsing and validation, no I/O.

A request body arrives as decoded JSON (`wire.decode`); `TransRequest.parse` checks every field's
type the way DTM's Go decoder would (JSON `null` = empty, unknown keys ignored) and raises
`Invalid` with the field's name otherwise. Rules that depend on the transaction type (steps,
payloads, URLs, custom_data) live with the kinds.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from dataclasses import field
from typing import Any, Final

from fastdtm.branch_policy import BranchPolicy
from fastdtm.errors import Invalid
from fastdtm.grpc_syntax import GrpcSyntaxError, check_metadata, is_http_url, parse_target
from fastdtm.http_syntax import HttpSyntaxError, check_header, parse_url
from fastdtm.records import record
from fastdtm.states import GRPC, HTTP, PROTOCOLS, BranchStatus, TransStatus, TransType

#: DTM strips `\n`, `\r` and `;` from gids; we refuse anything that is not printable ASCII, and
#: bound the length as DTM's SQL schema does (128).
GID_PATTERN: Final = re.compile(r"[!-:<-~]{1,128}")
BRANCH_ID_PATTERN: Final = re.compile(r"[A-Za-z0-9_\-]{1,128}")
#: A transaction's step count is bounded: a saga of thousands of steps is a mistake, not a use.
MAX_STEPS: Final = 1000
#: Branch records of one transaction, whatever made them: a saga's two per step, a msg's topics fanned out
#: to their subscribers, tcc/xa/workflow branches registered one by one.
MAX_BRANCHES: Final = 2 * MAX_STEPS
#: Decimal digits as JSON and query strings write them: str.isdigit() also takes "²", which int() refuses.
ASCII_DIGITS: Final = re.compile(r"[0-9]{1,18}")
#: The latest time a client may name, in ms (9999-12-31T23:59:59.999Z): later ones cannot be shown.
MAX_TIME_MS: Final = 253_402_300_799_999
#: The schedule (due score) of a transaction whose retries an operator paused: past any time a transaction
#: can be scheduled for, so no claim reaches it and resetCronTime can tell it apart (lua/admin_pause.lua).
PAUSED_MS: Final = MAX_TIME_MS + 1
#: The largest value of each numeric option, in its unit (seconds, or a count): what a client sends beyond
#: it is refused (422), so that no stored transaction has a time that cannot be scheduled or shown, and no
#: call or retry loop is unbounded. docs/compatibility.md, "Limits".
OPTION_LIMITS: Final = {
    "timeout_to_fail": 365 * 86_400,
    "retry_interval": 86_400,
    "request_timeout": 3_600,
    "retry_limit": 1_000,
    "retry_count": 1_000,
}
_TIMEOUT_TO_FAIL: Final = OPTION_LIMITS["timeout_to_fail"]
_RETRY_INTERVAL: Final = OPTION_LIMITS["retry_interval"]
_REQUEST_TIMEOUT: Final = OPTION_LIMITS["request_timeout"]
_RETRY_LIMIT: Final = OPTION_LIMITS["retry_limit"]
_RETRY_COUNT: Final = OPTION_LIMITS["retry_count"]


@record
class Options:
    """Per-transaction options (reference §3); 0 means "use the server's default"."""

    wait_result: bool = False
    timeout_to_fail: int = 0
    request_timeout: int = 0
    retry_interval: int = 0
    branch_headers: Mapping[str, str] = field(default_factory=dict)
    concurrent: bool = False
    retry_limit: int = 0
    retry_count: int = 0

    def to_json(self) -> dict[str, Any]:
        """DTM's `options` column: omit-if-empty except `concurrent`."""
        out: dict[str, Any] = {}
        for name in ("wait_result", "timeout_to_fail", "request_timeout", "retry_interval"):
            if value := getattr(self, name):
                out[name] = value
        if self.branch_headers:
            out["branch_headers"] = dict(self.branch_headers)
        out["concurrent"] = self.concurrent
        for name in ("retry_limit", "retry_count"):
            if value := getattr(self, name):
                out[name] = value
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Options:
        fields = _Fields(data)
        return cls(
            wait_result=fields.flag("wait_result"),
            timeout_to_fail=fields.integer("timeout_to_fail"),
            request_timeout=fields.integer("request_timeout"),
            retry_interval=fields.integer("retry_interval"),
            branch_headers=fields.str_map("branch_headers"),
            concurrent=fields.flag("concurrent"),
            retry_limit=fields.integer("retry_limit"),
            retry_count=fields.integer("retry_count"),
        )


@record
class Transaction:
    gid: str
    trans_type: TransType
    status: TransStatus
    options: Options
    create_ms: int
    update_ms: int
    custom_data: str = ""
    query_prepared: str = ""
    protocol: str = HTTP
    finish_ms: int = 0
    rollback_ms: int = 0
    rollback_reason: str = ""
    result: str = ""
    #: Current retry interval (grows on errors) and the next time the cron looks at it.
    next_cron_interval_ms: int = 0
    next_cron_ms: int = 0

    def with_status(
        self, status: TransStatus, now_ms: int, reason: str = "", *, schedule: tuple[int, int] | None = None
    ) -> Transaction:
        """A copy in `status` (and with `schedule` = (next_cron_ms, interval_ms) when given).

        Spelled out rather than `dataclasses.replace`, which costs twice as much: it runs on every write
        of the hot path."""
        next_cron_ms, interval_ms = (self.next_cron_ms, self.next_cron_interval_ms) if schedule is None else schedule
        return Transaction(
            self.gid,
            self.trans_type,
            status,
            self.options,
            self.create_ms,
            now_ms,
            self.custom_data,
            self.query_prepared,
            self.protocol,
            now_ms if status is TransStatus.SUCCEED else self.finish_ms,
            now_ms if status is TransStatus.FAILED else self.rollback_ms,
            reason or self.rollback_reason,
            self.result,
            interval_ms,
            next_cron_ms,
        )


@record
class Branch:
    """One branch operation. `data` is the body sent to `url`, passed through byte for byte."""

    branch_id: str
    op: str
    url: str
    data: str
    create_ms: int
    status: BranchStatus = BranchStatus.PREPARED
    update_ms: int = 0
    finish_ms: int = 0

    def with_status(self, status: BranchStatus, now_ms: int) -> Branch:
        # Spelled out: `dataclasses.replace` costs twice as much, on every branch result.
        return Branch(self.branch_id, self.op, self.url, self.data, self.create_ms, status, now_ms, now_ms)


@record
class TransRequest:
    """The body of prepare / submit / abort / forceStop / resetNextCronTime (reference §3)."""

    gid: str
    trans_type: str
    steps: tuple[Mapping[str, str], ...] = ()
    payloads: tuple[str, ...] = ()
    custom_data: str = ""
    query_prepared: str = ""
    #: "grpc": `payloads` are base64 (gRPC's bytes, or the UTF-8 of a JSON body's strings).
    protocol: str = HTTP
    rollback_reason: str = ""
    options: Options = field(default_factory=Options)
    #: Workflow submit: the final `status`, `rollback_reason` and `result` (base64).
    req_extra: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, data: Mapping[str, Any], binary_payloads: tuple[bytes, ...] | None = None) -> TransRequest:
        """A JSON body; the gRPC API passes its request as the same keys, with the payloads as bytes."""
        fields = _Fields(data)
        protocol = fields.text("protocol") or HTTP
        if protocol not in PROTOCOLS:
            raise Invalid(f"protocol '{protocol[:40]}' is not supported: 'http' or 'grpc'.")
        steps = fields.str_map_list("steps")
        if len(steps) > MAX_STEPS:
            raise Invalid(f"a transaction has at most {MAX_STEPS} steps, got {len(steps)}.")
        payloads = fields.str_list("payloads")
        if binary_payloads is not None:
            payloads = tuple(stored_body(p, protocol) for p in binary_payloads)
        elif protocol == GRPC:
            payloads = tuple(stored_body(p.encode(), GRPC) for p in payloads)
        return cls(
            gid=parse_gid(fields.text("gid")),
            trans_type=fields.text("trans_type"),
            steps=steps,
            payloads=payloads,
            custom_data=fields.text("custom_data"),
            query_prepared=fields.text("query_prepared"),
            protocol=protocol,
            rollback_reason=fields.text("rollback_reason"),
            options=_checked(Options.from_json(data), protocol),
            req_extra=fields.str_map("req_extra"),
        )

    def payload(self, i: int) -> str:
        """The body of step i: `payloads[i]`, or DTM's old format with the body inside the step."""
        if i < len(self.payloads):
            return self.payloads[i]
        if "data" in self.steps[i]:
            return self.steps[i]["data"]
        raise Invalid(f"steps[{i}] has no payload: send one entry in 'payloads' per step.")

    def trans_type_enum(self) -> TransType:
        return parse_trans_type(self.trans_type)


def _checked(options: Options, protocol: str) -> Options:
    """A request's options, refused beyond OPTION_LIMITS, or with branch headers the branch client could not
    send (every call would fail, for ever): gRPC metadata too for a gRPC transaction. Stored options are read
    as they are."""
    o = options
    # Spelled out before the loop that names the culprit: every submit passes here.
    if (
        o.timeout_to_fail > _TIMEOUT_TO_FAIL
        or o.retry_interval > _RETRY_INTERVAL
        or o.request_timeout > _REQUEST_TIMEOUT
        or o.retry_limit > _RETRY_LIMIT
        or o.retry_count > _RETRY_COUNT
    ):
        for name, limit in OPTION_LIMITS.items():
            if (value := getattr(options, name)) > limit:
                raise Invalid(f"field '{name}' must be within 0..{limit}, got {value}.")
    check_branch_headers(options.branch_headers, grpc=protocol == GRPC)
    return options


def check_branch_headers(headers: Mapping[str, str], *, grpc: bool) -> None:
    """Refuses (422) branch headers the HTTP client could not send, or with `grpc`, gRPC metadata could not carry."""
    for header, value in headers.items():
        try:
            check_header(header, value)
            if grpc:
                check_metadata(header, value)
        except (HttpSyntaxError, GrpcSyntaxError) as exc:
            raise Invalid(f"branch_headers: {exc}") from None


def stored_body(raw: bytes, protocol: str) -> str:
    """A branch body as a transaction of `protocol` keeps it: base64 for gRPC (bytes), the text for HTTP. Raises
    Invalid for bytes that are not UTF-8, which an HTTP transaction cannot keep."""
    if protocol == GRPC:
        return base64.b64encode(raw).decode()
    try:
        return raw.decode()
    except UnicodeDecodeError:
        raise Invalid("the branch body is not UTF-8 text, which a transaction prepared over HTTP keeps.") from None


def body_bytes(data: str, protocol: str) -> bytes:
    """The bytes a kept body stands for (`stored_body` undone); for HTTP any byte a workflow input holds is kept
    through surrogateescape (see kinds/workflow.py)."""
    if protocol == GRPC:
        return base64.b64decode(data)
    return data.encode("utf-8", "surrogateescape")


def convert_body(data: str, protocol: str, to: str) -> str:
    """A branch body kept for `protocol`, kept for `to` instead; raises Invalid as `stored_body` does."""
    return data if protocol == to else stored_body(body_bytes(data, protocol), to)


def parse_trans_type(value: str) -> TransType:
    try:
        return TransType(value)
    except ValueError:
        known = ", ".join(t.value for t in TransType)
        raise Invalid(f"unknown trans_type '{value}'; expected one of: {known}.") from None


def parse_gid(gid: str) -> str:
    if not gid:
        raise Invalid("gid is required.")
    if not GID_PATTERN.fullmatch(gid):
        raise Invalid(f"gid {gid[:140]!r} is invalid: 1-128 printable ASCII characters, no spaces or ';'.")
    return gid


def check_http_url(url: str, what: str) -> None:
    """Branch URLs must be URLs the branch client can call: absolute http(s), a host, a valid port.

    The client's own parser decides, so a URL accepted here is never one every call of would fail."""
    try:
        parse_url(url)
    except HttpSyntaxError:
        raise Invalid(f"{what} '{url[:300]}' is not an http:// or https:// URL.") from None


def check_call_url(url: str, what: str, protocol: str) -> None:
    """A branch URL of a transaction of `protocol`: an http(s) URL, or for gRPC also `host:port/pkg.Service/Method`
    (DTM calls a URL over HTTP when it starts with http:// or https://, over gRPC otherwise)."""
    if protocol != GRPC or is_http_url(url):
        check_http_url(url, what)
        return
    try:
        parse_target(url)
    except GrpcSyntaxError:
        raise Invalid(
            f"{what} '{url[:300]}' is neither an http:// or https:// URL nor a gRPC target "
            "host:port/package.Service/Method."
        ) from None


def check_branch_url(policy: BranchPolicy, url: str, what: str) -> None:
    """Refuses (422) a URL the branch-URL policy refuses without resolving it; "" (a no-op branch) passes."""
    if url and (refusal := policy.url_refusal(url)) is not None:
        raise Invalid(f"{what} '{url[:300]}' is refused: {refusal}.")


class _Fields:
    """Typed access to a decoded JSON object, with Go's null-is-empty rule."""

    __slots__ = ("_data",)

    def __init__(self, data: Mapping[str, Any]) -> None:
        self._data = data

    def text(self, name: str) -> str:
        value = self._data.get(name)
        if value is None:
            return ""
        if not isinstance(value, str):
            raise Invalid(f"field '{name}' must be a string, got {_type_name(value)}.")
        return value

    def flag(self, name: str) -> bool:
        value = self._data.get(name)
        if value is None:
            return False
        if not isinstance(value, bool):
            raise Invalid(f"field '{name}' must be a boolean, got {_type_name(value)}.")
        return value

    def integer(self, name: str) -> int:
        value = self._data.get(name)
        if value is None:
            return 0
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            raise Invalid(f"field '{name}' must be an integer, got {_type_name(value)}.")
        if value < 0:
            raise Invalid(f"field '{name}' must be >= 0, got {value}.")
        return value

    def str_map(self, name: str) -> dict[str, str]:
        value = self._data.get(name)
        if value is None:
            return {}
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise Invalid(f"field '{name}' must be an object of strings, got {_type_name(value)}.")
        return value

    def str_list(self, name: str) -> tuple[str, ...]:
        value = self._data.get(name)
        if value is None:
            return ()
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise Invalid(f"field '{name}' must be an array of strings, got {_type_name(value)}.")
        return tuple(value)

    def str_map_list(self, name: str) -> tuple[dict[str, str], ...]:
        value = self._data.get(name)
        if value is None:
            return ()
        if not isinstance(value, list):
            raise Invalid(f"field '{name}' must be an array of objects, got {_type_name(value)}.")
        for i, item in enumerate(value):
            # A loop, not all(<generator>): this runs for every step of every saga. Exact types:
            # the value comes from orjson, which builds plain dicts and strs.
            ok = type(item) is dict
            if ok:
                for v in item.values():
                    if type(v) is not str:
                        ok = False
                        break
            if not ok:
                raise Invalid(f"field '{name}[{i}]' must be an object of strings, got {_type_name(item)}.")
        return tuple(value)


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    return {bool: "boolean", int: "number", float: "number", str: "string", list: "array", dict: "object"}.get(
        type(value), type(value).__name__
    )


@record
class BranchRequest:
    """The body of registerBranch: a flat object of strings (DTM binds it to map[string]string)."""

    gid: str
    trans_type: str
    branch_id: str
    fields: Mapping[str, str]
    #: "grpc" from the gRPC API: URLs may be gRPC targets, and `data` is base64.
    protocol: str = HTTP

    @classmethod
    def parse(cls, data: Mapping[str, Any], protocol: str = HTTP) -> BranchRequest:
        for key, value in data.items():
            if not isinstance(value, str):
                raise Invalid(f"field '{key}' must be a string, got {_type_name(value)}: registerBranch takes strings.")
        branch_id = data.get("branch_id", "")
        if not BRANCH_ID_PATTERN.fullmatch(branch_id):
            raise Invalid(f"branch_id {branch_id[:140]!r} is invalid: 1-128 letters, digits, '-' or '_'.")
        return cls(parse_gid(data.get("gid", "")), data.get("trans_type", ""), branch_id, data, protocol)

    def url(self, key: str, *, required: bool) -> str:
        """An http(s) URL or a gRPC method: a branch is called the way its URL says, whichever API registers it
        (the transaction's protocol, which decides how bodies are kept, is the store's to check)."""
        url = self.fields.get(key, "")
        if url or required:
            check_call_url(url, key, GRPC)
        return url
