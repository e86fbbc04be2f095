"""Every differential scenario, by family."""

from __future__ import annotations

from . import bad_input, jsonrpc, msg, operator, saga, tcc_xa, topics, workflow

SCENARIOS = (
    *saga.SCENARIOS,
    *msg.SCENARIOS,
    *tcc_xa.SCENARIOS,
    *workflow.SCENARIOS,
    *topics.SCENARIOS,
    *operator.SCENARIOS,
    *jsonrpc.SCENARIOS,
    *bad_input.SCENARIOS,
)
