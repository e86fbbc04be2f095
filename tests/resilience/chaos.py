"""The chaos schedule of the resilience suite: this module owns the seeded, shuffled list of faults (SIGKILL
of a fastdtm node, SIGTERM of one, kill -9 of a Redis master with its replica promoted, SIGSTOP of a master
past the lease TTL, a manual failover), running them one at a time while the load runs, restarting what it
killed, and counting what the system survived. One fault at a time keeps two fastdtm nodes up at every moment."""

from __future__ import annotations

import enum
import random
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable

from tests.support.redis_servers import RedisCluster

from .nodes import NodePool
from .profiles import Profile

HEAL_TIMEOUT_S = 30.0


class Event(enum.StrEnum):
    NODE_KILL = "node kills"
    NODE_SIGTERM = "sigterm"
    MASTER_KILL = "redis master kills"
    FAILOVER = "manual failovers"
    PAUSE = "pauses"
    #: A pause long enough for the cluster to promote the frozen master's replica.
    PAUSE_FAILOVER = "failovers during a pause"


class Chaos:
    def __init__(self, profile: Profile, seed: int, nodes: NodePool, cluster: RedisCluster) -> None:
        self.profile = profile
        self.counts: Counter[Event] = Counter()
        #: (seconds since start, what happened), for the report.
        self.log: list[tuple[float, str]] = []
        self.error: str | None = None
        self.done = threading.Event()
        self._rng = random.Random(f"{seed}/chaos")
        self._nodes = nodes
        self._cluster = cluster
        self._stop = threading.Event()
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="chaos", daemon=True)

    @property
    def redis_failovers(self) -> int:
        return self.counts[Event.MASTER_KILL] + self.counts[Event.FAILOVER] + self.counts[Event.PAUSE_FAILOVER]

    def schedule(self) -> list[Event]:
        p = self.profile
        events = [Event.NODE_KILL] * p.node_kills + [Event.NODE_SIGTERM] * p.sigterms
        events += [Event.MASTER_KILL] * p.master_kills + [Event.PAUSE] * p.pauses + [Event.FAILOVER] * p.failovers
        self._rng.shuffle(events)
        return events

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float) -> None:
        self._stop.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise AssertionError(f"the chaos thread is still running {timeout}s after it was told to stop")

    def _run(self) -> None:
        actions: dict[Event, Callable[[], None]] = {
            Event.NODE_KILL: self._kill_node,
            Event.NODE_SIGTERM: self._sigterm_node,
            Event.MASTER_KILL: self._kill_master,
            Event.FAILOVER: self._failover,
            Event.PAUSE: self._pause,
        }
        try:
            for event in self.schedule():
                if self._stop.wait(self._rng.uniform(*self.profile.gap_s)):
                    break
                actions[event]()
                self.counts[event] += 1
        except Exception:
            self.error = traceback.format_exc()
            self._note(f"chaos failed: {self.error.splitlines()[-1]}")
        finally:
            self.done.set()

    def _note(self, text: str) -> None:
        self.log.append((round(time.monotonic() - self._started, 1), text))

    def _kill_node(self) -> None:
        slot = self._rng.choice(self._nodes.up())
        self._note(f"SIGKILL fastdtm node {slot}")
        self._nodes.kill(slot)
        self._restart_node(slot)

    def _sigterm_node(self) -> None:
        slot = self._rng.choice(self._nodes.up())
        self._note(f"SIGTERM fastdtm node {slot}")
        self._nodes.stop(slot)
        self._restart_node(slot)

    def _restart_node(self, slot: int) -> None:
        time.sleep(self._rng.uniform(*self.profile.down_s))
        self._nodes.restart(slot)
        self._note(f"fastdtm node {slot} restarted")

    def _kill_master(self) -> None:
        master = self._rng.choice(self._cluster.masters())
        self._note(f"kill -9 redis master {master[1]}")
        promoted = self._cluster.kill_master(master)
        self._note(f"replica {promoted[1]} promoted; restarting {master[1]}")
        self._cluster.restart(master, timeout=HEAL_TIMEOUT_S)
        self._note(f"redis {master[1]} back as a replica")

    def _failover(self) -> None:
        master = self._rng.choice(self._cluster.masters())
        promoted = self._cluster.failover(master)
        self._note(f"manual failover of redis master {master[1]} to {promoted[1]}")

    def _pause(self) -> None:
        master = self._rng.choice(self._cluster.masters())
        duration = self._rng.uniform(*self.profile.pause_s)
        self._note(f"SIGSTOP redis master {master[1]} for {duration:.1f}s")
        self._cluster.pause(master)
        try:
            time.sleep(duration)
        finally:
            self._cluster.resume(master)
        self._cluster.wait_healthy(HEAL_TIMEOUT_S)
        if master not in self._cluster.masters():
            self.counts[Event.PAUSE_FAILOVER] += 1
            self._note(f"redis {master[1]} was failed over while frozen")
        self._note(f"redis {master[1]} resumed; cluster healthy")
