"""The ONE table of known differences between Go DTM and fastdtm. Each entry names a scenario (or "*" for all),
a compared field (`reply N`, `query`, `query N`, `calls`, or "*") and, when only one key of the transaction
objects in it differs, that `key` (then the key is left out on both sides and the rest is still compared).

`doc_row` cites the docs/compatibility.md row that explains the difference, by the first words of its first
cell; test_differential.py checks every cited row exists. An entry without a `doc_row` has a `pending` reason
instead: a difference being fixed in fastdtm (issue 15) or reported and not yet decided. A pending entry
without a `key` marks its scenario xfail (not strict) until the fix lands."""

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

# Being fixed in fastdtm (issue 15, the lead's list).
NEXT_CRON = "next_cron_time kept on finished transactions"
TOPIC_TEXTS = "topic error texts and statuses (docs rows to come with the fix)"
JSON_RPC_ERRORS = "JSON-RPC error replies (wording, result)"
SAGA_REASON = "saga rollback reason / wait_result 409 message"
MSG_CHECK_FAILURE = "msg check-back FAILURE stores no rollback_reason in DTM"
FORCE_STOP_FAILED = "forceStop of a finished transaction: text"
ALL_UNKNOWN = "/all?gid=<unknown> gives {transactions: null}"
WF_FINISH_TIME = "workflow progresses' finish_time"
TCC_CONFIRM_500 = "TCC confirm 500 under wait_result: message"
# Found by this suite, reported to the lead, not explained in docs/compatibility.md yet.
CRON_WAIT_RESULT = (
    "new, reported: Go DTM stores wait_result=true once a cron round or a wait_result submit processed it"
)
SUBMIT_OPTIONS = "new, reported: Go DTM stores the options of a wait_result submit of a prepared tcc/xa (`options`)"
BRANCH_TIMES = "new, reported: Go DTM's Redis store keeps registered branches' create_time/update_time null"
RESET_INTERVAL = "new, reported: next_cron_interval after a success that follows a backoff or a check-back"

KNOWN: tuple[Known, ...] = (
    # Go DTM's Redis store shows the saga/msg `steps` and `payloads` in the transaction object.
    Known(ALL, ALL, QUERY_ROW, key="steps"),
    Known(ALL, ALL, QUERY_ROW, key="payloads"),
    Known(ALL, ALL, key="next_cron_time", pending=NEXT_CRON),
    Known(ALL, ALL, key="wait_result", pending=CRON_WAIT_RESULT),
    Known(ALL, ALL, key="next_cron_interval", pending=RESET_INTERVAL),
    Known(ALL, ALL, key="branch:create_time", pending=BRANCH_TIMES),
    Known(ALL, ALL, key="branch:update_time", pending=BRANCH_TIMES),
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
    Known("topic-subscribe-twice", ALL, pending=TOPIC_TEXTS),
    Known("topic-subscribe-empty-topic", ALL, pending=TOPIC_TEXTS),
    Known("topic-subscribe-empty-url", ALL, pending=TOPIC_TEXTS),
    Known("topic-unsubscribe-unknown-url", ALL, pending=TOPIC_TEXTS),
    Known("topic-unsubscribe-unknown-topic", ALL, pending=TOPIC_TEXTS),
    Known("topic-delete-missing", ALL, pending=TOPIC_TEXTS),
    Known("topic-msg-unknown-topic", ALL, pending=TOPIC_TEXTS),
    Known("rpc-bad-version", ALL, pending=JSON_RPC_ERRORS),
    Known("rpc-empty-id", ALL, pending=JSON_RPC_ERRORS),
    Known("rpc-invalid-json", ALL, pending=JSON_RPC_ERRORS),
    Known("wf-submit-succeed", "reply 4", WF_FINISH_ROW),
    Known("wf-submit-failed", "reply 5", WF_FINISH_ROW),
    Known("bad-abort-submitted-tcc", "query", pending=SUBMIT_OPTIONS),
    Known("tcc-submit-wait-result", "query", pending=SUBMIT_OPTIONS),
    Known("tcc-register-after-submit", "query", pending=SUBMIT_OPTIONS),
    Known("tcc-abort-after-submit", "query", pending=SUBMIT_OPTIONS),
    Known("xa-submit-wait-result", "query", pending=SUBMIT_OPTIONS),
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
