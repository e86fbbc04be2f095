"""Hypothesis strategies for the values inside DTM requests: well-formed ones (what the SDKs send) and hostile
ones (boundary, huge and negative numbers, floats up to 1e308, non-ASCII digits, wrong JSON types, deep
nesting, control characters, giant strings within the body limit, URLs and headers a branch client must
refuse).

Every host in a generated URL is a loopback address or no host at all: a URL a node accepts is called by
its rounds, and tests here send traffic to this machine only.
"""

from __future__ import annotations

import base64
import json
import string
from typing import Final

from hypothesis import strategies as st

from tests.support.fuzz_calls import BUSI, Json, RawJson

#: Branch-server paths and what they answer (set up by the fuzz test's `busi` script).
OK, FAIL, FAIL_BODY, ONGOING, ERROR, CHECK_BACK, RESUME = "ok", "fail", "failbody", "ongoing", "error", "qp", "wf"

BOUNDARY_INTS: Final = (
    0,
    1,
    59,
    60,
    3600,
    2**31 - 1,
    2**31,
    2**32,
    2**53,
    2**53 + 1,
    2**62,
    2**63 - 1,
    2**63,
    2**64,
    10**12,
    10**20,
    10**30,
    -1,
    -(2**31),
    -(2**63),
    -(2**63) - 1,
)
BOUNDARY_FLOATS: Final = (0.0, -0.0, 0.5, 1.5, 60.0, 1e12, 1e20, 1e300, 1e308, 1.7976931348623157e308, -1e308, 5e-324)
#: Numbers as JSON text Python would not write: out of double range, leading zeros, non-ASCII digits, ...
RAW_NUMBERS: Final = ("1e400", "-1e400", "01", "1E+2", "0x10", "NaN", "Infinity", "-Infinity", "²", "1.", ".5", "+1")
#: `str.isdigit()` says yes to all of these; `int()` takes only the decimal ones (Nd).
NON_ASCII_DIGITS: Final = ("²", "³", "¹", "①", "٣", "१०", "\uff10", "\U0001d7d8", "߁", "፩")
#: Characters, not bytes: "😀" is 4 bytes, so some of these are over the 1 MiB body limit, as meant.
GIANT_SIZES: Final = (70_000, 250_000, 1_040_000)
#: In a URL: httpx refuses URLs over 64 KiB, and "😀" takes 12 bytes percent-encoded.
GIANT_URL_SIZES: Final = (1_000,)
SPECIAL_TEXTS: Final = (
    "",
    " ",
    "\x00",
    "\t",
    "\r\n",
    "a\r\nX-Injected: 1",
    "null",
    "{}",
    "[]",
    "²",
    "😀",
    "\u202e",
    "\ufeff",
    "é",
    "a;b",
    "%00",
    "../..",
)
#: URLs a branch client must refuse, or accepts but can never reach (a closed loopback port).
HOSTILE_URLS: Final = (
    "",
    "http://",
    "https://",
    "ftp://127.0.0.1/x",
    "localhost:50051/busi.Busi/TransOut",
    "http://127.0.0.1:1/closed",
    "http://[::1]:1/closed",
    "http://localhost:1/closed",
    "https://127.0.0.1:1/closed",
    "http://127.0.0.1:99999/x",
    "http://127.0.0.1:0/x",
    "http://127.0.0.1:-1/x",
    "http://[::1/x",
    "http://127.0.0.1:1/a b",
    "http://127.0.0.1:1/\r\nX: 1",
    "http://127.0.0.1:1/\x00",
    "http://user:pw@127.0.0.1:1/x",
    "HTTP://127.0.0.1:1/x",
    "http://127.0.0.1:²/x",
    "topic://",
    f"{BUSI}/{OK}#fragment",
    f"{BUSI}/{OK}?q=²&x=%ZZ",
    "grpc://127.0.0.1:1/x",
)
#: Header names and values a branch client must refuse, and a few it must take.
HOSTILE_HEADERS: Final[tuple[dict[str, Json], ...]] = (
    {"": "v"},
    {"a b": "v"},
    {"X-A": "a\r\nX-Injected: 1"},
    {"X-A": "a\nb"},
    {"X-A": "a\x00b"},
    {"X-A": "a\x7fb"},
    {"X-A": "\ttab"},
    {"é": "v"},
    {"X-A": "é"},
    {"X:A": "v"},
    {"Content-Length": "5"},
    {"Transfer-Encoding": "chunked"},
    {"Host": "127.0.0.1:1"},
    {"X-A": 1},
    {"X-A": None},
    {"X-A": ["v"]},
)


