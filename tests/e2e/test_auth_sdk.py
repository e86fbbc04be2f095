"""The real Python SDK (dtmcli) against a node with `--auth-file`: the token travels in the server URL,
`http://app:<token>@host:port/api/dtmsvr`, which `requests` sends as HTTP Basic; nothing else changes.

A saga and a TCC (success and rollback) run through a client token; the same SDK calls without a token
are refused before anything is recorded. The check does not depend on the store: embedded store only.
"""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import pytest
import requests
from dtmcli import saga, tcc, utils

from tests.e2e.helpers import paths, statuses
from tests.support.busi import BusiServer
from tests.support.node import FastdtmNode, NodeFactory, query, wait_status

CLIENT = "sdk-client-token-7c41d09e"
OPERATOR = "sdk-operator-token-2ab8f5e3"
BODY = {"amount": 30}


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FastdtmNode]:
    directory = tmp_path_factory.mktemp("auth-sdk")
    tokens = directory / "tokens"
    tokens.write_text(f"{CLIENT} client\n{OPERATOR} operator\n")
    tokens.chmod(0o600)
    factory = NodeFactory(lambda: tmp_path_factory.mktemp("node"))
    try:
        yield factory(f"sqlite:///{directory / 'fastdtm.db'}", "--auth-file", str(tokens))
    finally:
        factory.stop_all()


def with_token(url: str, token: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=f"app:{token}@{parts.netloc}"))


@pytest.fixture
def dtm(node: FastdtmNode) -> str:
    """The server URL an application configures: the client token in the userinfo."""
    return with_token(node.dtm, CLIENT)


def base(node: FastdtmNode) -> str:
    """For the test's own /query polls (a client token may query one gid)."""
    return with_token(node.base, CLIENT)


def test_a_saga_through_a_token_in_the_server_url(node: FastdtmNode, dtm: str, busi: BusiServer) -> None:
    s = saga.Saga(dtm, utils.gen_gid(dtm))
    s.add(BODY, busi.url("/TransOut"), busi.url("/TransOutRevert"))
    s.add(BODY, busi.url("/TransIn"), busi.url("/TransInRevert"))
    s.submit()
    gid = s.trans_base.gid
    reply = wait_status(base(node), gid, {"succeed"})
    assert statuses(reply) == "psps"
    assert paths(busi, gid) == ["/TransOut", "/TransIn"]


def tcc_transfer(dtm: str, busi: BusiServer) -> str:
    def branches(t: tcc.Tcc) -> None:
        for name in ("TransOut", "TransIn"):
            t.call_branch(BODY, busi.url(f"/{name}Try"), busi.url(f"/{name}Confirm"), busi.url(f"/{name}Cancel"))

    gid: str = tcc.tcc_global_transaction(dtm, utils.gen_gid(dtm), branches)
    return gid


def test_a_tcc_through_a_token_in_the_server_url(node: FastdtmNode, dtm: str, busi: BusiServer) -> None:
    gid = tcc_transfer(dtm, busi)
    reply = wait_status(base(node), gid, {"succeed"})
    assert statuses(reply) == "psps"  # the cancel and confirm rows of two branches
    assert paths(busi, gid) == ["/TransOutTry", "/TransInTry", "/TransInConfirm", "/TransOutConfirm"]


def test_a_tcc_rollback_through_a_token(node: FastdtmNode, dtm: str, busi: BusiServer) -> None:
    busi.script("/TransInTry", [409])
    assert tcc_transfer(dtm, busi) == ""  # the SDK aborted (through the token too)
    [call] = busi.calls("/TransInTry")
    gid = call.query["gid"]
    wait_status(base(node), gid, {"failed"})
    assert paths(busi, gid) == ["/TransOutTry", "/TransInTry", "/TransInCancel", "/TransOutCancel"]


def test_the_sdk_without_a_token_is_refused_and_records_nothing(node: FastdtmNode, busi: BusiServer) -> None:
    # A plain error, not the SDK's DTMFailureError: a refusal is not the transaction's outcome.
    with pytest.raises(Exception, match="bad result"):
        utils.gen_gid(node.dtm)
    s = saga.Saga(with_token(node.dtm, "not-a-known-token-000"), "auth-sdk-refused")
    s.add(BODY, busi.url("/TransOut"), busi.url("/TransOutRevert"))
    with pytest.raises(Exception, match="bad result"):
        s.submit()
    assert query(with_token(node.base, OPERATOR), "auth-sdk-refused")["transaction"] is None
    assert busi.calls() == []


def test_requests_sends_the_userinfo_as_basic(node: FastdtmNode) -> None:
    """What the SDK relies on, checked directly: no Authorization header is added by hand anywhere."""
    reply = requests.get(with_token(node.dtm, CLIENT) + "/newGid", timeout=5)
    assert reply.status_code == 200
    assert reply.request.headers["Authorization"].startswith("Basic ")


def test_no_token_in_the_node_log(node: FastdtmNode) -> None:
    log = node.log_text()
    assert CLIENT not in log and OPERATOR not in log
