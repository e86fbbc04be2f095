"""The SDK's exceptions: what a branch handler raises to answer DTM, and what a call to the coordinator or to
a branch raises when it did not succeed.

    DtmClientError
     ├── Failure       the business refused: a branch answers 409 FAILURE (a saga rolls back, a TCC aborts)
     ├── Ongoing       not finished yet: a branch answers 425 ONGOING (the coordinator retries later)
     ├── Duplicated    a msg's local transaction already ran (or was closed by a check-back)
     ├── DtmError      the coordinator answered something else than 200 SUCCESS (status and body kept)
     └── BranchError   a branch called by this process answered neither 200, 409 nor 425
"""

from __future__ import annotations


class DtmClientError(Exception):
    """Base of every exception the SDK raises."""


class Failure(DtmClientError):
    """A definite business failure: DTM's FAILURE (HTTP 409)."""


class Ongoing(DtmClientError):
    """The branch is not done yet; call it again later: DTM's ONGOING (HTTP 425)."""


class Duplicated(DtmClientError):
    """The msg barrier row already exists: the local transaction ran, or a check-back rolled it back."""


class DtmError(DtmClientError):
    """The coordinator refused or failed a call (any status but 200, or a 200 whose body holds FAILURE)."""

    def __init__(self, operation: str, status: int, body: str) -> None:
        super().__init__(f"{operation}: HTTP {status} {body}")
        self.operation = operation
        self.status = status
        self.body = body

    @property
    def is_failure(self) -> bool:
        """The coordinator said FAILURE (409), e.g. the transaction is no longer in a state that allows it."""
        return self.status == 409 or "FAILURE" in self.body


class BranchError(DtmClientError):
    """A branch answered with an unexpected status (500, 404, ...): neither success, FAILURE nor ONGOING."""

    def __init__(self, url: str, status: int, body: str) -> None:
        super().__init__(f"{url}: HTTP {status} {body}")
        self.url = url
        self.status = status
        self.body = body
