"""`Msg`: DTM's two-phase message. Its steps run after the local transaction committed: `submit` alone, or
`prepare` / local work / `submit` (or `abort`), or `do_and_submit`, which runs the local work inside the msg
barrier so the coordinator's check-back (`query_prepared`) can always tell whether it committed."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any, Self

from .barrier.core import BranchBarrier
from .errors import Failure
from .http import DtmClient, encode_payload
from .options import TransOptions, branch_query, trans_body
from .results import MSG_BRANCH_ID, OP_MSG

TOPIC_PREFIX = "topic://"

#: The local work of `do_and_submit`: typically ``lambda barrier: barrier.call(store, business)``.
LocalWork = Callable[[BranchBarrier], Awaitable[None]]


class Msg:
    """Steps called by the coordinator once the message is submitted; `concurrent` calls them in parallel,
    `delay` (seconds) holds them back after submit."""

    def __init__(
        self,
        client: DtmClient,
        gid: str,
        *,
        options: TransOptions | None = None,
        concurrent: bool = False,
        delay: int = 0,
    ) -> None:
        self.client = client
        self.gid = gid
        self.options = options if options is not None else TransOptions()
        self.concurrent = concurrent
        self.delay = delay
        self.query_prepared = ""
        self._steps: list[dict[str, str]] = []
        self._payloads: list[str] = []

    def add(self, action: str, payload: object) -> Self:
        self._steps.append({"action": action})
        self._payloads.append(encode_payload(payload))
        return self

    def add_topic(self, topic: str, payload: object) -> Self:
        """A step that fans out to every URL subscribed to `topic`."""
        return self.add(TOPIC_PREFIX + topic, payload)

    def body(self, *, with_delay: bool = False) -> dict[str, Any]:
        custom = json.dumps({"delay": self.delay}) if with_delay and self.delay else ""
        return trans_body(
            self.gid,
            "msg",
            self.options,
            steps=self._steps,
            payloads=self._payloads,
            query_prepared=self.query_prepared,
            custom_data=custom,
            concurrent=self.concurrent,
        )

    async def prepare(self, query_prepared: str) -> None:
        """Register the message as prepared; the coordinator asks `query_prepared` if it is left so."""
        self.query_prepared = query_prepared or self.query_prepared
        await self.client.call("prepare", self.body())

    async def submit(self) -> None:
        # The delay travels only with submit, as in the Go SDK: it counts from the submit's processing.
        await self.client.call("submit", self.body(with_delay=True))

    async def abort(self) -> None:
        await self.client.call("abort", self.body())

    async def do_and_submit(self, query_prepared: str, local: LocalWork) -> None:
        """prepare → `local(barrier)` → submit. `Failure` from `local` aborts and is re-raised; any other
        exception leaves the outcome unknown, so the check-back is asked first (submit, or abort on FAILURE)
        and the exception is re-raised."""
        barrier = BranchBarrier("msg", self.gid, MSG_BRANCH_ID, OP_MSG)
        await self.prepare(query_prepared)
        try:
            await local(barrier)
        except Failure:
            await self.abort()
            raise
        except Exception:
            await self._decide_by_check_back()
            raise
        await self.submit()

    async def _decide_by_check_back(self) -> None:
        query = branch_query(self.client.server, self.gid, "msg", MSG_BRANCH_ID, OP_MSG)
        try:
            await self.client.call_branch("GET", self.query_prepared, query=query, payload=None)
        except Failure:
            await self.abort()
            return
        await self.submit()
