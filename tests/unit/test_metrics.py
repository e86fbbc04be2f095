"""`Metrics`: DTM's metric names and labels, fastdtm's own, and an exposition body Prometheus accepts."""

from __future__ import annotations

import re

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from fastdtm import __version__
from fastdtm.metrics import CONTENT_TYPE, LABEL_VALUES, Metrics, api_label

# One exposition line (text format 0.0.4): a HELP or TYPE comment, or `name{label="value",...} number`.
NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:\\[\\"n]|[^\\"\n])*"'
NUMBER = r"-?[0-9]+(?:\.[0-9]+)?(?:e[+-]?[0-9]+)?|\+Inf|-Inf|NaN"
SAMPLE_LINE = re.compile(rf"{NAME}(?:\{{{LABEL}(?:,{LABEL})*\}})? (?:{NUMBER})")
COMMENT_LINE = re.compile(rf"# HELP {NAME} .*|# TYPE {NAME} (?:counter|gauge|histogram)")

DTM_FAMILIES = {
    "dtm_server_info": ("gauge", {"gin_version", "grpc_version"}),
    "dtm_server_process_total": ("counter", {"type", "api", "status"}),
    "dtm_server_response_duration": ("histogram", {"type", "api"}),
    "dtm_transaction_process_total": ("counter", {"model", "status"}),
    "dtm_transaction_handled_duration": ("histogram", {"model"}),
    "dtm_branch_process_total": ("counter", {"model", "branchid", "branchtype", "status", "protocol"}),
}
FASTDTM_FAMILIES = {
    "fastdtm_shard_leases_held": ("gauge", set()),
    "fastdtm_due_claimed_total": ("counter", set()),
    "fastdtm_claim_duration_seconds": ("histogram", set()),
    "fastdtm_shard_looks_total": ("counter", set()),
    "fastdtm_rounds_in_flight": ("gauge", set()),
    "fastdtm_store_calls_total": ("counter", {"script"}),
    "fastdtm_branch_call_duration_seconds": ("histogram", {"protocol"}),
    "fastdtm_transactions_finished_total": ("counter", {"model", "status"}),
    "fastdtm_operator_actions_total": ("counter", {"action", "result"}),
}


def scrape(metrics: Metrics) -> list[Sample]:
    body, content_type = metrics.render()
    assert content_type == CONTENT_TYPE
    return [s for family in text_string_to_metric_families(body.decode()) for s in family.samples]


def value(metrics: Metrics, name: str, **labels: str) -> float:
    found = [s.value for s in scrape(metrics) if s.name == name and s.labels == labels]
    assert len(found) == 1, f"{name}{labels}: {len(found)} samples"
    return found[0]


def busy_metrics() -> Metrics:
    metrics = Metrics("9.9.9")
    metrics.api_call("submit", True, 0.003)
    metrics.api_call("submit", False, 0.2)
    metrics.api_call("query", True, 0.005)
    metrics.round_done("saga", True, 0.04)
    metrics.round_done("msg", False, 12.0)
    metrics.branch_done("saga", "01", "action", True)
    metrics.branch_done("saga", "0101", "compensate", False, "http", 0.02)
    metrics.finished("saga", "succeed")
    metrics.operator_action("retry", True)
    metrics.leases_held(7)
    metrics.claimed(3, 0.002)
    metrics.rounds_in_flight(2)
    metrics.store_call("transition")
    return metrics


@pytest.mark.parametrize(
    ("target", "label"),
    [
        ("/api/dtmsvr/query?gid=abc-123", "query"),
        ("/api/dtmsvr/query", "query"),
        ("/api/dtmsvr/forceStop", "forcestop"),
        ("/api/dtmsvr/newGid/", "newgid"),
        ("/api/dtmsvr/resetNextCronTime?gid=x/y", "resetnextcrontime"),
        ("/api/ping", "ping"),
    ],
)
def test_api_label_is_the_last_segment_lower_cased_without_query(target: str, label: str) -> None:
    assert api_label(target) == label


def test_every_family_has_its_dtm_name_type_and_labels() -> None:
    body, _ = busy_metrics().render()
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    for name, (kind, labels) in {**DTM_FAMILIES, **FASTDTM_FAMILIES}.items():
        # The parser names a counter family without its `_total` suffix.
        family = families[name.removesuffix("_total") if kind == "counter" else name]
        assert family.type == kind
        assert family.samples, name
        for sample in family.samples:
            assert set(sample.labels) - {"le"} == labels, sample
    assert len(families) == len(DTM_FAMILIES) + len(FASTDTM_FAMILIES)


