"""Which HTTP protocol `fastdtm serve` gives uvicorn: fastdtm's shortcut, or uvicorn's own if it cannot run.

`fastdtm.api.protocol` subclasses uvicorn internals that uvicorn may rename in any release. It is imported
here, inside a guard, and only when a node starts: a uvicorn that moved them costs the shortcut's speed
(about 13% on DTM's fixed routes) and a warning, never a failed start, and never `fastdtm --help`.
"""

from __future__ import annotations

import importlib
import logging
from typing import Final

log = logging.getLogger("fastdtm.api.protocol")

#: uvicorn's `http` setting for `fastdtm serve`.
PROTOCOL: Final = "fastdtm.api.protocol:DirectHttpToolsProtocol"
#: uvicorn's plain httptools protocol: every route through ASGI.
FALLBACK: Final = "httptools"


def uvicorn_http() -> str:
    """uvicorn's `http` setting: the shortcut protocol, or plain httptools if uvicorn's internals moved."""
    try:
        protocol = importlib.import_module(PROTOCOL.partition(":")[0])
        missing: list[str] = protocol.missing_internals()
    except (ImportError, AttributeError) as exc:  # a name gone from uvicorn, at import or in the check
        log.warning("this uvicorn lacks what fastdtm's protocol uses (%s): serving every route through ASGI", exc)
        return FALLBACK
    if missing:
        log.warning("this uvicorn lacks %s: serving every route through ASGI", ", ".join(missing))
        return FALLBACK
    return PROTOCOL
