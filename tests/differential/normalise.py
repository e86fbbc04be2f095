"""What legitimately differs between two runs of one scenario, replaced by placeholders before comparing: times
(`<time>`), record ids and lock owners (`<id>`, `<owner>`), gids the server generated (`<new-gid>`), and the
host:port of the participant (`<busi>`) and of the coordinator (`<dtm>`), plain or URL-encoded.

Left as they are, on purpose: statuses, messages, reasons and results, option values, `next_cron_interval`,
which keys are present (an absent `finish_time` is not an empty one), branch records and their order, the
participant's calls and their order, query strings, bodies and the custom headers it received."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

TIME = re.compile(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:?\d\d)?")
ID_KEYS = frozenset({"id"})
OWNER_KEYS = frozenset({"owner"})
GENERATED_GID_KEYS = frozenset({"gid"})
SCENARIO_GID_PREFIX = "d-"


def without_keys(value: Any, keys: frozenset[str]) -> Any:
    """`value` without these keys at any depth: `name` in transaction objects (dicts with a `trans_type`),
    `branch:name` in branch records (dicts with an `op` and no `trans_type`)."""
    if not keys:
        return value
    if isinstance(value, list):
        return [without_keys(item, keys) for item in value]
    if not isinstance(value, dict):
        return value
    if "trans_type" in value:
        return {k: without_keys(v, keys) for k, v in value.items() if k not in keys}
    if "op" in value and "branch_id" in value:
        return {k: v for k, v in value.items() if f"branch:{k}" not in keys}
    return {k: without_keys(v, keys) for k, v in value.items()}


class Normaliser:
    def __init__(self, busi_base: str, dtm_base: str) -> None:
        self._urls = [
            (busi_base, "<busi>"),
            (dtm_base, "<dtm>"),
            (quote(busi_base, safe=""), "<busi>"),
            (quote(dtm_base, safe=""), "<dtm>"),
            (busi_base.removeprefix("http://"), "<busi>"),
            (dtm_base.removeprefix("http://"), "<dtm>"),
        ]

    def __call__(self, value: Any, key: str | None = None) -> Any:
        if isinstance(value, dict):
            return {k: self(v, k) for k, v in value.items()}
        if isinstance(value, list):
            return [self(item, key) for item in value]
        if isinstance(value, str):
            return self._text(value, key)
        if key in ID_KEYS and isinstance(value, int):
            return "<id>"
        return value

    def _text(self, value: str, key: str | None) -> str:
        if key in OWNER_KEYS and value:
            return "<owner>"
        if key in GENERATED_GID_KEYS and value and not value.startswith(SCENARIO_GID_PREFIX):
            return "<new-gid>"
        if key in ID_KEYS and value:
            return "<id>"
        for url, placeholder in self._urls:
            value = value.replace(url, placeholder)
        return TIME.sub("<time>", value)
