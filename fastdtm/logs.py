"""Structured logs: one JSON object per line, with the gid on every line about a transaction."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from fastdtm.redaction import hide_url_passwords
from fastdtm.wire import encode_text


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            # Branch URLs in results and errors may carry `user:password@` (fastdtm.redaction).
            "msg": hide_url_passwords(record.getMessage()),
        }
        gid = getattr(record, "gid", None)
        if gid is not None:
            entry["gid"] = gid
        if record.exc_info:
            entry["exc"] = hide_url_passwords(self.formatException(record.exc_info))
        return encode_text(entry)


def configure(level: str) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # uvicorn's access log costs a line per request on the hot path; errors still show.
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
