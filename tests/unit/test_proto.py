"""fastdtm/proto/dtmgimp_pb2.py and .pyi are protoc's output for dtmgimp.proto (`make proto`): regenerated here
and compared, so the checked-in modules cannot drift from the schema they claim to be."""

from __future__ import annotations

from pathlib import Path

import pytest
from grpc_tools import protoc

from fastdtm.proto import dtmgimp_pb2

PROTO_DIR = Path(dtmgimp_pb2.__file__).parent


def test_the_generated_modules_match_the_proto(tmp_path: Path) -> None:
    args = ["protoc", f"-I{PROTO_DIR}", f"--python_out={tmp_path}", f"--pyi_out={tmp_path}", "dtmgimp.proto"]
    # protoc's own well-known types (google/protobuf/empty.proto) ship inside grpc_tools.
    include = Path(protoc.__file__).parent / "_proto"
    assert protoc.main([*args[:1], f"-I{include}", *args[1:]]) == 0
    for name in ("dtmgimp_pb2.py", "dtmgimp_pb2.pyi"):
        assert (tmp_path / name).read_text() == (PROTO_DIR / name).read_text(), f"run `make proto`: {name} is stale"


@pytest.mark.parametrize(
    ("message", "field", "number"),
    [
        ("DtmRequest", "BinPayloads", 5),
        ("DtmRequest", "Steps", 7),
        ("DtmRequest", "RollbackReason", 9),
        ("DtmTransOptions", "BranchHeaders", 5),
        ("DtmTransOptions", "RetryLimit", 7),
        ("DtmBranchRequest", "BusiPayload", 6),
        ("DtmProgress", "BinData", 2),
    ],
)
def test_field_numbers_are_dtms(message: str, field: str, number: int) -> None:
    """The numbers the SDKs put on the wire (a renumbered field would decode as another)."""
    assert dtmgimp_pb2.DESCRIPTOR.message_types_by_name[message].fields_by_name[field].number == number