def busi(path: str) -> str:
    return f"{BUSI}/{path}"


def token() -> st.SearchStrategy[str]:
    """An RFC 9110 token: a header name every client takes."""
    return st.text(string.ascii_letters + string.digits + "-_", min_size=1, max_size=12)


def sane_text(max_size: int = 24) -> st.SearchStrategy[str]:
    """Text an SDK could send: any Unicode but lone surrogates (JSON cannot carry those)."""
    return st.text(max_size=max_size)


def texts(giant_sizes: tuple[int, ...] = GIANT_SIZES) -> st.SearchStrategy[str]:
    giant = st.sampled_from(giant_sizes).flatmap(lambda n: st.sampled_from("x½😀").map(lambda c: c * n))
    return st.one_of(
        st.sampled_from(SPECIAL_TEXTS),
        st.sampled_from(NON_ASCII_DIGITS),
        st.text(max_size=40),
        st.just("\ud800"),  # a lone surrogate: sent as a JSON escape, which no decoder should take
        giant,
    )


def numbers() -> st.SearchStrategy[Json]:
    return st.one_of(
        st.sampled_from(BOUNDARY_INTS),
        st.sampled_from(BOUNDARY_FLOATS),
        st.integers(),
        st.floats(allow_nan=False, allow_infinity=False),
        st.sampled_from(RAW_NUMBERS).map(RawJson),
    )


def deep_nesting() -> st.SearchStrategy[Json]:
    """Nesting past any recursion limit, as text: Python's own encoder could not write it."""
    depth = st.sampled_from((64, 1000, 1025, 5000, 100_000))
    return st.one_of(
        depth.map(lambda n: RawJson("[" * n + "]" * n)),
        depth.map(lambda n: RawJson('{"a":' * n + "1" + "}" * n)),
    )


def json_values() -> st.SearchStrategy[Json]:
    """Any JSON value, hostile ones favoured."""
    scalars: st.SearchStrategy[Json] = st.one_of(st.none(), st.booleans(), numbers(), texts())
    nested = st.recursive(
        scalars,
        lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)),
        max_leaves=6,
    )
    return st.one_of(scalars, nested, deep_nesting())


def wrong_type_for_string() -> st.SearchStrategy[Json]:
    return st.one_of(st.none(), st.booleans(), numbers(), st.lists(st.text(max_size=4), max_size=2), st.just({}))


def urls() -> st.SearchStrategy[Json]:
    return st.one_of(st.sampled_from(HOSTILE_URLS), wrong_type_for_string())


def headers() -> st.SearchStrategy[Json]:
    many = st.integers(100, 2000).map(lambda n: {f"X-H{i}": "v" for i in range(n)})
    return st.one_of(st.sampled_from(HOSTILE_HEADERS), many, wrong_type_for_string(), json_values())


def sane_headers() -> st.SearchStrategy[dict[str, Json]]:
    value: st.SearchStrategy[Json] = st.text(string.printable.strip() + " ", max_size=20).map(str.strip)
    return st.dictionaries(token(), value, max_size=3)


def gids(giant_sizes: tuple[int, ...] = GIANT_SIZES) -> st.SearchStrategy[str]:
    """Hostile gids. A well-formed one always starts with a placeholder: it is the example's own."""
    own = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=140).map(lambda s: "@g1" + s)
    fixed = st.sampled_from(("", " ", "a b", "a;b", "é", "\x00", "x" * 129, "@g1\n", "@g1 "))
    return st.one_of(own, fixed, texts(giant_sizes))


def branch_ids() -> st.SearchStrategy[Json]:
    return st.one_of(st.sampled_from(("", "00", "01", "0" * 129, "a;b", "01 ", "é", "٣", "01\x00")), texts(), numbers())


def payload() -> st.SearchStrategy[str]:
    """A branch body: JSON text as the SDKs send, or any text (passed byte for byte)."""
    return st.one_of(st.just('{"amount":30}'), st.just(""), sane_text())


def workflow_data(name: str, data: str) -> str:
    """A workflow's custom_data: its name and its input in base64."""
    return json.dumps({"name": name, "data": base64.b64encode(data.encode()).decode()})
