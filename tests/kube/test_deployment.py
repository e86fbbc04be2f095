"""fastdtm as Kubernetes runs it (issue 16; `make k8s-e2e`): the image built by `make image`, the `dev` overlay
of k8s/ plus a test overlay, on a real kube-apiserver, controller-manager, scheduler and kubelets with
containerd (scripts/k8s/cluster.sh), each kubelet a node of its own on 127.0.0.N.

Only what a pod network would add is changed by the test overlay: pods use the host's network (there is no
pod network here) bound to their node's address, the store is a Redis this test runs on loopback (so that it
can stop it), and branch calls may reach loopback (the branch server is this test). Everything else, probes,
preStop, grace period, rollout strategy, PodDisruptionBudget, security context, is the shipped manifest.

Clients reach the pods the way kube-proxy routes a Service: a new request goes to a pod that is Ready and
not terminating, the rule by which EndpointSlices list ready endpoints (there is no kube-proxy here, and
the API refuses loopback addresses in EndpointSlices). Each check prints one `ok` line.

Skipped unless FASTDTM_K8S_DIR names a running cluster (scripts/k8s/e2e.sh sets it)."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from dtmcli import saga, utils
from google.protobuf import empty_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from fastdtm.proto import dtmgimp_pb2 as pb
from tests.support.busi import BusiServer
from tests.support.redis_servers import RedisServer

REPO = Path(__file__).resolve().parents[2]
K8S_DIR = os.environ.get("FASTDTM_K8S_DIR", "")
NAMESPACE = "fastdtm"
SELECTOR = "app.kubernetes.io/name=fastdtm,app.kubernetes.io/component=coordinator"

pytestmark = [
    pytest.mark.skipif(not K8S_DIR, reason="make k8s-e2e runs it: needs the cluster of scripts/k8s/cluster.sh"),
    pytest.mark.timeout(1200),
]


def kubectl(*args: str, stdin: str | None = None, check: bool = True, timeout: float = 120) -> str:
    command = ["kubectl", "--kubeconfig", f"{K8S_DIR}/kubeconfig", *args]
    done = subprocess.run(command, input=stdin, capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(args)}: exit {done.returncode}\n{done.stdout}\n{done.stderr}")
    return done.stdout + done.stderr if not check else done.stdout


def kube_json(*args: str) -> Any:
    return json.loads(kubectl(*args, "-o", "json"))


def ok(check: str) -> None:
    print(f"ok  {check}", flush=True)


def wait_until(condition: Callable[[], bool], timeout: float, what: str, every: float = 0.5) -> float:
    """Seconds it took; AssertionError past `timeout`."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not within {timeout:.0f} s: {what}")
        time.sleep(every)
    return time.monotonic() - started


def node_addresses() -> list[str]:
    return [node["metadata"]["name"] for node in kube_json("get", "nodes")["items"]]


def listening_port(addresses: list[str]) -> int:
    """A port below Linux's range for outgoing connections, free on every node's address, and the next one too
    (the pods' gRPC port)."""
    for port in range(21000 + os.getpid() % 5000, 32000, 2):
        try:
            for address, offset in itertools.product(addresses, (0, 1)):
                with socket.socket() as sock:
                    sock.bind((address, port + offset))
        except OSError:
            continue
        return port
    raise AssertionError("no free port")


def pods() -> list[dict[str, Any]]:
    return list(kube_json("get", "pods", "-n", NAMESPACE, "-l", SELECTOR)["items"])


def is_ready(pod: dict[str, Any]) -> bool:
    conditions = pod.get("status", {}).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def ready_pods() -> list[dict[str, Any]]:
    return [pod for pod in pods() if is_ready(pod) and not pod["metadata"].get("deletionTimestamp")]


class Endpoints:
    """The pods a Service would route new connections to, as kube-proxy does: re-read every 0.25 s.

    The EndpointSlice controller lists a pod as a ready endpoint when it is Ready and not terminating; here
    the pods' addresses are loopback ones, which the API refuses in EndpointSlices, so the same rule is
    applied to the pods themselves."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._urls: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._counter = itertools.count()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(AssertionError, subprocess.TimeoutExpired, json.JSONDecodeError):
                urls = sorted(f"http://{pod['status']['podIP']}:{self.port}" for pod in ready_pods())
                with self._lock:
                    self._urls = urls
            self._stop.wait(0.25)

    def count(self) -> int:
        with self._lock:
            return len(self._urls)

    def pick(self, timeout: float = 120) -> str:
        """A ready endpoint, round robin; waits while there is none (a Service with no endpoint)."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                urls = list(self._urls)
            if urls:
                return urls[next(self._counter) % len(urls)]
            if time.monotonic() > deadline:
                raise AssertionError("no ready endpoint")
            time.sleep(0.1)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)


