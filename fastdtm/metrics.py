"""This process's Prometheus metrics: DTM's names and labels (so DTM's dashboards work) plus fastdtm's own.

One `Metrics` per process, built with the app and handed to the middleware, engine, cron and store; it
owns every series and renders them in the Prometheus text format (0.0.4). There is no registry object and
no module-level state.

| name | type | labels | what |
|---|---|---|---|
| `dtm_server_info` | gauge (=1) | `gin_version`, `grpc_version` | "fastdtm-<version>", "grpcio-<version>" |
| `dtm_server_process_total` | counter | `type`, `api`, `status` | API calls; fail = HTTP >= 400, gRPC not OK |
| `dtm_server_response_duration` | histogram | `type`, `api` | their duration, seconds |
| `dtm_transaction_process_total` | counter | `model`, `status` | processing rounds, by trans_type |
| `dtm_transaction_handled_duration` | histogram | `model` | per round: seconds since the transaction was created |
| `dtm_branch_process_total` | counter | `model`, `branchid`, `branchtype`, `status`, `protocol` | branch calls |
| `fastdtm_shard_leases_held` | gauge | | shard leases this node holds |
| `fastdtm_due_claimed_total` | counter | | due transactions this node's cron claimed |
| `fastdtm_claim_duration_seconds` | histogram | | one cron poll's claim over the held shards due for a look |
| `fastdtm_shard_looks_total` | counter | | shards the cron claimed from (each is one `claim_due`): its idle cost |
| `fastdtm_rounds_in_flight` | gauge | | processing rounds running on this node |
| `fastdtm_store_calls_total` | counter | `script` | store calls, by Lua script (or store method) |
| `fastdtm_branch_call_duration_seconds` | histogram | `protocol` | branch calls this node made, seconds |
| `fastdtm_transactions_finished_total` | counter | `model`, `status` | transactions this node finished |
| `fastdtm_operator_actions_total` | counter | `action`, `result` | console actions (`/api/admin`), ok or refused |

`type` is the API's protocol, "http" or "grpc"; for gRPC, `api` is the method's name in lower case. A branch
call is ok when it answered SUCCESS; its `protocol` ("http" or "grpc", a label DTM's metric lacks) is how it
was made. For HTTP, `api` is the last path segment, lower-cased, as DTM does, but without the
query string (DTM put `query?gid=...` into the label: one series per gid).

Every label is bounded, whatever clients send: `api` by the app's routes ("other" for any other path,
fastdtm.api.middleware), `type`, `status`, `model` (trans_type), `script` and the server info by the code.
Two labels of `dtm_branch_process_total` are chosen by clients: `branchid` (a TCC or XA branch id comes
from registerBranch) and `branchtype` (a workflow's op names); each keeps its first `label_values` distinct
values (`--metric-label-values`, 64) and counts later ones as "other", so that family has at most
5 models x 65 x 65 x 2 statuses x 2 protocols series. gRPC method names are bounded by the service: an
unknown method never reaches a handler (gRPC answers UNIMPLEMENTED itself).

The per-call methods are plain dict updates: `api_call` + `branch_done` take about 1.1 µs together, where
prometheus_client's `labels(...).inc()` / `.observe()` take about 9 µs for the same three updates
(`bench/metrics_bench.py`). They are not thread-safe, and need not be: every caller runs on the process's
event loop, and `render` does not await.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Sequence
from typing import Final, TypeAlias

import grpc
from mypy_extensions import mypyc_attr

from fastdtm import __version__

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
#: What a label value past its bound is counted as.
OTHER: Final = "other"
#: Distinct values a client-chosen label keeps by default (Settings.metric_label_values).
LABEL_VALUES: Final = 64
#: The Go client's default buckets, which DTM's histograms use: dashboards' quantiles stay comparable.
# Typed in full: mypyc leaves a float tuple typed by inference unset when a method reads it.
DTM_BUCKETS: Final[tuple[float, ...]] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: A claim is one Lua call per shard, in parallel: sub-millisecond normally, seconds only when Redis struggles.
CLAIM_BUCKETS: Final[tuple[float, ...]] = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

Labels: TypeAlias = tuple[str, ...]


def api_label(target: str) -> str:
    """DTM's `api` label for a request path (or target): its last segment, lower-cased, never the query."""
    path = target.partition("?")[0].rstrip("/")
    return path.rpartition("/")[2].lower()


def _number(value: float) -> str:
    """Numbers as the Go client writes them: `1`, `0.005`, `+Inf` (bucket `le` labels must match DTM's)."""
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    if isinstance(value, int) or value.is_integer():
        return str(int(value))
    return repr(value)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _pairs(names: Sequence[str], values: Labels) -> str:
    """`a="x",b="y"`: the inside of a sample's braces."""
    return ",".join(f'{name}="{_escape(value)}"' for name, value in zip(names, values, strict=True))


