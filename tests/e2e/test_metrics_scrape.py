"""`/api/metrics` after a real run: DTM's metric names, labels and counts, and never a gid in a label."""

from __future__ import annotations

import grpc
import httpx
from prometheus_client.parser import text_string_to_metric_families

from fastdtm import __version__
from tests.support.busi import BusiServer
from tests.support.node import FastdtmNode

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(node: FastdtmNode) -> Samples:
    reply = httpx.get(f"{node.base}/api/metrics")
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(reply.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_dtm_metrics_count_a_run(node: FastdtmNode, busi: BusiServer) -> None:
    busi.script("/Fail", [409])
    with httpx.Client(base_url=node.dtm, timeout=10) as client:
        gids = [client.get("/newGid").json()["gid"] for _ in range(3)]
        for gid, action in zip(gids, ["/A", "/A", "/Fail"], strict=True):
            steps = [{"action": busi.url(action), "compensate": busi.url("/C")}]
            client.post(
                "/submit",
                json={"gid": gid, "trans_type": "saga", "steps": steps, "payloads": ["{}"], "wait_result": True},
            )
        client.get("/query", params={"gid": gids[0]})
    samples = scrape(node)
    info = {"gin_version": f"fastdtm-{__version__}", "grpc_version": f"grpcio-{grpc.__version__}"}
    assert value(samples, "dtm_server_info", **info) == 1
    assert value(samples, "dtm_server_process_total", type="http", api="submit", status="ok") == 2
    assert value(samples, "dtm_server_process_total", type="http", api="submit", status="fail") == 1
    assert value(samples, "dtm_server_process_total", type="http", api="newgid", status="ok") == 3
    assert value(samples, "dtm_server_process_total", type="http", api="query", status="ok") == 1
    assert value(samples, "dtm_server_response_duration_count", type="http", api="submit") == 3
    assert value(samples, "dtm_transaction_process_total", model="saga", status="ok") == 2
    assert value(samples, "dtm_transaction_process_total", model="saga", status="fail") == 1
    assert value(samples, "dtm_transaction_handled_duration_count", model="saga") == 3
    branch = {"model": "saga", "branchid": "01", "protocol": "http"}
    assert value(samples, "dtm_branch_process_total", **branch, branchtype="action", status="ok") == 2
    assert value(samples, "dtm_branch_process_total", **branch, branchtype="action", status="fail") == 1
    assert value(samples, "dtm_branch_process_total", **branch, branchtype="compensate", status="ok") == 1
    assert value(samples, "fastdtm_shard_leases_held") > 0
    labels = {v for _, pairs in samples for _, v in pairs}
    assert not labels & set(gids), "a gid leaked into a label (DTM's quirk 6)"
