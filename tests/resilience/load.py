"""The bounded load of the resilience suite: this module owns the client threads that issue transfers (each
with its own gid, kind, amount and accounts drawn from the seed) against the three nodes until the chaos
schedule is over or `max_transfers` were issued, and the list of every transfer with what its client saw."""

from __future__ import annotations

import random
import threading
import time
import traceback
from collections.abc import Sequence
from typing import Final

from .bank_service import account_name
from .coordinator import Coordinator
from .faults import FaultPlan
from .profiles import Profile
from .transfers import Client, Kind, Transfer, run

#: Share of each kind in the load.
MIX: Final = {Kind.SAGA: 3, Kind.SAGA_WAIT: 2, Kind.TCC: 3, Kind.MSG: 2, Kind.MSG_PREPARED: 2}


class Load:
    def __init__(
        self,
        profile: Profile,
        seed: int,
        node_bases: Sequence[str],
        bank_base: str,
        plan: FaultPlan,
        accounts: int,
    ) -> None:
        self.profile = profile
        self.seed = seed
        self.transfers: list[Transfer] = []
        #: Tracebacks of client threads that raised: a harness bug, reported as such.
        self.errors: list[str] = []
        self.stop = threading.Event()
        self._node_bases = list(node_bases)
        self._bank_base = bank_base
        self._plan = plan
        self._accounts = accounts
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._client, args=(index,), name=f"load-{index}", daemon=True)
            for index in range(profile.clients)
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def join(self, timeout: float) -> None:
        """Stop issuing and wait for the transfers in flight (their calls are bounded)."""
        self.stop.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        if alive := [thread.name for thread in self._threads if thread.is_alive()]:
            raise AssertionError(f"load threads {alive} still running {timeout}s after the load stopped")

    def _client(self, index: int) -> None:
        rng = random.Random(f"{self.seed}/client/{index}")
        client = Client(Coordinator(self._node_bases, first=index), self._bank_base, self._plan, rng)
        try:
            while not self.stop.is_set() and (transfer := self._next(rng)) is not None:
                run(client, transfer)
                self.stop.wait(self.profile.think_s)
        except Exception:
            with self._lock:
                self.errors.append(traceback.format_exc())
        finally:
            client.close()

    def _next(self, rng: random.Random) -> Transfer | None:
        with self._lock:
            number = len(self.transfers)
            if number >= self.profile.max_transfers:
                return None
            kind = rng.choices(list(MIX), weights=list(MIX.values()))[0]
            payer, payee = rng.sample(range(self._accounts), 2)
            transfer = Transfer(
                gid=f"res-{self.seed}-{number:05d}-{kind}",
                kind=kind,
                amount=rng.randint(1, 500),
                payer=account_name(payer),
                payee=account_name(payee),
            )
            self.transfers.append(transfer)
        return transfer