def _braced(pairs: str) -> str:
    return f"{{{pairs}}}" if pairs else ""


class _Family:
    """One metric name: its help text, type and label names; subclasses hold the series."""

    kind: str = ""

    def __init__(self, name: str, help_text: str, label_names: Sequence[str] = ()) -> None:
        self.name = name
        self.help = help_text
        self.label_names = tuple(label_names)

    def render(self, out: list[str]) -> None:
        out.append(f"# HELP {self.name} {self.help}")
        out.append(f"# TYPE {self.name} {self.kind}")
        self._samples(out)

    def _samples(self, out: list[str]) -> None:
        raise NotImplementedError


class _Scalar(_Family):
    """One number per label set; a family without labels starts at 0 so that it is always exposed."""

    def __init__(self, name: str, help_text: str, label_names: Sequence[str] = ()) -> None:
        super().__init__(name, help_text, label_names)
        self.values: dict[Labels, float] = {} if label_names else {(): 0}

    def _samples(self, out: list[str]) -> None:
        for labels, value in sorted(self.values.items()):
            out.append(f"{self.name}{_braced(_pairs(self.label_names, labels))} {_number(value)}")


class Counter(_Scalar):
    kind = "counter"

    def inc(self, labels: Labels, amount: float = 1) -> None:
        values = self.values
        values[labels] = values.get(labels, 0) + amount


class Gauge(_Scalar):
    kind = "gauge"

    def set(self, labels: Labels, value: float) -> None:
        self.values[labels] = value


class _Series:
    __slots__ = ("counts", "total")

    def __init__(self, buckets: int) -> None:
        #: Per bucket, not cumulative (the last one is +Inf); `render` accumulates.
        self.counts = [0] * buckets
        self.total = 0.0


class Histogram(_Family):
    kind = "histogram"

    def __init__(
        self, name: str, help_text: str, label_names: Sequence[str] = (), bounds: Sequence[float] = DTM_BUCKETS
    ) -> None:
        super().__init__(name, help_text, label_names)
        self.bounds = tuple(bounds)
        self.series: dict[Labels, _Series] = {} if label_names else {(): _Series(len(self.bounds) + 1)}

    def observe(self, labels: Labels, value: float) -> None:
        series = self.series.get(labels)
        if series is None:
            series = self.series[labels] = _Series(len(self.bounds) + 1)
        # bisect_left: a value equal to a bound belongs to that bucket (`le` = less or equal).
        series.counts[bisect_left(self.bounds, value)] += 1
        series.total += value

    def _samples(self, out: list[str]) -> None:
        les = [f'le="{_number(bound)}"' for bound in (*self.bounds, math.inf)]
        for labels, series in sorted(self.series.items()):
            pairs = _pairs(self.label_names, labels)
            bucket = f"{self.name}_bucket{{{pairs}," if pairs else f"{self.name}_bucket{{"
            cumulative = 0
            for le, count in zip(les, series.counts, strict=True):
                cumulative += count
                out.append(f"{bucket}{le}}} {cumulative}")
            out.append(f"{self.name}_sum{_braced(pairs)} {_number(series.total)}")
            out.append(f"{self.name}_count{_braced(pairs)} {cumulative}")


