"""Comparing two normalised transcripts: this module owns splitting them into fields (`reply N` per request,
`query <gid>` per final /query, `calls` for the participant's calls), finding the fields that differ, and the
report that shows both sides of each."""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from typing import Any

from .explained import dropped_keys
from .normalise import Normaliser, without_keys
from .runner import Transcript
from .scenario import Scenario


@dataclass(frozen=True)
class Difference:
    field: str
    go: Any
    fastdtm: Any

    def report(self) -> str:
        go, fast = _dump(self.go), _dump(self.fastdtm)
        diff = difflib.unified_diff(go.splitlines(), fast.splitlines(), "go-dtm", "fastdtm", lineterm="", n=2)
        return f"--- {self.field}\n  Go DTM:  {_one_line(self.go)}\n  fastdtm: {_one_line(self.fastdtm)}\n" + "\n".join(
            diff
        )


def fields(scenario: Scenario, transcript: Transcript, normalise: Normaliser) -> dict[str, Any]:
    """Every compared field of one side, normalised; the same keys on both sides."""
    out: dict[str, Any] = {}
    for index, (label, status, body) in enumerate(transcript.replies, start=1):
        out[f"reply {index}"] = {"request": label, "status": status, "body": normalise(body)}
    for number, body in enumerate(transcript.queries.values()):
        out["query" if number == 0 else f"query {number}"] = normalise(body)
    calls = [normalise(call) for call in transcript.calls]
    # Unordered (concurrent) scenarios compare which calls were made, each once: calls are at-least-once on both
    # sides, and under load Go DTM's cron may start a second round beside the submit's and repeat one
    # (docs/compatibility.md, "two rounds of one transaction at once"); CI saw it call a compensation twice.
    out["calls"] = calls if scenario.ordered_calls else sorted({_sort_key(c): c for c in calls}.values(), key=_sort_key)
    return {key: without_keys(value, dropped_keys(scenario.id, key)) for key, value in out.items()}


def differences(go: dict[str, Any], fastdtm: dict[str, Any]) -> list[Difference]:
    keys = list(dict.fromkeys([*go, *fastdtm]))
    return [Difference(key, go.get(key), fastdtm.get(key)) for key in keys if go.get(key) != fastdtm.get(key)]


def _sort_key(call: Any) -> str:
    return json.dumps(call, sort_keys=True)


def _dump(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)


def _one_line(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, ensure_ascii=False)
    return text if len(text) <= 400 else text[:400] + "…"
