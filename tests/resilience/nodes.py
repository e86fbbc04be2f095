"""The three fastdtm nodes of the resilience suite: this module owns starting them on one store, killing
(SIGKILL) or stopping (SIGTERM) one and restarting it on the same port, so clients keep a fixed list of
addresses as behind a load balancer, and keeping every incarnation's log for the report."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from tests.support.node import FastdtmNode
from tests.support.redis_servers import PortInUse

RESTART_ATTEMPTS = 5
#: A write counts once a replica has it: the suite kills masters, and Redis's asynchronous replication
#: would let a crash take acknowledged transactions with it (tests/store/test_durable_writes.py).
NODE_ARGS = ("--redis-wait-replicas", "1")


class NodePool:
    """`count` nodes on `store_url`; a slot is down between `kill`/`stop` and `restart`."""

    def __init__(self, store_url: str, count: int, log_dir: Path) -> None:
        self._store_url = store_url
        self._log_dir = log_dir
        self._lock = threading.Lock()
        self._nodes: list[FastdtmNode | None] = []
        self._incarnations = [0] * count
        try:
            for slot in range(count):
                self._nodes.append(self._start(slot, port=None))
        except BaseException:
            self.close()
            raise
        self.ports = [node.port for node in self._nodes if node is not None]

    @property
    def bases(self) -> list[str]:
        return [f"http://127.0.0.1:{port}" for port in self.ports]

    def up(self) -> list[int]:
        with self._lock:
            return [slot for slot, node in enumerate(self._nodes) if node is not None and node.alive()]

    def kill(self, slot: int) -> None:
        node = self._take(slot)
        node.kill()
        self._keep_log(slot, node)

    def stop(self, slot: int) -> None:
        node = self._take(slot)
        node.stop()
        self._keep_log(slot, node)

    def restart(self, slot: int) -> None:
        """The same port again; a port still held by the dead process's sockets is retried for a while."""
        for attempt in range(RESTART_ATTEMPTS):
            try:
                node = self._start(slot, port=self.ports[slot])
                break
            except PortInUse:
                if attempt == RESTART_ATTEMPTS - 1:
                    raise
                time.sleep(0.5)
        with self._lock:
            self._nodes[slot] = node

    def close(self) -> None:
        for slot, node in enumerate(self._nodes):
            if node is not None:
                self.stop(slot)

    def _take(self, slot: int) -> FastdtmNode:
        with self._lock:
            node, self._nodes[slot] = self._nodes[slot], None
        if node is None:
            raise RuntimeError(f"fastdtm node {slot} is already down")
        return node

    def _start(self, slot: int, port: int | None) -> FastdtmNode:
        self._incarnations[slot] += 1
        return FastdtmNode(self._store_url, NODE_ARGS, env={"FASTDTM_NODE_ID": self._name(slot)}, port=port)

    def _name(self, slot: int) -> str:
        return f"node{slot}-{self._incarnations[slot]}"

    def _keep_log(self, slot: int, node: FastdtmNode) -> None:
        (self._log_dir / f"{self._name(slot)}.log").write_text(node.log_text())