# A subclass of set: mypyc keeps it a Python class.
@mypyc_attr(native_class=False)
class BoundedLabel(set[str]):
    """The values one client-chosen label keeps: the first `limit` distinct ones; later ones read "other".

    A set, so that the common case (a value already kept) is one `in` test at the call site."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def admit(self, value: str) -> str:
        """The label for a value not kept yet: itself while there is room, else "other"."""
        if len(self) < self.limit:
            self.add(value)
            return value
        return OTHER


class Metrics:
    """Every metric of this process; the methods are what the middleware, engine, cron and store call."""

    def __init__(self, version: str = __version__, *, label_values: int = LABEL_VALUES) -> None:
        self._info = Gauge("dtm_server_info", "The information of this dtm server.", ("gin_version", "grpc_version"))
        self._info.set((f"fastdtm-{version}", f"grpcio-{grpc.__version__}"), 1)
        self._requests = Counter("dtm_server_process_total", "All request received by dtm", ("type", "api", "status"))
        self._latency = Histogram(
            "dtm_server_response_duration", "The request durations of a dtm server api", ("type", "api")
        )
        self._rounds = Counter(
            "dtm_transaction_process_total", "All transactions processed by dtm", ("model", "status")
        )
        self._round_age = Histogram(
            "dtm_transaction_handled_duration",
            "Histogram of handling latency of the transaction that handled by the server.",
            ("model",),
        )
        self._branches = Counter(
            "dtm_branch_process_total",
            "All branches processed by dtm",
            ("model", "branchid", "branchtype", "status", "protocol"),
        )
        self._branch_id = BoundedLabel(label_values)
        self._branch_op = BoundedLabel(label_values)
        self._leases = Gauge("fastdtm_shard_leases_held", "Shard leases this node holds.")
        self._claimed = Counter("fastdtm_due_claimed_total", "Due transactions this node's cron claimed.")
        self._claim_time = Histogram(
            "fastdtm_claim_duration_seconds",
            "Duration of one cron poll's claim over the held shards due for a look.",
            bounds=CLAIM_BUCKETS,
        )
        self._looks = Counter("fastdtm_shard_looks_total", "Shards the cron claimed from (one claim_due each).")
        self._in_flight = Gauge("fastdtm_rounds_in_flight", "Processing rounds running on this node.")
        self._store_calls = Counter(
            "fastdtm_store_calls_total",
            "Store calls, by Lua script (or store method, for plain commands).",
            ("script",),
        )
        self._call_time = Histogram(
            "fastdtm_branch_call_duration_seconds", "Duration of the branch calls this node made.", ("protocol",)
        )
        self._finished = Counter(
            "fastdtm_transactions_finished_total", "Transactions this node finished.", ("model", "status")
        )
        self._operator = Counter(
            "fastdtm_operator_actions_total", "Operator actions of the console, ok or refused.", ("action", "result")
        )
        self._families: tuple[_Family, ...] = (
            self._info,
            self._requests,
            self._latency,
            self._rounds,
            self._round_age,
            self._branches,
            self._leases,
            self._claimed,
            self._claim_time,
            self._looks,
            self._in_flight,
            self._store_calls,
            self._call_time,
            self._finished,
            self._operator,
        )

    def api_call(self, api: str, ok: bool, seconds: float, protocol: str = "http") -> None:
        """One API request; `protocol` is DTM's `type` label, "http" or "grpc"."""
        self._requests.inc((protocol, api, "ok" if ok else "fail"))
        self._latency.observe((protocol, api), seconds)

    def round_done(self, model: str, ok: bool, age_seconds: float) -> None:
        self._rounds.inc((model, "ok" if ok else "fail"))
        # create_time comes from whichever node created the transaction: clock skew can make it "future".
        self._round_age.observe((model,), max(age_seconds, 0.0))

    def branch_done(
        self, model: str, branch_id: str, op: str, ok: bool, protocol: str = "http", seconds: float = 0.0
    ) -> None:
        """One branch call; `protocol` is how it was made ("http" or "grpc"), a label DTM's metric lacks;
        `seconds` 0 for a branch with no URL (nothing was called)."""
        if seconds:
            self._call_time.observe((protocol,), seconds)
        if branch_id not in self._branch_id:
            branch_id = self._branch_id.admit(branch_id)
        if op not in self._branch_op:
            op = self._branch_op.admit(op)
        self._branches.inc((model, branch_id, op, "ok" if ok else "fail", protocol))

    def finished(self, model: str, status: str) -> None:
        self._finished.inc((model, status))

    def operator_action(self, action: str, ok: bool) -> None:
        self._operator.inc((action, "ok" if ok else "refused"))

    def snapshot(self) -> dict[str, object]:
        """The console's live figures (GET /api/admin/stats): this process's counters as they stand."""
        finished = [
            {"trans_type": m, "status": st, "count": int(n)} for (m, st), n in sorted(self._finished.values.items())
        ]
        calls = sum(self._branches.values.values())
        failed = sum(n for labels, n in self._branches.values.items() if labels[3] == "fail")
        total = 0.0
        buckets = [0] * (len(self._call_time.bounds) + 1)
        for series in self._call_time.series.values():
            total += series.total
            for i, n in enumerate(series.counts):
                buckets[i] += n
        count = sum(buckets)
        cumulative = 0
        les: list[list[float | int | str]] = []
        for bound, n in zip((*self._call_time.bounds, math.inf), buckets, strict=True):
            cumulative += n
            les.append(["+Inf" if bound == math.inf else bound, cumulative])
        return {
            "transactions": finished,
            "branch_calls": {"count": int(calls), "failed": int(failed)},
            "branch_latency": {"count": count, "sum_s": total, "buckets": les},
            "in_flight": int(self._in_flight.values.get((), 0)),
        }

    def leases_held(self, n: int) -> None:
        self._leases.set((), n)

    def claimed(self, n: int, seconds: float) -> None:
        self._claimed.inc((), n)
        self._claim_time.observe((), seconds)

    def shards_looked_at(self, n: int) -> None:
        self._looks.inc((), n)

    def rounds_in_flight(self, n: int) -> None:
        self._in_flight.set((), n)

    def store_call(self, script: str) -> None:
        self._store_calls.inc((script,))

    def render(self) -> tuple[bytes, str]:
        """The exposition body and its content type."""
        out: list[str] = []
        for family in self._families:
            family.render(out)
        out.append("")
        return "\n".join(out).encode(), CONTENT_TYPE
