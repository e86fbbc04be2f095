"""The ONE table of known differences between Go DTM and fastdtm. Each entry names a scenario (or "*" for all),
a compared field (`reply N`, `query`, `query N`, `calls`, or "*") and, when only one key of the transaction
objects in it differs, that `key` (then the key is left out on both sides and the rest is still compared).

`doc_row` cites the docs/compatibility.md row that explains the difference, by the first words of its first
cell; test_differential.py checks every cited row exists. `pending` is for work in progress only (an entry
without a doc row, marking its scenario xfail): the suite refuses to pass while one is left."""

from __future__ import annotations

from dataclasses import dataclass

ALL = "*"


@dataclass(frozen=True)
class Known:
    scenario: str
    field: str
    doc_row: str | None = None
    key: str | None = None
    pending: str | None = None


QUERY_ROW = "`/query` transaction object"
MESSAGES_ROW = "messages"
BAD_BODY_ROW = "bad request bodies"
UNKNOWN_GID_ROW = "unknown gid on `abort`"
QUERY_NO_GID_ROW = "`query` without `gid`"
VERSION_ROW = "`version`"
DUPLICATE_ROW = "`registerBranch` with a repeated"
WF_NO_STATUS_ROW = "workflow `submit` without"
WF_FINISH_ROW = "finishing a workflow (Redis)"

TOPIC_ROW = "topic errors"
JSON_RPC_ROW = "JSON-RPC envelope errors"
NEXT_CRON_ROW = "`next_cron_time` of a finished transaction"
WAIT_RESULT_ROW = "`wait_result` of a stored transaction"
SUBMIT_OPTIONS_ROW = "a `wait_result` submit of a prepared"
BRANCH_TIMES_ROW = "registered branches"
RESET_INTERVAL_ROW = "`next_cron_interval` after a success"

KNOWN: tuple[Known, ...] = (
    # Go DTM's Redis store shows the saga/msg `steps` and `payloads` in the transaction object.
    Known(ALL, ALL, QUERY_ROW, key="steps"),
    Known(ALL, ALL, QUERY_ROW, key="payloads"),
    Known(ALL, ALL, NEXT_CRON_ROW, key="next_cron_time"),
    Known(ALL, ALL, WAIT_RESULT_ROW, key="wait_result"),
    Known(ALL, ALL, RESET_INTERVAL_ROW, key="next_cron_interval"),
    Known(ALL, ALL, BRANCH_TIMES_ROW, key="branch:create_time"),
    Known(ALL, ALL, BRANCH_TIMES_ROW, key="branch:update_time"),
    Known("saga-resubmit-succeeded", "reply 2", MESSAGES_ROW),
    Known("msg-submit-after-abort", "reply 3", MESSAGES_ROW),
    Known("tcc-register-duplicate", "reply 4", DUPLICATE_ROW),
    Known("wf-register-duplicate", "reply 3", DUPLICATE_ROW),
    Known("wf-submit-without-status", "reply 2", WF_NO_STATUS_ROW),
    Known("wf-submit-without-status", "query", WF_FINISH_ROW),
    Known("wf-prepare-after-finish", "reply 3", WF_FINISH_ROW),
    Known("wf-prepare-after-finish", "query", WF_FINISH_ROW),
    Known("wf-submit-succeed", "query", WF_FINISH_ROW),
    Known("wf-submit-failed", "query", WF_FINISH_ROW),
    Known("op-force-stop-unknown", "reply 1", UNKNOWN_GID_ROW),
    Known("op-reset-next-cron-time-unknown", "reply 1", UNKNOWN_GID_ROW),
    Known("bad-abort-unknown-gid", "reply 1", UNKNOWN_GID_ROW),
    Known("op-query-without-gid", "reply 1", QUERY_NO_GID_ROW),
    Known("op-version", "reply 1", VERSION_ROW),
    Known("bad-invalid-json", "reply 1", BAD_BODY_ROW),
    Known("bad-empty-body", "reply 1", BAD_BODY_ROW),
    Known("bad-missing-gid", "reply 1", BAD_BODY_ROW),
    Known("bad-trans-type", "reply 1", BAD_BODY_ROW),
    Known("bad-register-non-string", "reply 2", BAD_BODY_ROW),
    Known("bad-register-unknown-type", "reply 2", BAD_BODY_ROW),
    Known("topic-subscribe-twice", ALL, TOPIC_ROW),
    Known("topic-subscribe-empty-topic", ALL, TOPIC_ROW),
    Known("topic-subscribe-empty-url", ALL, TOPIC_ROW),
    Known("topic-unsubscribe-unknown-url", ALL, TOPIC_ROW),
    Known("topic-unsubscribe-unknown-topic", ALL, TOPIC_ROW),
    Known("topic-delete-missing", ALL, TOPIC_ROW),
    Known("topic-msg-unknown-topic", ALL, TOPIC_ROW),
    Known("rpc-bad-version", ALL, JSON_RPC_ROW),
    Known("rpc-empty-id", ALL, JSON_RPC_ROW),
    Known("rpc-invalid-json", ALL, JSON_RPC_ROW),
    Known("wf-submit-succeed", "reply 4", WF_FINISH_ROW),
    Known("wf-submit-failed", "reply 5", WF_FINISH_ROW),
    Known("bad-abort-submitted-tcc", "query", SUBMIT_OPTIONS_ROW),
    Known("tcc-submit-wait-result", "query", SUBMIT_OPTIONS_ROW),
    Known("tcc-register-after-submit", "query", SUBMIT_OPTIONS_ROW),
    Known("tcc-abort-after-submit", "query", SUBMIT_OPTIONS_ROW),
    Known("xa-submit-wait-result", "query", SUBMIT_OPTIONS_ROW),
)


def dropped_keys(scenario: str, field: str) -> frozenset[str]:
    """Keys of transaction objects left out of this field on both sides."""
    return frozenset(entry.key for entry in KNOWN if entry.key is not None and _matches(entry, scenario, field))


def accepted_fields(scenario: str) -> set[str]:
    """Fields of this scenario whose whole difference is explained."""
    return {e.field for e in KNOWN if e.key is None and e.doc_row and e.scenario == scenario}


def pending_reason(scenario: str) -> str | None:
    reasons = [e.pending for e in KNOWN if e.key is None and e.pending and e.scenario == scenario]
    return "; ".join(reasons) if reasons else None


def _matches(entry: Known, scenario: str, field: str) -> bool:
    return entry.scenario in (ALL, scenario) and entry.field in (ALL, field)
