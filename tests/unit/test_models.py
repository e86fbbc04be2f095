"""`Transaction.with_status` and `Branch.with_status`: copies that change only what they say."""

from __future__ import annotations

from dataclasses import replace

from fastdtm.models import Branch, Options, Transaction
from fastdtm.states import BranchStatus, TransStatus, TransType


def test_with_status_copies_every_other_field() -> None:
    # with_status is spelled out field by field (for speed): a field added or reordered must not be dropped.
    options = Options(timeout_to_fail=3, retry_interval=7, branch_headers={"h": "v"}, concurrent=True, retry_limit=2)
    trans = Transaction(
        "g", TransType.MSG, TransStatus.SUBMITTED, options, 1, 2, "cd", "qp", "http", 3, 4, "why", "res", 5, 6
    )
    assert trans.with_status(TransStatus.SUCCEED, 9) == replace(
        trans, status=TransStatus.SUCCEED, update_ms=9, finish_ms=9
    )
    assert trans.with_status(TransStatus.FAILED, 9, "r", schedule=(7, 8)) == replace(
        trans,
        status=TransStatus.FAILED,
        update_ms=9,
        rollback_ms=9,
        rollback_reason="r",
        next_cron_ms=7,
        next_cron_interval_ms=8,
    )
    branch = Branch("01", "action", "u", "d", 1)
    assert branch.with_status(BranchStatus.SUCCEED, 5) == replace(
        branch, status=BranchStatus.SUCCEED, update_ms=5, finish_ms=5
    )
