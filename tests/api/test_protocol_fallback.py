"""A uvicorn whose internals moved costs fastdtm's protocol shortcut, never a node or `fastdtm --help`.

A missing internal is simulated three ways: an attribute deleted in-process, a module that no longer
exports a name (so importing fastdtm.api.protocol fails), and a `sitecustomize` that does either in the
processes a test starts. `scripts/test-uvicorn-range.sh` runs this file on the lowest and highest uvicorn
the pin allows.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import types
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from fastdtm.api.protocol_choice import FALLBACK, PROTOCOL, uvicorn_http
from tests.support.node import REPO_ROOT, FastdtmNode, NodeFactory, query

# Run at interpreter start by the processes a test starts with this directory on PYTHONPATH. Each takes away
# a name only fastdtm's protocol looks up, as a uvicorn that renamed it would: uvicorn itself still works.
SABOTAGE = {
    # FlowControl moved to another module: importing fastdtm.api.protocol fails.
    "moved": (
        "import uvicorn.protocols.http.httptools_impl\n"
        "import uvicorn.protocols.http.flow_control as flow\n"
        "del flow.FlowControl\n"
    ),
    # A method renamed: the start-up check finds it missing.
    "method": (
        "import uvicorn.protocols.http.httptools_impl as impl\n"
        "del impl.HttpToolsProtocol._unsupported_upgrade_warning\n"
    ),
}
WARNINGS = {
    "moved": "cannot import name 'FlowControl'",
    "method": "this uvicorn lacks HttpToolsProtocol._unsupported_upgrade_warning: serving every route through ASGI",
}


def sabotaged(tmp_path: Path, kind: str) -> dict[str, str]:
    """The environment of a process whose uvicorn lacks an internal (`kind` of SABOTAGE)."""
    (tmp_path / "sitecustomize.py").write_text(SABOTAGE[kind])
    paths = [str(tmp_path), str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]
    return {"PYTHONPATH": os.pathsep.join(filter(None, paths))}


def test_this_uvicorn_has_every_internal_the_protocol_uses() -> None:
    assert uvicorn_http() == PROTOCOL


@pytest.mark.parametrize(
    ("owner", "name"),
    [
        (HttpToolsProtocol, "_start_asgi_task"),
        (HttpToolsProtocol, "on_response_complete"),
        (RequestResponseCycle, "run_asgi"),
    ],
)
def test_a_missing_method_falls_back_to_asgi_with_a_warning(
    owner: type, name: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delattr(owner, name)
    with caplog.at_level(logging.WARNING, "fastdtm.api.protocol"):
        assert uvicorn_http() == FALLBACK
    assert f"{owner.__name__}.{name}" in caplog.text and "through ASGI" in caplog.text


def test_a_renamed_attribute_falls_back_to_asgi(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # An instance attribute, seen only in uvicorn's code: a rename there shows as a name missing from it.
    import fastdtm.api.protocol as protocol

    names = protocol._names
    monkeypatch.setattr(protocol, "_names", lambda cls: names(cls) - {"pipeline"})
    with caplog.at_level(logging.WARNING, "fastdtm.api.protocol"):
        assert uvicorn_http() == FALLBACK
    assert "HttpToolsProtocol.pipeline" in caplog.text


def test_a_name_gone_from_uvicorn_fails_no_import(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # fastdtm.api.protocol imports STATUS_LINE, HttpToolsProtocol, ... from this module: none is left.
    monkeypatch.setitem(sys.modules, "uvicorn.protocols.http.httptools_impl", types.ModuleType("httptools_impl"))
    monkeypatch.delitem(sys.modules, "fastdtm.api.protocol")
    with caplog.at_level(logging.WARNING, "fastdtm.api.protocol"):
        assert uvicorn_http() == FALLBACK
    assert "cannot import name" in caplog.text and "through ASGI" in caplog.text


@pytest.mark.parametrize("kind", sorted(SABOTAGE))
def test_fastdtm_help_works_whatever_uvicorn_moved(kind: str, tmp_path: Path) -> None:
    env = os.environ | sabotaged(tmp_path, kind)
    done = subprocess.run(
        [sys.executable, "-m", "fastdtm", "serve", "--help"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "--request-timeout" in done.stdout


@pytest.fixture(params=sorted(SABOTAGE))
def sabotaged_node(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, FastdtmNode]]:
    for name in ("site", "node"):
        (tmp_path / name).mkdir()
    factory = NodeFactory(lambda: tmp_path / "node")
    try:
        env = sabotaged(tmp_path / "site", request.param)
        yield request.param, factory(f"sqlite:///{tmp_path / 'fastdtm.db'}", env=env)
    finally:
        factory.stop_all()


def test_a_node_on_a_uvicorn_without_an_internal_serves_through_asgi(sabotaged_node: tuple[str, FastdtmNode]) -> None:
    kind, node = sabotaged_node
    gid = f"fallback-{uuid.uuid4().hex}"
    body = {"gid": gid, "trans_type": "saga", "steps": [{"action": "", "compensate": ""}], "payloads": [""]}
    reply = httpx.post(f"http://127.0.0.1:{node.port}/api/dtmsvr/submit", json=body, timeout=10)
    assert (reply.status_code, reply.json()) == (200, {"dtm_result": "SUCCESS"})
    assert query(node, gid)["transaction"]["gid"] == gid
    assert WARNINGS[kind] in node.log_text()
