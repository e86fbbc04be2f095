"""The registry of transaction kinds, one module each; `kind_for` is how everything finds one."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from fastdtm.errors import Invalid
from fastdtm.kinds.base import Kind
from fastdtm.kinds.msg import Msg
from fastdtm.kinds.saga import Saga
from fastdtm.kinds.tcc import Tcc
from fastdtm.kinds.workflow import Workflow
from fastdtm.kinds.xa import Xa
from fastdtm.states import TransType

KINDS: Final[Mapping[TransType, Kind]] = {
    TransType.SAGA: Saga(),
    TransType.MSG: Msg(),
    TransType.TCC: Tcc(),
    TransType.XA: Xa(),
    TransType.WORKFLOW: Workflow(),
}


def kind_for(trans_type: TransType) -> Kind:
    try:
        return KINDS[trans_type]
    except KeyError:
        raise Invalid(f"trans_type '{trans_type}' is not supported yet by this server.") from None