@dataclass
class Load:
    """Sagas submitted with the Python SDK, one after another per thread, each to a ready endpoint."""

    endpoints: Endpoints
    busi: BusiServer
    threads: int = 2
    submitted: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _workers: list[threading.Thread] = field(default_factory=list)

    def __enter__(self) -> Load:
        for n in range(self.threads):
            worker = threading.Thread(target=self._run, args=(n,), daemon=True)
            worker.start()
            self._workers.append(worker)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(30)

    def _run(self, n: int) -> None:
        while not self._stop.is_set():
            dtm = f"{self.endpoints.pick()}/api/dtmsvr"
            try:
                gid = utils.gen_gid(dtm)
                s = saga.Saga(dtm, gid)
                s.add({"amount": 1}, self.busi.url("/TransOut"), self.busi.url("/TransOutRevert"))
                s.add({"amount": 1}, self.busi.url("/TransIn"), self.busi.url("/TransInRevert"))
                s.submit()
            except Exception as exc:  # every failure counts: the client saw an error
                self.failures.append(f"{dtm}: {type(exc).__name__}: {exc}")
                continue
            self.submitted.append(gid)
            time.sleep(0.02)

    def unfinished(self, endpoints: Endpoints, timeout: float = 90) -> list[str]:
        """The submitted sagas not `succeed` within `timeout` (asked through a ready endpoint)."""
        deadline = time.monotonic() + timeout
        waiting = list(self.submitted)
        with httpx.Client(timeout=5) as client:
            while waiting and time.monotonic() < deadline:
                still = []
                for gid in waiting:
                    with contextlib.suppress(httpx.HTTPError, ValueError, TypeError):
                        reply = client.get(f"{endpoints.pick()}/api/dtmsvr/query", params={"gid": gid}).json()
                        if (reply.get("transaction") or {}).get("status") == "succeed":
                            continue
                    still.append(gid)
                waiting = still
                if waiting:
                    time.sleep(1)
        return waiting


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    # An append-only file synced on every write: a Redis that is stopped and started keeps every transaction.
    with RedisServer(["--appendonly", "yes", "--appendfsync", "always"]) as server:
        yield server


@pytest.fixture(scope="module")
def busi() -> Iterator[BusiServer]:
    with BusiServer() as server:
        yield server