def test_render_is_strict_text_format() -> None:
    metrics = busy_metrics()
    metrics.store_call('odd "script"\\name\nline')  # label values are escaped, not trusted
    body, _ = metrics.render()
    text = body.decode()
    assert text.endswith("\n")
    for line in text.splitlines():
        assert COMMENT_LINE.fullmatch(line) or SAMPLE_LINE.fullmatch(line), line
    declared = re.findall(r"^# TYPE (\S+) ", text, re.MULTILINE)
    assert len(declared) == len(set(declared))
    assert value(metrics, "fastdtm_store_calls_total", script='odd "script"\\name\nline') == 1


def test_server_info_names_fastdtm() -> None:
    info = {"gin_version": f"fastdtm-{__version__}", "grpc_version": f"grpcio-{grpc.__version__}"}
    assert value(Metrics(), "dtm_server_info", **info) == 1


def test_api_calls_count_by_status_and_time_by_api() -> None:
    metrics = busy_metrics()
    assert value(metrics, "dtm_server_process_total", type="http", api="submit", status="ok") == 1
    assert value(metrics, "dtm_server_process_total", type="http", api="submit", status="fail") == 1
    assert value(metrics, "dtm_server_response_duration_count", type="http", api="submit") == 2
    assert value(metrics, "dtm_server_response_duration_sum", type="http", api="submit") == pytest.approx(0.203)
    # Buckets are cumulative, `le` inclusive, written as the Go client writes them.
    assert value(metrics, "dtm_server_response_duration_bucket", type="http", api="submit", le="0.005") == 1
    assert value(metrics, "dtm_server_response_duration_bucket", type="http", api="submit", le="0.25") == 2
    assert value(metrics, "dtm_server_response_duration_bucket", type="http", api="submit", le="+Inf") == 2
    assert value(metrics, "dtm_server_response_duration_bucket", type="http", api="query", le="0.005") == 1


