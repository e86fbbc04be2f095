"""Workflow: the client runs the workflow and records each step; the server stores progress and resumes.

The client starts with prepareWorkflow (`custom_data` = `{"name", "data": <base64 input>}`,
`query_prepared` = its resume callback), records each finished step with registerBranch (op and
status given by the client), and ends with a submit whose `req_extra` carries the final status. A
workflow left `prepared` (its client crashed, or a step said ONGOING) is resumed by the cron: it
POSTs the input to the callback with `branch_id=00, op=<name>`, every retry interval without
back-off, until the client submits (reference §6.5). Workflows have no timeout. Over gRPC the callback is
`workflow.Workflow/Execute`, called with the input wrapped in its `WorkflowData` message.
"""

from __future__ import annotations

import base64
import binascii
from typing import ClassVar

from fastdtm.errors import Invalid
from fastdtm.kinds.base import CHECK_BACK, Call, Round, Step, Topics, reset_interval_ms
from fastdtm.models import Branch, BranchRequest, TransRequest, body_bytes, check_call_url, stored_body
from fastdtm.states import GRPC, HTTP, BranchStatus, TransStatus
from fastdtm.wire import custom_data_object

#: The statuses a client may record a step, or finish the workflow, with.
FINAL = {str(s): s for s in (TransStatus.SUCCEED, TransStatus.FAILED)}


def workflow_input(custom_data: str) -> tuple[str, str]:
    """(name, input) from custom_data; the input is base64 in JSON and the callback's body decoded."""
    data = custom_data_object(custom_data)
    name, encoded = data.get("name"), data.get("data") or ""
    if not isinstance(name, str) or not name or not isinstance(encoded, str):
        raise Invalid('a workflow needs custom_data {"name": <workflow name>, "data": <base64 input>}.')
    try:
        raw = base64.b64decode(encoded, validate=True)
    except binascii.Error:
        raise Invalid("custom_data.data must be base64.") from None
    # Inputs are bytes (JSON, protobuf): keep every byte through str with surrogateescape.
    return name, raw.decode("utf-8", "surrogateescape")


def workflow_data(raw: bytes) -> bytes:
    """`message WorkflowData { bytes Data = 1; }` serialized: the tag of field 1 (length-delimited), the
    length as a varint, the bytes; an empty field is left out, as protobuf does."""
    if not raw:
        return b""
    length = bytearray()
    n = len(raw)
    while n >= 0x80:
        length.append(n & 0x7F | 0x80)
        n >>= 7
    length.append(n)
    return b"\x0a" + bytes(length) + raw


def resume_body(protocol: str, data: str) -> str:
    """The resume callback's body as a Call carries it: the input itself, or for gRPC its WorkflowData in
    base64 (a gRPC transaction's call bodies are base64; see models.stored_body)."""
    if protocol != GRPC:
        return data
    return stored_body(workflow_data(body_bytes(data, HTTP)), GRPC)


class Workflow:
    failure_ends: ClassVar[frozenset[str]] = frozenset()

    def build(self, request: TransRequest, now_ms: int, topics: Topics) -> list[Branch]:
        workflow_input(request.custom_data)
        if request.query_prepared:
            check_call_url(request.query_prepared, "query_prepared", request.protocol)
        return []

    def register(self, request: BranchRequest, now_ms: int) -> list[Branch]:
        op = request.fields.get("op", "")
        if not op:
            raise Invalid("a workflow branch needs 'op'.")
        status = FINAL.get(request.fields.get("status", ""))
        if status is None:
            raise Invalid("a workflow branch needs 'status' 'succeed' or 'failed'.")
        branch = Branch(request.branch_id, op, "", request.fields.get("data", ""), now_ms)
        return [branch.with_status(BranchStatus(status), now_ms)]

    def step(self, rnd: Round) -> Step:
        trans = rnd.trans
        if trans.status is not TransStatus.PREPARED or not trans.query_prepared:
            return Step()
        if CHECK_BACK in rnd.attempts:
            # The client's resumed run submits by itself; whatever the callback said, ask again
            # one retry interval later (no back-off, as DTM).
            return Step(wake_at_ms=rnd.now_ms + reset_interval_ms(trans.options, rnd.policy))
        name, data = workflow_input(trans.custom_data)
        return Step(start=(Call(CHECK_BACK, "00", name, trans.query_prepared, resume_body(trans.protocol, data)),))
