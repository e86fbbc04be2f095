from google.protobuf import empty_pb2 as _empty_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DtmTransOptions(_message.Message):
    __slots__ = ("WaitResult", "TimeoutToFail", "RetryInterval", "BranchHeaders", "RequestTimeout", "RetryLimit")
    class BranchHeadersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    WAITRESULT_FIELD_NUMBER: _ClassVar[int]
    TIMEOUTTOFAIL_FIELD_NUMBER: _ClassVar[int]
    RETRYINTERVAL_FIELD_NUMBER: _ClassVar[int]
    BRANCHHEADERS_FIELD_NUMBER: _ClassVar[int]
    REQUESTTIMEOUT_FIELD_NUMBER: _ClassVar[int]
    RETRYLIMIT_FIELD_NUMBER: _ClassVar[int]
    WaitResult: bool
    TimeoutToFail: int
    RetryInterval: int
    BranchHeaders: _containers.ScalarMap[str, str]
    RequestTimeout: int
    RetryLimit: int
    def __init__(self, WaitResult: _Optional[bool] = ..., TimeoutToFail: _Optional[int] = ..., RetryInterval: _Optional[int] = ..., BranchHeaders: _Optional[_Mapping[str, str]] = ..., RequestTimeout: _Optional[int] = ..., RetryLimit: _Optional[int] = ...) -> None: ...

class DtmRequest(_message.Message):
    __slots__ = ("Gid", "TransType", "TransOptions", "CustomedData", "BinPayloads", "QueryPrepared", "Steps", "ReqExtra", "RollbackReason")
    class ReqExtraEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    GID_FIELD_NUMBER: _ClassVar[int]
    TRANSTYPE_FIELD_NUMBER: _ClassVar[int]
    TRANSOPTIONS_FIELD_NUMBER: _ClassVar[int]
    CUSTOMEDDATA_FIELD_NUMBER: _ClassVar[int]
    BINPAYLOADS_FIELD_NUMBER: _ClassVar[int]
    QUERYPREPARED_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    REQEXTRA_FIELD_NUMBER: _ClassVar[int]
    ROLLBACKREASON_FIELD_NUMBER: _ClassVar[int]
    Gid: str
    TransType: str
    TransOptions: DtmTransOptions
    CustomedData: str
    BinPayloads: _containers.RepeatedScalarFieldContainer[bytes]
    QueryPrepared: str
    Steps: str
    ReqExtra: _containers.ScalarMap[str, str]
    RollbackReason: str
    def __init__(self, Gid: _Optional[str] = ..., TransType: _Optional[str] = ..., TransOptions: _Optional[_Union[DtmTransOptions, _Mapping]] = ..., CustomedData: _Optional[str] = ..., BinPayloads: _Optional[_Iterable[bytes]] = ..., QueryPrepared: _Optional[str] = ..., Steps: _Optional[str] = ..., ReqExtra: _Optional[_Mapping[str, str]] = ..., RollbackReason: _Optional[str] = ...) -> None: ...

class DtmGidReply(_message.Message):
    __slots__ = ("Gid",)
    GID_FIELD_NUMBER: _ClassVar[int]
    Gid: str
    def __init__(self, Gid: _Optional[str] = ...) -> None: ...

class DtmBranchRequest(_message.Message):
    __slots__ = ("Gid", "TransType", "BranchID", "Op", "Data", "BusiPayload")
    class DataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    GID_FIELD_NUMBER: _ClassVar[int]
    TRANSTYPE_FIELD_NUMBER: _ClassVar[int]
    BRANCHID_FIELD_NUMBER: _ClassVar[int]
    OP_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    BUSIPAYLOAD_FIELD_NUMBER: _ClassVar[int]
    Gid: str
    TransType: str
    BranchID: str
    Op: str
    Data: _containers.ScalarMap[str, str]
    BusiPayload: bytes
    def __init__(self, Gid: _Optional[str] = ..., TransType: _Optional[str] = ..., BranchID: _Optional[str] = ..., Op: _Optional[str] = ..., Data: _Optional[_Mapping[str, str]] = ..., BusiPayload: _Optional[bytes] = ...) -> None: ...

class DtmProgressesReply(_message.Message):
    __slots__ = ("Transaction", "Progresses")
    TRANSACTION_FIELD_NUMBER: _ClassVar[int]
    PROGRESSES_FIELD_NUMBER: _ClassVar[int]
    Transaction: DtmTransaction
    Progresses: _containers.RepeatedCompositeFieldContainer[DtmProgress]
    def __init__(self, Transaction: _Optional[_Union[DtmTransaction, _Mapping]] = ..., Progresses: _Optional[_Iterable[_Union[DtmProgress, _Mapping]]] = ...) -> None: ...

class DtmTransaction(_message.Message):
    __slots__ = ("Gid", "Status", "RollbackReason", "Result")
    GID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ROLLBACKREASON_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    Gid: str
    Status: str
    RollbackReason: str
    Result: str
    def __init__(self, Gid: _Optional[str] = ..., Status: _Optional[str] = ..., RollbackReason: _Optional[str] = ..., Result: _Optional[str] = ...) -> None: ...

class DtmProgress(_message.Message):
    __slots__ = ("Status", "BinData", "BranchID", "Op")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    BINDATA_FIELD_NUMBER: _ClassVar[int]
    BRANCHID_FIELD_NUMBER: _ClassVar[int]
    OP_FIELD_NUMBER: _ClassVar[int]
    Status: str
    BinData: bytes
    BranchID: str
    Op: str
    def __init__(self, Status: _Optional[str] = ..., BinData: _Optional[bytes] = ..., BranchID: _Optional[str] = ..., Op: _Optional[str] = ...) -> None: ...

class DtmTopicRequest(_message.Message):
    __slots__ = ("Topic", "URL", "Remark")
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    REMARK_FIELD_NUMBER: _ClassVar[int]
    Topic: str
    URL: str
    Remark: str
    def __init__(self, Topic: _Optional[str] = ..., URL: _Optional[str] = ..., Remark: _Optional[str] = ...) -> None: ...
