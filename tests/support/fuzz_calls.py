"""Requests as generated values: this module owns `ApiCall` (one HTTP request to a node, shown compactly in a
falsifying example), the JSON encoder that can also write what Python's cannot (nesting deeper than its
recursion limit, bytes that are not JSON at all), and the placeholders that make a generated request
reusable: `@g1`, `@t1`, ... stand for a gid or topic name made fresh for each example, and `BUSI` for
the branch server's address, which is known only once the test runs.

Fresh names per example matter: a generated request must mean the same thing when Hypothesis replays
it, whatever the examples before it stored.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import orjson

#: The branch server as generated bodies name it; replaced by the real `http://127.0.0.1:<port>`.
BUSI = "http://busi"
#: `@g<n>` / `@t<n>`: the example's n-th fresh gid / topic name.
PLACEHOLDER = re.compile(r"@([gt])(\d)")


@dataclass(frozen=True, slots=True)
class RawJson:
    """A JSON fragment written as is: deep nesting, numbers Python would not write, or not JSON at all."""

    text: str

    def __repr__(self) -> str:
        return f"RawJson({_clip(self.text, 80)!r})"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))


Json: TypeAlias = "dict[str, Json] | list[Json] | str | int | float | bool | RawJson | None"


@dataclass(frozen=True, slots=True)
class ApiCall:
    """One request: `body` is encoded as JSON unless `raw` is given (then sent byte for byte)."""

    method: str
    path: str
    params: tuple[tuple[str, str], ...] = ()
    body: Json = None
    raw: bytes | None = None
    headers: tuple[tuple[str, str], ...] = field(default=(("content-type", "application/json"),))

    @property
    def has_body(self) -> bool:
        return self.raw is not None or self.body is not None

    @property
    def endpoint(self) -> str:
        """The last path segment (`submit`, `query`, `json-rpc`, ...): what the checks key on."""
        path = self.path.partition("?")[0]
        return "topic" if "/topic/" in path else path.rstrip("/").rpartition("/")[2]

    def fields(self) -> Mapping[str, Json]:
        """The object the endpoint parses, as generated: the body, or a JSON-RPC call's params."""
        return self._fields(self.body)

    def parsed(self) -> Mapping[str, object]:
        """The same as the node decodes it (orjson, the last of repeated keys): {} if it is not an object."""
        try:
            body = orjson.loads(self.content() or b"")
        except orjson.JSONDecodeError:
            return {}
        return self._fields(body)

    def _fields(self, body: object) -> Mapping[str, Json]:
        if not isinstance(body, dict):
            return {}
        if self.endpoint == "json-rpc":
            params = body.get("params")
            return params if isinstance(params, dict) else {}
        return body

    def rpc_method(self) -> str:
        body = self.body
        if self.raw is not None:
            with contextlib.suppress(orjson.JSONDecodeError):
                body = orjson.loads(self.raw)
        method = body.get("method") if isinstance(body, dict) else None
        return method if isinstance(method, str) else ""

    def bound(self, names: Callable[[str], str]) -> ApiCall:
        """This call with every placeholder replaced: `names("@g1")` -> the example's gid, BUSI -> the server."""
        return ApiCall(
            self.method,
            _bind_text(self.path, names),
            tuple((_bind_text(k, names), _bind_text(v, names)) for k, v in self.params),
            _bind(self.body, names),
            None if self.raw is None else _bind_text(self.raw.decode("latin-1"), names).encode("latin-1"),
            self.headers,
        )

    def content(self) -> bytes | None:
        if self.raw is not None:
            return self.raw
        return None if self.body is None else encode(self.body)

    def __repr__(self) -> str:
        query = "&".join(f"{k}={_clip(v, 60)}" for k, v in self.params)
        shown = f"{self.method} {self.path}{'?' + query if query else ''}"
        if self.raw is not None:
            shown += f" raw={_clip(self.raw.decode('utf-8', 'replace'), 300)!r}"
        elif self.body is not None:
            shown += f" {_clip(encode(self.body).decode('utf-8', 'replace'), 400)}"
        # Printable anywhere: a lone surrogate would make the report itself fail.
        return f"<{shown}>".encode("utf-8", "backslashreplace").decode()

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        """How Hypothesis shows a falsifying example (its printer ignores `__repr__` for dataclasses)."""
        printer.text(repr(self))


def encode(value: Json) -> bytes:
    """JSON text of `value`: UTF-8 where it can be, `\\u` escapes for lone surrogates (which UTF-8 cannot
    carry), RawJson fragments as they are."""
    text = _encode(value)
    try:
        return text.encode()
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass")


def _encode(value: Json) -> str:
    if isinstance(value, RawJson):
        return value.text
    if isinstance(value, dict):
        return "{" + ",".join(f"{_string(k)}:{_encode(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_encode(v) for v in value) + "]"
    if isinstance(value, str):
        return _string(value)
    return json.dumps(value)


def _string(text: str) -> str:
    encoded = json.dumps(text, ensure_ascii=False)
    try:
        encoded.encode()
    except UnicodeEncodeError:
        return json.dumps(text)  # escapes the lone surrogates: the JSON stays valid text
    return encoded


def _bind(value: Json, names: Callable[[str], str]) -> Json:
    if isinstance(value, str):
        return _bind_text(value, names)
    if isinstance(value, dict):
        return {_bind_text(k, names): _bind(v, names) for k, v in value.items()}
    if isinstance(value, list):
        return [_bind(v, names) for v in value]
    if isinstance(value, RawJson):
        return RawJson(_bind_text(value.text, names))
    return value


def _bind_text(text: str, names: Callable[[str], str]) -> str:
    if "@" not in text and BUSI not in text:
        return text
    return PLACEHOLDER.sub(lambda m: names(m.group(0)), text).replace(BUSI, names(BUSI))


def url_text(text: str) -> str:
    """`text` as a URL can carry it: a lone surrogate has no UTF-8 form, so it becomes U+FFFD."""
    return text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else f"{text[:width]}...({len(text)} chars)"