def test_le_labels_match_dtm() -> None:
    body, _ = busy_metrics().render()
    les = re.findall(r'dtm_server_response_duration_bucket\{type="http",api="query",le="([^"]+)"\}', body.decode())
    assert les == ["0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "+Inf"]


def test_rounds_and_branches() -> None:
    metrics = busy_metrics()
    assert value(metrics, "dtm_transaction_process_total", model="saga", status="ok") == 1
    assert value(metrics, "dtm_transaction_process_total", model="msg", status="fail") == 1
    assert value(metrics, "dtm_transaction_handled_duration_bucket", model="msg", le="10") == 0
    assert value(metrics, "dtm_transaction_handled_duration_bucket", model="msg", le="+Inf") == 1
    labels = {"model": "saga", "branchid": "0101", "branchtype": "compensate", "status": "fail", "protocol": "http"}
    assert value(metrics, "dtm_branch_process_total", **labels) == 1


def test_grpc_calls_and_branches_carry_their_protocol() -> None:
    metrics = Metrics()
    metrics.api_call("submit", True, 0.002, "grpc")
    metrics.api_call("submit", False, 0.002)
    metrics.branch_done("saga", "01", "action", True, "grpc")
    assert value(metrics, "dtm_server_process_total", type="grpc", api="submit", status="ok") == 1
    assert value(metrics, "dtm_server_process_total", type="http", api="submit", status="fail") == 1
    assert value(metrics, "dtm_server_response_duration_count", type="grpc", api="submit") == 1
    labels = {"model": "saga", "branchid": "01", "branchtype": "action", "status": "ok"}
    assert value(metrics, "dtm_branch_process_total", **labels, protocol="grpc") == 1
    assert [s.labels["protocol"] for s in scrape(metrics) if s.name == "dtm_branch_process_total"] == ["grpc"]


def test_age_from_a_skewed_clock_counts_as_zero() -> None:
    metrics = Metrics()
    metrics.round_done("saga", True, -3.0)
    assert value(metrics, "dtm_transaction_handled_duration_sum", model="saga") == 0
    assert value(metrics, "dtm_transaction_handled_duration_bucket", model="saga", le="0.005") == 1


def test_fastdtm_own_metrics() -> None:
    metrics = busy_metrics()
    metrics.claimed(2, 0.5)
    metrics.shards_looked_at(7)
    metrics.leases_held(3)
    metrics.store_call("transition")
    assert value(metrics, "fastdtm_shard_leases_held") == 3
    assert value(metrics, "fastdtm_rounds_in_flight") == 2
    assert value(metrics, "fastdtm_due_claimed_total") == 5
    assert value(metrics, "fastdtm_claim_duration_seconds_count") == 2
    assert value(metrics, "fastdtm_claim_duration_seconds_bucket", le="0.0025") == 1
    assert value(metrics, "fastdtm_shard_looks_total") == 7
    assert value(metrics, "fastdtm_store_calls_total", script="transition") == 2


def test_unlabelled_families_are_exposed_before_their_first_update() -> None:
    metrics = Metrics()
    assert value(metrics, "fastdtm_shard_leases_held") == 0
    assert value(metrics, "fastdtm_due_claimed_total") == 0
    assert value(metrics, "fastdtm_claim_duration_seconds_count") == 0


def test_instances_share_nothing() -> None:
    first, second = Metrics(), Metrics()
    first.api_call("submit", True, 0.001)
    assert not [s for s in scrape(second) if s.name == "dtm_server_process_total"]


def test_client_chosen_branch_labels_keep_their_first_values_then_read_other() -> None:
    metrics = Metrics(label_values=3)
    for branch_id in ("01", "02", "03", "04", "05"):
        metrics.branch_done("tcc", branch_id, "confirm", True)
    for op in ("action", "compensate", "confirm", "step-x", "step-y"):
        metrics.branch_done("workflow", "01", op, True)
    ok = {"status": "ok", "protocol": "http"}
    assert value(metrics, "dtm_branch_process_total", model="tcc", branchid="03", branchtype="confirm", **ok) == 1
    assert value(metrics, "dtm_branch_process_total", model="tcc", branchid="other", branchtype="confirm", **ok) == 2
    # "confirm" was kept already; "action" and "compensate" take the other two places.
    assert value(metrics, "dtm_branch_process_total", model="workflow", branchid="01", branchtype="action", **ok) == 1
    assert value(metrics, "dtm_branch_process_total", model="workflow", branchid="01", branchtype="other", **ok) == 2
    # A value kept goes on counting under its own name.
    metrics.branch_done("saga", "02", "confirm", False)
    fail = {"status": "fail", "protocol": "http"}
    assert value(metrics, "dtm_branch_process_total", model="saga", branchid="02", branchtype="confirm", **fail)


def test_five_thousand_branch_ids_leave_the_scrape_bounded() -> None:
    # Issue 12: 1,500 client-chosen ids made 1,507 series; now the family is bounded whatever clients send.
    metrics = busy_metrics()
    before = len(metrics.render()[0])
    for i in range(5000):
        metrics.branch_done("tcc", f"id-{i}", "confirm" if i % 2 else "cancel", i % 3 == 0)
        metrics.branch_done("workflow", "01", f"op-{i}", True)
    samples = [s for s in scrape(metrics) if s.name == "dtm_branch_process_total"]
    ids = {s.labels["branchid"] for s in samples}
    ops = {s.labels["branchtype"] for s in samples}
    assert len(ids) <= LABEL_VALUES + 1 and "other" in ids
    assert len(ops) <= LABEL_VALUES + 1 and "other" in ops
    assert sum(s.value for s in samples) == 2 + 10_000  # nothing is dropped, only relabelled
    # 5 models x (N + 1) ids x (N + 1) ops x 2 statuses at the very worst; here far less.
    assert len(metrics.render()[0]) < before + 150 * 1024


def test_console_figures_and_their_snapshot() -> None:
    metrics = Metrics()
    metrics.branch_done("saga", "01", "action", True, "http", 0.003)
    metrics.branch_done("saga", "02", "action", False, "grpc", 0.2)
    metrics.branch_done("saga", "03", "action", True, "http", 0.0)  # no URL: nothing called, no latency
    metrics.finished("saga", "succeed")
    metrics.finished("saga", "succeed")
    metrics.operator_action("skip", True)
    metrics.operator_action("pause", False)
    assert value(metrics, "fastdtm_branch_call_duration_seconds_count", protocol="http") == 1
    assert value(metrics, "fastdtm_branch_call_duration_seconds_bucket", protocol="grpc", le="0.25") == 1
    assert value(metrics, "fastdtm_transactions_finished_total", model="saga", status="succeed") == 2
    assert value(metrics, "fastdtm_operator_actions_total", action="skip", result="ok") == 1
    assert value(metrics, "fastdtm_operator_actions_total", action="pause", result="refused") == 1
    snapshot = metrics.snapshot()
    assert snapshot["transactions"] == [{"trans_type": "saga", "status": "succeed", "count": 2}]
    assert snapshot["branch_calls"] == {"count": 3, "failed": 1}
    latency = snapshot["branch_latency"]
    assert isinstance(latency, dict)
    assert latency["count"] == 2 and abs(latency["sum_s"] - 0.203) < 1e-9
    assert latency["buckets"][0] == [0.005, 1] and latency["buckets"][-1] == ["+Inf", 2]
