"""The differential suite: each scenario runs, as raw HTTP, against Go DTM v1.19.0 and fastdtm at once (each on
its own flushed Redis, with its own participant scripted the same way), and every coordinator reply, the final
/query and the participant's ordered calls must match after normalisation, but for the differences
docs/compatibility.md explains (explained.py)."""

from __future__ import annotations

import re
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from .compare import Difference, differences, fields
from .coordinators import Side
from .explained import ALL, KNOWN, accepted_fields, pending_reason
from .normalise import Normaliser
from .runner import run
from .scenario import Scenario
from .scenarios import SCENARIOS

COMPATIBILITY_DOC = Path(__file__).resolve().parents[2] / "docs" / "compatibility.md"
pytestmark = [pytest.mark.differential, pytest.mark.slow]


def _param(scenario: Scenario) -> object:
    reason = pending_reason(scenario.id)
    marks = [pytest.mark.xfail(strict=False, reason=f"pending: {reason}")] if reason else []
    return pytest.param(scenario, id=scenario.id, marks=marks)


@pytest.mark.parametrize("scenario", [_param(s) for s in SCENARIOS])
def test_scenario(scenario: Scenario, go_side: Side, fastdtm_side: Side) -> None:
    fast_fields, unexplained = _run_and_compare(scenario, go_side, fastdtm_side)
    if not unexplained:
        return
    # Go DTM is not deterministic under load: its cron may start a second round beside the submit's and repeat a
    # call (docs/compatibility.md, "two rounds of one transaction at once"). A difference therefore counts unless
    # a rerun shows it was Go DTM's alone: the rerun matches and fastdtm answered exactly as it did the first time.
    fast_again, unexplained_again = _run_and_compare(scenario, go_side, fastdtm_side)
    if not unexplained_again and fast_again == fast_fields:
        warnings.warn(f"{scenario.id}: Go DTM answered differently once; the rerun matched", stacklevel=1)
        return
    report = "\n".join(difference.report() for difference in unexplained)
    if unexplained_again:
        report += "\n(the rerun differed too)"
    else:
        report += "\n(the rerun matched, but fastdtm's own answer changed between the runs)"
    pytest.fail(f"{scenario.id}: {len(unexplained)} unexplained difference(s)\n{report}", pytrace=False)


def _run_and_compare(scenario: Scenario, go_side: Side, fastdtm_side: Side) -> tuple[dict[str, Any], list[Difference]]:
    sides = (go_side, fastdtm_side)
    for side in sides:
        side.reset()
    with ThreadPoolExecutor(max_workers=2) as pool:
        go, fast = pool.map(lambda side: run(scenario, side), sides)
    go_fields = fields(scenario, go, Normaliser(go_side.busi.base, go_side.base))
    fast_fields = fields(scenario, fast, Normaliser(fastdtm_side.busi.base, fastdtm_side.base))
    allowed = accepted_fields(scenario.id)
    found = differences(go_fields, fast_fields)
    return fast_fields, [d for d in found if d.field not in allowed and ALL not in allowed]


def test_scenario_ids_are_unique() -> None:
    ids = [scenario.id for scenario in SCENARIOS]
    assert len(ids) == len(set(ids))
    assert len(ids) >= 60


def test_explained_rows_exist_in_the_doc() -> None:
    doc = COMPATIBILITY_DOC.read_text()
    first_cells = {match.group(1).strip() for match in re.finditer(r"^\|([^|]*)\|", doc, re.MULTILINE)}
    ids = {scenario.id for scenario in SCENARIOS}
    for entry in KNOWN:
        assert entry.scenario == ALL or entry.scenario in ids, entry
        assert entry.pending is None and entry.doc_row is not None, f"unexplained (pending): {entry}"
        if entry.doc_row is not None:
            assert any(cell.startswith(entry.doc_row) for cell in first_cells), f"no row {entry.doc_row!r}: {entry}"