@pytest.fixture(scope="module")
def deployment(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """The dev overlay plus the test overlay applied; yields the port the pods serve on."""
    addresses = node_addresses()
    assert len(addresses) >= 3, f"3 nodes wanted (a replica each and room for a surge), got {addresses}"
    port = listening_port(addresses)
    overlay = tmp_path_factory.mktemp("overlay")
    (overlay / "kustomization.yaml").write_text(render_test_overlay(overlay, port, redis_server.url))
    # A namespace left by an earlier run on a reused cluster must be gone first (deleting it takes a while).
    kubectl("delete", "namespace", NAMESPACE, "--ignore-not-found", "--wait=true", "--timeout=120s", timeout=150)
    started = time.monotonic()
    kubectl("apply", "-k", str(overlay))
    try:
        kubectl("rollout", "status", "-n", NAMESPACE, "deployment/fastdtm", "--timeout=240s", timeout=260)
        ok(f"apply -k (dev overlay + test overlay): 2 replicas Ready in {time.monotonic() - started:.1f} s")
        yield port
    finally:
        kubectl("delete", "namespace", NAMESPACE, "--wait=true", "--timeout=120s", check=False, timeout=150)


def render_test_overlay(directory: Path, port: int, redis_url: str) -> str:
    relative = os.path.relpath(REPO / "k8s" / "overlays" / "dev", directory)
    return f"""\
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
namespace: {NAMESPACE}
resources:
  - {relative}
secretGenerator:
  - name: fastdtm-store
    behavior: replace
    literals:
      - url={redis_url}
    options:
      disableNameSuffixHash: true
patches:
  # No pod network here: pods use the host's, each bound to its node's address (127.0.0.N).
  - target: {{kind: Deployment, name: fastdtm}}
    patch: |-
      - {{op: replace, path: /spec/replicas, value: 2}}
      - {{op: add, path: /spec/template/spec/hostNetwork, value: true}}
      - {{op: add, path: /spec/template/spec/dnsPolicy, value: ClusterFirstWithHostNet}}
      - {{op: replace, path: /spec/template/spec/containers/0/ports/0/containerPort, value: {port}}}
      - {{op: replace, path: /spec/template/spec/containers/0/ports/1/containerPort, value: {port + 1}}}
      - op: add
        path: /spec/template/spec/containers/0/env/-
        value: {{name: FASTDTM_HOST, valueFrom: {{fieldRef: {{fieldPath: status.hostIP}}}}}}
      - {{op: add, path: /spec/template/spec/containers/0/env/-, value: {{name: FASTDTM_PORT, value: "{port}"}}}}
      - op: add
        path: /spec/template/spec/containers/0/env/-
        value: {{name: FASTDTM_GRPC_PORT, value: "{port + 1}"}}
  - target: {{kind: Service, name: fastdtm}}
    patch: |-
      - {{op: replace, path: /spec/ports/0/port, value: {port}}}
      - {{op: replace, path: /spec/ports/1/port, value: {port + 1}}}
  # The branch server is this test, on loopback.
  - target: {{kind: ConfigMap, name: fastdtm-config}}
    patch: |-
      - {{op: replace, path: /data/FASTDTM_BRANCH_DENY, value: "169.254.0.0/16"}}
  # hostNetwork is outside every Pod Security profile but `privileged`; k8s-validate proves the shipped
  # manifests pass `restricted`.
  - target: {{kind: Namespace, name: {NAMESPACE}}}
    patch: |-
      - {{op: replace, path: /metadata/labels/pod-security.kubernetes.io~1enforce, value: privileged}}
      - {{op: replace, path: /metadata/labels/pod-security.kubernetes.io~1warn, value: privileged}}
      - {{op: replace, path: /metadata/labels/pod-security.kubernetes.io~1audit, value: privileged}}
  # The store is the test's own Redis.
  - patch: |-
      $patch: delete
      apiVersion: apps/v1
      kind: Deployment
      metadata: {{name: redis}}
  - patch: |-
      $patch: delete
      apiVersion: v1
      kind: Service
      metadata: {{name: redis}}
"""


@pytest.fixture(scope="module")
def endpoints(deployment: int) -> Iterator[Endpoints]:
    watcher = Endpoints(deployment)
    wait_until(lambda: watcher.count() == 2, 30, "both pods ready endpoints")
    yield watcher
    watcher.close()


def test_pods_are_ready_spread_and_restricted(deployment: int) -> None:
    running = ready_pods()
    assert len(running) == 2
    nodes = {pod["spec"]["nodeName"] for pod in running}
    assert len(nodes) == 2, nodes
    for pod in running:
        security = pod["spec"]["containers"][0]["securityContext"]
        assert security["readOnlyRootFilesystem"] and security["capabilities"]["drop"] == ["ALL"]
        assert pod["spec"]["securityContext"]["runAsUser"] == 65532
    ok(f"2 replicas Ready on 2 nodes {sorted(nodes)}, uid 65532, read-only root, no capabilities")


def test_a_saga_through_the_python_sdk(endpoints: Endpoints, busi: BusiServer) -> None:
    dtm = f"{endpoints.pick()}/api/dtmsvr"
    gid = utils.gen_gid(dtm)
    s = saga.Saga(dtm, gid)
    s.add({"amount": 30}, busi.url("/TransOut"), busi.url("/TransOutRevert"))
    s.add({"amount": 30}, busi.url("/TransIn"), busi.url("/TransIn"))
    s.submit()
    took = wait_until(
        lambda: httpx.get(f"{dtm}/query", params={"gid": gid}).json()["transaction"]["status"] == "succeed",
        20,
        "the saga succeeds",
        every=0.1,
    )
    assert [call.path for call in busi.calls() if call.query.get("gid") == gid] == ["/TransOut", "/TransIn"]
    ok(f"dtmcli saga {gid} through {dtm}: succeed in {took:.2f} s, both branches called once")


def test_grpc_on_every_pod(deployment: int) -> None:
    """DTM's gRPC API on each pod's gRPC port: health SERVING and a gid from dtmgimp.Dtm/NewGid."""
    grpc_port = deployment + 1
    for pod in ready_pods():
        target = f"{pod['status']['podIP']}:{grpc_port}"
        with grpc.insecure_channel(target) as channel:
            health: Any = health_pb2_grpc.HealthStub(channel)
            status = health.Check(health_pb2.HealthCheckRequest(service="dtmgimp.Dtm"), timeout=10).status
            assert status == health_pb2.HealthCheckResponse.SERVING
            new_gid: grpc.UnaryUnaryMultiCallable[bytes, pb.DtmGidReply] = channel.unary_unary(
                "/dtmgimp.Dtm/NewGid", response_deserializer=pb.DtmGidReply.FromString
            )
            reply = new_gid(empty_pb2.Empty().SerializeToString(), timeout=10)
            assert len(reply.Gid) == 22
    ok(f"gRPC on port {grpc_port} of both pods: health SERVING, NewGid answers")


def test_not_ready_while_redis_is_down_and_ready_again_after(endpoints: Endpoints, redis_server: RedisServer) -> None:
    restarts = {pod["metadata"]["name"]: pod["status"]["containerStatuses"][0]["restartCount"] for pod in pods()}
    redis_server.kill()
    try:
        down = wait_until(lambda: not ready_pods(), 30, "both pods NotReady once Redis is down")
        ok(f"Redis stopped: both pods NotReady after {down:.1f} s (readiness asks the store)")
        time.sleep(12)  # longer than the liveness probe's window (3 failures 10 s apart would restart)
    finally:
        redis_server.restart()
    up = wait_until(lambda: len(ready_pods()) == 2, 30, "both pods Ready again once Redis is back")
    after = {pod["metadata"]["name"]: pod["status"]["containerStatuses"][0]["restartCount"] for pod in pods()}
    assert after == restarts, (restarts, after)
    ok(f"Redis started again: both pods Ready after {up:.1f} s, no container restarted (liveness is the process)")


def test_a_deleted_pod_drains_without_a_failed_request(endpoints: Endpoints, busi: BusiServer) -> None:
    victim = ready_pods()[0]["metadata"]["name"]
    with Load(endpoints, busi) as load:
        time.sleep(3)
        before = len(load.submitted)
        started = time.monotonic()
        kubectl("delete", "pod", "-n", NAMESPACE, victim, "--wait=true", "--timeout=60s", timeout=80)
        gone = time.monotonic() - started
        wait_until(lambda: len(ready_pods()) == 2, 90, "the replacement pod Ready")
        time.sleep(2)
    during = len(load.submitted) - before
    assert not load.failures, load.failures[:5]
    lost = load.unfinished(endpoints)
    assert not lost, lost[:10]
    ok(
        f"pod {victim} deleted under load: gone after {gone:.1f} s (preStop 5 s + drain), "
        f"{len(load.submitted)} sagas ({during} from the delete on), 0 failed requests, all succeed"
    )


def test_a_rolling_update_under_load_loses_nothing(endpoints: Endpoints, busi: BusiServer) -> None:
    old = {pod["metadata"]["name"] for pod in pods()}
    with Load(endpoints, busi) as load:
        time.sleep(2)
        started = time.monotonic()
        kubectl("rollout", "restart", "-n", NAMESPACE, "deployment/fastdtm")
        kubectl("rollout", "status", "-n", NAMESPACE, "deployment/fastdtm", "--timeout=300s", timeout=320)
        took = time.monotonic() - started
        wait_until(lambda: len(ready_pods()) == 2, 60, "2 new pods Ready")
        time.sleep(2)
    new = {pod["metadata"]["name"] for pod in ready_pods()}
    assert not new & old, (old, new)
    assert not load.failures, load.failures[:5]
    lost = load.unfinished(endpoints)
    assert not lost, lost[:10]
    ok(
        f"rolling update (maxSurge 1, maxUnavailable 0) in {took:.1f} s under load: {len(load.submitted)} sagas, "
        "0 failed requests, lost 0"
    )


def test_the_disruption_budget_refuses_a_second_eviction(endpoints: Endpoints) -> None:
    first, second = (pod["metadata"]["name"] for pod in ready_pods()[:2])

    def evict(name: str) -> str:
        body = json.dumps(
            {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": name, "namespace": NAMESPACE}}
        )
        return kubectl(
            "create",
            "--raw",
            f"/api/v1/namespaces/{NAMESPACE}/pods/{name}/eviction",
            "-f",
            "-",
            stdin=body,
            check=False,
        )

    accepted = evict(first)
    refused = evict(second)
    assert "disruption budget" in refused.lower() or "429" in refused, refused
    assert "disruption budget" not in accepted.lower(), accepted
    wait_until(lambda: len(ready_pods()) == 2, 90, "back to 2 Ready replicas")
    ok(f"PodDisruptionBudget (maxUnavailable 1): eviction of {first} accepted, of {second} refused while it drains")
