"""`Saga`: steps of (action, compensation), run by the coordinator in order (or concurrently under `orders`),
compensated in reverse when an action answers FAILURE."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, Self

from .http import DtmClient, encode_payload
from .options import TransOptions, trans_body


class Saga:
    """Build with `add`, then `await submit()`. `concurrent=True` runs actions in parallel, constrained by
    `add_branch_order`."""

    def __init__(
        self, client: DtmClient, gid: str, *, options: TransOptions | None = None, concurrent: bool = False
    ) -> None:
        self.client = client
        self.gid = gid
        self.options = options if options is not None else TransOptions()
        self.concurrent = concurrent
        self._steps: list[dict[str, str]] = []
        self._payloads: list[str] = []
        self._orders: dict[int, list[int]] = {}

    def add(self, action: str, compensate: str, payload: object) -> Self:
        """One step: `action` and its `compensate` URL, both called with `payload` (JSON-encoded)."""
        self._steps.append({"action": action, "compensate": compensate})
        self._payloads.append(encode_payload(payload))
        return self

    def add_branch_order(self, step: int, after: Iterable[int]) -> Self:
        """Step `step` (0-based) starts only once every step in `after` succeeded."""
        self._orders[step] = list(after)
        return self

    def body(self) -> dict[str, Any]:
        custom = ""
        if self.concurrent or self._orders:
            orders = {str(step): after for step, after in self._orders.items()}
            custom = json.dumps({"orders": orders, "concurrent": self.concurrent})
        return trans_body(
            self.gid, "saga", self.options, steps=self._steps, payloads=self._payloads, custom_data=custom
        )

    async def submit(self) -> None:
        """Hand the saga to the coordinator; with `options.wait_result` this returns once it finished (and
        raises `DtmError` if it did not succeed)."""
        await self.client.call("submit", self.body())
