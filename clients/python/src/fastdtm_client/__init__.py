"""fastdtm-client: an async, typed SDK for DTM-protocol coordinators (fastdtm and Go DTM).

Transactions: `Saga`, `Msg`, `Tcc`, `Xa` (+ `xa_local_transaction` for resource managers), all through one
pooled `DtmClient`. Barriers: `fastdtm_client.barrier` and its per-database modules. Branch services:
`fastdtm_client.starlette`."""

from __future__ import annotations

from .barrier.core import BranchBarrier
from .branch import BranchInfo, InvalidBranchQuery
from .errors import BranchError, DtmClientError, DtmError, Duplicated, Failure, Ongoing
from .http import Auth, BranchReply, DtmClient
from .msg import Msg
from .options import TransOptions
from .saga import Saga
from .tcc import Tcc
from .xa import Xa, XaResource, xa_local_transaction

__version__ = "0.1.0"

__all__ = [
    "Auth",
    "BranchBarrier",
    "BranchError",
    "BranchInfo",
    "BranchReply",
    "DtmClient",
    "DtmClientError",
    "DtmError",
    "Duplicated",
    "Failure",
    "InvalidBranchQuery",
    "Msg",
    "Ongoing",
    "Saga",
    "Tcc",
    "TransOptions",
    "Xa",
    "XaResource",
    "xa_local_transaction",
]
