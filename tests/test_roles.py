"""Roles: the ``admin`` claim (``Permission.admin``) and the API calls that need it.

Destructive calls (``DELETE /api/docs/<name>``) need an admin token; with access
control off everyone is a local admin. The ro/rw/admin matrix runs every API
call against a live server.
"""

from __future__ import annotations

import json
import time

import jwt
import pytest
import tornado.web
from tornado.httpclient import AsyncHTTPClient, HTTPResponse

from collab import Config, Hub, Permission, Unauthorized, make_app, routes
from collab.core.auth import grant

SECRET = "role-secret-" * 4

ROLES = {
    "ro": {"mode": "ro"},
    "rw": {},
    "admin": {"admin": True},
}


def token(**claims: object) -> str:
    claims.setdefault("exp", time.time() + 60)
    return jwt.encode(claims, SECRET, algorithm="HS256")


# -- the claim (core.auth.grant) --------------------------------------------------------


def test_the_admin_claim() -> None:
    assert grant({"exp": 2000, "admin": True}, "x", 1000).admin is True
    assert grant({"exp": 2000}, "x", 1000).admin is False
    assert grant({"exp": 2000, "admin": False}, "x", 1000).admin is False
    for bad, why in (
        ({"admin": "yes"}, "admin must be true or false"),
        ({"admin": 1}, "admin must be true or false"),
        ({"admin": True, "mode": "ro"}, "cannot be read-only"),
        ({"mode": "admin"}, "mode must be"),  # the role is a claim of its own, not a mode
    ):
        with pytest.raises(Unauthorized, match=why):
            grant({"exp": 2000, **bad}, "x", 1000)


# -- every API call, per role, on a live server ------------------------------------------


@pytest.fixture
def config(tmp_path) -> Config:
    return Config(data_dir=str(tmp_path / "data"), jwt_secret=SECRET)


async def call(port: int, method: str, path: str, tok: str | None, body: str | None = None):
    headers = {"Authorization": f"Bearer {tok}"} if tok else {}
    return await AsyncHTTPClient().fetch(
        f"http://127.0.0.1:{port}/api/docs{path}",
        method=method,
        body=body,
        headers=headers,
        raise_error=False,
    )


def outcome(response: HTTPResponse) -> tuple[int, str]:
    return response.code, response.body.decode() if response.code >= 400 else ""


@pytest.mark.parametrize(
    ("role", "expected"),
    [
        (
            "ro",
            {
                "list": (200, ""),
                "get": (200, ""),
                "put": (403, "read-only token"),
                "delete": (403, "admin role required"),
            },
        ),
        (
            "rw",
            {
                "list": (200, ""),
                "get": (200, ""),
                "put": (204, ""),
                "delete": (403, "admin role required"),
            },
        ),
        (
            "admin",
            {"list": (200, ""), "get": (200, ""), "put": (204, ""), "delete": (204, "")},
        ),
        (
            None,  # no token at all
            {
                "list": (401, "missing token"),
                "get": (401, "missing token"),
                "put": (401, "missing token"),
                "delete": (401, "missing token"),
            },
        ),
    ],
)
async def test_every_api_call_per_role(port, role: str | None, expected) -> None:
    seed = token(admin=True)
    assert (await call(port, "PUT", "/doc/text", seed, "seeded")).code == 204
    tok = token(sub=role, **ROLES[role]) if role else None
    got = {
        "list": outcome(await call(port, "GET", "", tok)),
        "get": outcome(await call(port, "GET", "/doc/text", tok)),
        "put": outcome(await call(port, "PUT", "/doc/text", tok, f"by {role}")),
        "delete": outcome(await call(port, "DELETE", "/doc", tok)),
    }
    assert got == expected
    text = await call(port, "GET", "/doc/text", seed)
    deleted, written = expected["delete"][0] == 204, expected["put"][0] == 204
    if deleted:
        assert text.code == 404
    else:
        assert text.body.decode() == (f"by {role}" if written else "seeded")
    if role is not None:
        listed = json.loads((await call(port, "GET", "", tok)).body)
        assert [d["name"] for d in listed] == ([] if deleted else ["doc"])


async def test_an_admin_token_is_still_bound_to_its_documents(port) -> None:
    seed = token(admin=True)
    for name in ("team-a", "secret"):
        assert (await call(port, "PUT", f"/{name}/text", seed, name)).code == 204
    team_admin = token(admin=True, docs=["team-*"])
    assert outcome(await call(port, "DELETE", "/secret", team_admin)) == (
        403,
        "token does not grant this document",
    )
    assert (await call(port, "DELETE", "/team-a", team_admin)).code == 204
    assert (await call(port, "DELETE", "/team-a", team_admin)).code == 404


# -- without access control, and with an embedding hook ----------------------------------


@pytest.fixture
def app(request, config: Config, hub: Hub) -> tornado.web.Application:
    if "open_server" in request.fixturenames:
        return make_app(Config(data_dir=None), hub)
    if "host_app" in request.fixturenames:
        return tornado.web.Application(routes(hub, "/collab", host_authorize))
    return make_app(config, hub)


@pytest.fixture
def open_server() -> bool:
    return True


@pytest.fixture
def host_app() -> bool:
    return True


def host_authorize(request, name: str) -> Permission:
    return Permission(user="host", admin=request.headers.get("X-Role") == "admin")


async def test_without_access_control_everyone_may_delete(open_server, port) -> None:
    assert (await call(port, "PUT", "/doc/text", None, "x")).code == 204
    assert (await call(port, "DELETE", "/doc", None)).code == 204


async def test_an_embedding_hook_grants_the_role(host_app, port) -> None:
    async def host(method: str, path: str, role: str = "", body: str | None = None) -> int:
        response = await AsyncHTTPClient().fetch(
            f"http://127.0.0.1:{port}/collab/api/docs{path}",
            method=method,
            body=body,
            headers={"X-Role": role},
            raise_error=False,
        )
        return response.code

    assert await host("PUT", "/doc/text", body="x") == 204  # Permission() may write
    assert await host("DELETE", "/doc") == 403  # but not delete
    assert await host("DELETE", "/doc", role="admin") == 204
