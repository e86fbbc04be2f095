"""The one exception tree; each API-facing error knows its HTTP status and DTM result word.

FastdtmError
├── ApiError                 answered to the caller as (status, body)
│   ├── BadRequest           400: the body is not JSON / not an object, a cursor this server did not issue
│   │   └── NotAnObject      400: the body is JSON, but not an object (JSON-RPC tells the two apart)
│   ├── Unauthorized         401: no token, or one the node does not know (with authentication on)
│   ├── Forbidden            403: the token's role may not call this
│   ├── PayloadTooLarge      413
│   ├── UnsupportedMediaType 415: a POST body a browser could send unasked (form, multipart, text/plain)
│   ├── Invalid              422: well-formed JSON with wrong fields or values
│   ├── NotFound             404: no transaction with that gid
│   ├── Conflict             409 + dtm_result FAILURE: the state forbids the operation
│   ├── Ongoing              425 + dtm_result ONGOING
│   └── ServerError          500: anything else the caller should see
└── StoreError               raised by a Store
    ├── StoreUnavailable     the store could not be reached / answered an error
    ├── Stale                compare-and-set lost: the status was not the expected one
    ├── Fenced               a round's write refused: another round took the transaction over
    ├── Held                 another round holds the transaction now
    ├── ProtocolMismatch     registerBranch over one API into a transaction prepared over the other
    └── TransNotFound        the transaction does not exist (any more)
"""

from __future__ import annotations

from typing import ClassVar


class FastdtmError(Exception):
    """Base of every error fastdtm raises on purpose."""


class ApiError(FastdtmError):
    status_code: ClassVar[int] = 500
    dtm_result: ClassVar[str | None] = None

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def body(self) -> dict[str, str]:
        if self.dtm_result is None:
            return {"message": self.message}
        return {"dtm_result": self.dtm_result, "message": self.message}


class BadRequest(ApiError):
    status_code = 400


class NotAnObject(BadRequest):
    pass


class Unauthorized(ApiError):
    status_code = 401


class Forbidden(ApiError):
    status_code = 403


class PayloadTooLarge(ApiError):
    status_code = 413


class UnsupportedMediaType(ApiError):
    status_code = 415


class Invalid(ApiError):
    status_code = 422


class NotFound(ApiError):
    status_code = 404


class Conflict(ApiError):
    """409; DTM's messages end with the word FAILURE, and SDKs look for it."""

    status_code = 409
    dtm_result = "FAILURE"

    def __init__(self, message: str) -> None:
        super().__init__(message if message.endswith("FAILURE") else f"{message} FAILURE")


class Ongoing(ApiError):
    status_code = 425
    dtm_result = "ONGOING"

    def __init__(self, message: str) -> None:
        super().__init__(message if message.endswith("ONGOING") else f"{message} ONGOING")


class ServerError(ApiError):
    status_code = 500


class StoreError(FastdtmError):
    """Base of the errors a Store raises."""


class StoreUnavailable(StoreError):
    pass


class Stale(StoreError):
    """The transaction's status was not the expected one; `current` says what it was."""

    def __init__(self, current: str) -> None:
        super().__init__(f"current status is '{current}'")
        self.current = current


class Fenced(StoreError):
    """A round's write was refused: another round took the transaction since (`current` is its token)."""

    def __init__(self, current: str) -> None:
        super().__init__(f"another round took the transaction over (holder '{current}')")
        self.current = current


class Held(StoreError):
    """Another round holds the transaction until `until_ms`: a second round must not act on it meanwhile."""

    def __init__(self, until_ms: int) -> None:
        super().__init__(f"another round holds the transaction until {until_ms} ms")
        self.until_ms = until_ms


class Paused(Held):
    """An operator paused the transaction's retries (`lua/admin_pause.lua`): no round runs on it until it is
    resumed. A Held whose hold has no end: whoever waits for a hold to end waits for the resume."""

    def __init__(self, since_ms: int) -> None:
        super().__init__(since_ms)
        self.args = (f"an operator paused the transaction's retries at {since_ms} ms",)
        self.since_ms = since_ms


class NotPaused(StoreError):
    """A resume of a transaction that is not paused (`current` is its status)."""

    def __init__(self, current: str) -> None:
        super().__init__(f"the transaction is not paused (status '{current}')")
        self.current = current


class NoSuchBranch(StoreError):
    """An operator's mark names a branch the transaction does not have."""


class BranchDecided(StoreError):
    """An operator's mark on a branch that has a result already (`progress` is `"<status> <finish_ms>"`)."""

    def __init__(self, progress: str) -> None:
        super().__init__(f"the branch is {progress.split(' ')[0]} already")
        self.status = progress.split(" ")[0]


class TransNotFound(StoreError):
    pass


class ProtocolMismatch(StoreError):
    """Branches registered with bodies kept for one protocol into a transaction of the other (`stored`): a gRPC
    transaction keeps its bodies as base64, an HTTP one as text (states.HTTP, states.GRPC)."""

    def __init__(self, stored: str) -> None:
        super().__init__(f"the transaction's protocol is '{stored}'")
        self.stored = stored


class AlreadyExists(StoreError):
    """A create found the gid taken; `status` is the stored transaction's."""

    def __init__(self, status: str) -> None:
        super().__init__(f"the gid is taken (status '{status}')")
        self.status = status


class LeaseLost(StoreError):
    """This node no longer holds the shard lease it claimed with."""


class Refused(StoreError):
    """The store refused a write that contradicts what it holds (a duplicate branch, another type)."""
