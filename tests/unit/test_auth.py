"""The token file, the credential an Authorization header carries, and the role every route asks for."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from starlette.routing import BaseRoute, Mount, Route

from fastdtm.api import jsonrpc
from fastdtm.api.gate import Gate
from fastdtm.app import create_app
from fastdtm.auth import ROUTES, RPC_METHODS, Access, AuthFileError, Role, Tokens, credential, grants, route_access
from fastdtm.config import Settings

CLIENT = "c" * 16 + "-client"
OPERATOR = "o" * 16 + "-operator"


def basic(user: str, password: str) -> bytes:
    return b"Basic " + base64.b64encode(f"{user}:{password}".encode())


def test_a_file_of_token_role_lines_with_comments_and_blank_lines() -> None:
    tokens = Tokens.parse(f"# who may call\n\n{CLIENT} client\n   {OPERATOR}\toperator  \n", "t")
    assert tokens.role_of(CLIENT.encode()) is Role.CLIENT
    assert tokens.role_of(OPERATOR.encode()) is Role.OPERATOR
    assert tokens.role_of(b"x" * 16) is None
    assert tokens.role_of(CLIENT.encode()[:-1]) is None
    assert tokens.summary() == "2 tokens (1 operator)"


@pytest.mark.parametrize(
    ("text", "error"),
    [
        (f"{CLIENT} client\n{OPERATOR}\n", "line 2: expected `token role`, found 1 fields"),
        (f"{CLIENT} client extra\n", "line 1: expected `token role`, found 3 fields"),
        (f"\n{CLIENT} admin\n", "line 2: unknown role 'admin' (roles: client, operator)"),
        ("short-token client\n", "line 1: a token is 16 to 256 letters, digits and - . _ ~"),
        (f"{CLIENT}:x client\n", "line 1: a token is 16 to 256"),
        (f"{CLIENT} client\n# again\n{CLIENT} operator\n", "line 3: the same token as line 1"),
        ("# nothing\n\n", "no `token role` line"),
    ],
)
def test_a_bad_file_names_the_line_never_the_token(text: str, error: str) -> None:
    with pytest.raises(AuthFileError) as raised:
        Tokens.parse(text, "tokens.txt")
    message = str(raised.value)
    assert error in message
    assert message.startswith("auth file tokens.txt")
    assert CLIENT not in message and OPERATOR not in message


def test_a_file_that_cannot_be_read(tmp_path: Path) -> None:
    with pytest.raises(AuthFileError, match="cannot be read"):
        Tokens.read(str(tmp_path / "missing"))
    with pytest.raises(AuthFileError, match="cannot be read"):
        Gate(str(tmp_path))  # a directory


@pytest.mark.parametrize(
    ("header", "token"),
    [
        (f"Bearer {CLIENT}".encode(), CLIENT.encode()),
        (f"bearer   {CLIENT} ".encode(), CLIENT.encode()),
        (basic("app", CLIENT), CLIENT.encode()),
        (basic("", CLIENT), CLIENT.encode()),
        (basic("app", "a:b"), b"a:b"),  # the password is all after the first colon
        (basic(CLIENT, ""), None),  # the token goes in the password, not the user name
        (b"Basic " + base64.b64encode(CLIENT.encode()), None),  # no colon
        (b"Basic !!!", None),
        (b"Bearer", None),
        (b"Bearer ", None),
        (f"Token {CLIENT}".encode(), None),
        (CLIENT.encode(), None),
    ],
)
def test_the_credential_of_an_authorization_header(header: bytes, token: bytes | None) -> None:
    assert credential(header) == token


def test_roles() -> None:
    assert grants(Role.OPERATOR, Role.OPERATOR) and grants(Role.OPERATOR, Role.CLIENT)
    assert grants(Role.CLIENT, Role.CLIENT) and not grants(Role.CLIENT, Role.OPERATOR)
    assert route_access("/api/metrics", metrics_auth=False) is Access.OPEN
    assert route_access("/api/metrics", metrics_auth=True) is Access.OPERATOR


def _paths(routes: list[BaseRoute], mounted_at: str = "") -> set[str]:
    found: set[str] = set()
    for route in routes:
        if isinstance(route, Mount):
            found |= _paths(route.routes, mounted_at + route.path)
        elif isinstance(route, Route):
            found.add(mounted_at + route.path)
    return found


def test_every_route_of_the_app_has_a_role_and_every_role_a_route() -> None:
    app = create_app(Settings())
    assert _paths(app.app.routes) == set(ROUTES)  # type: ignore[attr-defined]
    assert set(jsonrpc.METHODS) == set(RPC_METHODS)


def test_a_route_without_a_role_is_refused_at_start() -> None:
    async def endpoint(request: object) -> None:
        raise AssertionError

    with pytest.raises(KeyError, match="/api/dtmsvr/newThing"):
        Gate().guard_routes([Mount("/api/dtmsvr", routes=[Route("/newThing", endpoint)])])
