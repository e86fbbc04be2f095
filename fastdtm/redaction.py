"""What the coordinator shows of the secrets clients hand it: branch header values and URL passwords.

A client's `branch_headers` often carry the credentials the coordinator needs to call the branches
(`Authorization: Bearer ...`), and branch URLs may carry `user:password@`. The coordinator sends them
unchanged; what it shows (`/query`, `/all`, `prepareWorkflow`'s echo, its logs) has the values of the
sensitive headers and URL passwords replaced by `***`, unless an operator asks for them
(`?reveal=1`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any, Final

MASK: Final = "***"
#: Always hidden, whatever `--redact-headers` adds.
SENSITIVE_HEADERS: Final = frozenset({"authorization", "cookie", "proxy-authorization"})
#: `scheme://user:password@`: the password part, up to the `@` that ends the userinfo.
_URL_PASSWORD: Final = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^/?#@\s:]*):[^/?#@\s]*@")


def hide_url_passwords(text: str) -> str:
    """Every `scheme://user:password@` in `text` with the password masked (the user stays: it says who)."""
    if "@" not in text:  # the usual case: no regex at all
        return text
    return _URL_PASSWORD.sub(rf"\g<head>:{MASK}@", text)


class Redactor:
    """Masks the configured header values and URL passwords in what a transaction shows."""

    def __init__(self, extra_headers: Iterable[str] = ()) -> None:
        self.headers = SENSITIVE_HEADERS | {name.strip().lower() for name in extra_headers if name.strip()}

    @classmethod
    def from_setting(cls, redact_headers: str) -> Redactor:
        """From `--redact-headers` (comma-separated names)."""
        return cls(redact_headers.split(","))

    def header_values(self, headers: Mapping[str, str]) -> dict[str, str]:
        return {name: MASK if name.lower() in self.headers else value for name, value in headers.items()}

    def options(self, options: dict[str, Any]) -> dict[str, Any]:
        """A transaction's options as `to_json` gives them, with `branch_headers` masked."""
        headers = options.get("branch_headers")
        if not headers:
            return options
        return {**options, "branch_headers": self.header_values(headers)}
