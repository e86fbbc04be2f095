"""The SDK against a node that requires a token (`--auth-file`, docs/security.md): a Bearer token and HTTP Basic
(the token as password) both work, for the initiator's calls and for a TCC's registerBranch; no token or a wrong
one is refused with 401 before anything is recorded."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastdtm_client import Auth, DtmClient, DtmError, Saga, Tcc

from tests.support.node import FastdtmNode

from .harness import Coordinator, wait_status
from .participant import Participant

CLIENT_TOKEN = "sdk-python-client-token-5d1e"
OPERATOR_TOKEN = "sdk-python-operator-token-77aa"


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Coordinator]:
    directory = tmp_path_factory.mktemp("sdk-auth")
    tokens = directory / "tokens"
    tokens.write_text(f"{CLIENT_TOKEN} client\n{OPERATOR_TOKEN} operator\n")
    tokens.chmod(0o600)
    node = FastdtmNode(f"sqlite:///{directory / 'fastdtm.db'}", ["--auth-file", str(tokens)], workdir=directory)
    try:
        # The test's own /query polls go through the operator token in the URL.
        yield Coordinator("secured", node.base.replace("http://", f"http://op:{OPERATOR_TOKEN}@"))
    finally:
        node.stop()


@pytest.mark.parametrize("auth", [CLIENT_TOKEN, ("app", CLIENT_TOKEN)], ids=["bearer", "basic"])
async def test_token_accepted(secured: Coordinator, participant: Participant, auth: Auth) -> None:
    dtm_url = secured.dtm.replace(f"op:{OPERATOR_TOKEN}@", "")
    async with DtmClient(dtm_url, auth=auth) as dtm:
        gid = await dtm.new_gid()
        saga = Saga(dtm, gid).add(participant.url("/busi/TransOut"), participant.url("/busi/TransOutRevert"), {})
        await saga.submit()
        await wait_status(secured, gid, {"succeed"})
        tcc_gid = await dtm.new_gid()
        async with Tcc(dtm, tcc_gid) as tcc:
            busi = participant.url("/busi/")
            await tcc.call_branch({}, busi + "Try", busi + "Confirm", busi + "Cancel")
        await wait_status(secured, tcc_gid, {"succeed"})


@pytest.mark.parametrize("auth", [None, "wrong-token-0123456789"], ids=["none", "wrong"])
async def test_token_refused(secured: Coordinator, auth: Auth | None) -> None:
    dtm_url = secured.dtm.replace(f"op:{OPERATOR_TOKEN}@", "")
    async with DtmClient(dtm_url, auth=auth) as dtm:
        with pytest.raises(DtmError) as raised:
            await dtm.new_gid()
    assert raised.value.status == 401
