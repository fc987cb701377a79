"""Access control: JWT checks, refusals before the upgrade, read-only, expiry, origins."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time

import jwt
import pytest
import tornado.web
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest
from tornado.websocket import websocket_connect

from collab import Config, Forbidden, Hub, Permission, Unauthorized, make_app, routes
from collab.core import protocol
from collab.core.auth import allow_all, origin_allowed, redact, token_of
from collab.core.protocol import Auth, SyncStep1
from collab.server.tokens import JwtAuthorizer
from tests.jsclient import JS_DIR, STOCK_CLIENT, require_node
from tests.wait import eventually
from tests.yclient import YClient

SECRET = "s3cret-" * 10  # 70 bytes: long enough for HS512 too (the wrong-algorithm test)


def token(secret: str = SECRET, algorithm: str = "HS256", **claims: object) -> str:
    claims.setdefault("exp", time.time() + 60)
    return jwt.encode(claims, secret, algorithm=algorithm)


def unsigned_token(**claims: object) -> str:
    """A token with ``alg: none`` (no signature), as an attacker would forge it."""
    claims.setdefault("exp", time.time() + 60)

    def b64(obj: object) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    return f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims)}."


class FakeRequest:
    def __init__(self, header: str | None = None, query: str | None = None) -> None:
        self.headers = {"Authorization": header} if header else {}
        self.query_arguments = {"token": [query.encode()]} if query else {}


# -- the authorizer alone (no event loop) -------------------------------------------------


def test_valid_token_grants_its_documents_and_mode() -> None:
    auth = JwtAuthorizer(SECRET, clock=lambda: 1000.0)
    tok = token(exp=2000, sub="ann", docs=["team/*", "notes"], mode="ro")
    assert auth.check(tok, "team/plan") == Permission("ann", False, 2000.0)
    assert auth.check(tok, "notes").writable is False
    with pytest.raises(Forbidden):
        auth.check(tok, "other")
    full = auth.check(token(exp=2000), "anything")
    # No docs claim: every document, rw. No sub: an empty (but verified) one, so that
    # presence never shows a sub the client claimed for itself.
    assert full == Permission("", True, 2000.0)


@pytest.mark.parametrize(
    ("make", "why"),
    [
        (lambda: token(secret="another-secret-another-secret-12345"), "Signature"),
        (lambda: unsigned_token(), "alg value"),
        (lambda: token(algorithm="HS512"), "alg value"),
        (lambda: jwt.encode({"sub": "x"}, SECRET, algorithm="HS256"), "exp"),
        (lambda: token(exp=999), "expired"),
        (lambda: token(exp="2000"), "exp"),
        (lambda: token(exp=True), "exp"),
        (lambda: token(mode="admin"), "mode"),
        (lambda: token(docs="notes"), "docs"),
        (lambda: token(docs=[1]), "docs"),
        (lambda: token(nbf=time.time() + 3600), "not yet valid"),
        (lambda: token(aud="someone-else"), "audience"),
        (lambda: "not.a.jwt", "invalid token"),
        (lambda: "", "invalid token"),
    ],
)
def test_bad_tokens_are_unauthorized(make, why: str) -> None:
    auth = JwtAuthorizer(SECRET, clock=lambda: 1000.0)
    with pytest.raises(Unauthorized) as info:
        auth.check(make(), "notes")
    assert why.lower() in info.value.reason.lower()


def test_non_finite_expiry_is_refused() -> None:
    # PyJWT parses NaN and Infinity; a token must not live forever that way.
    header = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').rstrip(b"=")
    for exp in (b"Infinity", b"NaN"):
        body = base64.urlsafe_b64encode(b'{"exp":' + exp + b"}").rstrip(b"=")
        signing = header + b"." + body
        sig = jwt.get_algorithm_by_name("HS256").sign(signing, SECRET.encode())
        tok = (signing + b"." + base64.urlsafe_b64encode(sig).rstrip(b"=")).decode()
        with pytest.raises(Unauthorized):
            JwtAuthorizer(SECRET).check(tok, "notes")


def test_token_comes_from_bearer_header_or_query() -> None:
    assert token_of(FakeRequest(header="Bearer abc")) == "abc"
    assert token_of(FakeRequest(header="bearer  abc ", query="q")) == "abc"
    assert token_of(FakeRequest(query="q")) == "q"
    assert token_of(FakeRequest(header="Basic abc")) is None
    with pytest.raises(Unauthorized, match="missing"):
        JwtAuthorizer(SECRET)(FakeRequest(), "notes")


def test_short_secret_is_refused_and_tokens_are_redacted() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        JwtAuthorizer("short")
    assert redact("/ws/a?x=1&token=abc.def&y=2") == "/ws/a?x=1&token=***&y=2"
    assert redact("/ws/a?TOKEN=abc") == "/ws/a?TOKEN=***"
    assert redact("GET /ws/a?token=abc (1.2.3.4) 2ms") == "GET /ws/a?token=*** (1.2.3.4) 2ms"
    assert allow_all(None, "x") == Permission(admin=True)  # access control off: a local admin


def test_origin_rule() -> None:
    allowed = {"https://ok.example"}
    assert origin_allowed("https://ok.example", "collab.example", allowed)
    assert origin_allowed("https://OK.example/", "collab.example", allowed)
    assert origin_allowed("https://collab.example:8443", "collab.example:8443", ())  # same origin
    assert not origin_allowed("https://collab.example:9999", "collab.example:8443", ())
    for loopback in ("http://localhost:3000", "http://127.0.0.2", "http://[::1]:8080"):
        assert origin_allowed(loopback, "collab.example", ())
    for evil in ("https://evil.example", "null", "http://[::1", "", "https://ok.example.evil"):
        assert not origin_allowed(evil, "collab.example", allowed)
    assert origin_allowed("https://anything.example", None, {"*"})


# -- a live server with --jwt-secret ------------------------------------------------------


@pytest.fixture
def config(tmp_path) -> Config:
    return Config(
        data_dir=str(tmp_path / "data"), jwt_secret=SECRET, allow_origins=("https://ok.example",)
    )


async def refused(url: str, **headers: str) -> int:
    with pytest.raises(HTTPClientError) as info:
        await websocket_connect(HTTPRequest(url, headers=headers))
    return info.value.code


@pytest.mark.parametrize(
    ("make", "status", "why"),
    [
        (lambda: None, 401, "missing token"),
        (lambda: token(docs=["other"]), 403, "does not grant"),
        (lambda: token(exp=time.time() - 1), 401, "expired"),
        (lambda: token(secret="another-secret-another-secret-12345"), 401, "Signature"),
        (lambda: unsigned_token(), 401, "alg value"),
    ],
)
async def test_websocket_refused_before_upgrade(ws_url, port, caplog, make, status, why) -> None:
    tok = make()
    url = ws_url("notes") + (f"?token={tok}" if tok else "")
    with caplog.at_level(logging.INFO, logger="collab.handler"):
        assert await refused(url) == status
    assert any(why in r.getMessage() and "refused" in r.getMessage() for r in caplog.records)
    client = AsyncHTTPClient()
    response = await client.fetch(
        f"http://127.0.0.1:{port}/api/docs/notes/text",
        headers={"Authorization": f"Bearer {tok}"} if tok else {},
        raise_error=False,
    )
    assert response.code == status
    assert why in response.body.decode()
    if status == 401:
        assert response.headers["WWW-Authenticate"] == "Bearer"


async def test_token_in_header_or_query_opens_and_is_logged_redacted(ws_url, caplog) -> None:
    tok = token(sub="ann", docs=["notes"])
    with caplog.at_level(logging.INFO):
        by_query = await YClient(ws_url("notes") + f"?token={tok}").connect()
        bearer = {"Authorization": f"Bearer {tok}"}
        by_header = await YClient(ws_url("notes"), headers=bearer).connect()
        by_header.text += "x"  # ann may write
        await eventually(lambda: str(by_query.text) == "x")
        await by_header.close()
        await by_query.close()
    access = [r.getMessage() for r in caplog.records if r.name == "tornado.access"]
    assert any(line.startswith("101 GET /ws/notes?token=*** (") for line in access), access
    assert any(line.startswith("101 GET /ws/notes (") for line in access), access
    assert tok not in caplog.text and tok.split(".")[2] not in caplog.text


async def test_http_api_checks_documents_and_mode(port) -> None:
    client = AsyncHTTPClient()
    base = f"http://127.0.0.1:{port}/api/docs"

    async def call(method: str, path: str, tok: str, body: str | None = None):
        return await client.fetch(
            base + path,
            method=method,
            body=body,
            headers={"Authorization": f"Bearer {tok}"},
            raise_error=False,
        )

    rw = token(docs=["team-*"])
    assert (await call("PUT", "/team-a/text", rw, "A")).code == 204
    assert (await call("PUT", "/secret/text", token(), "S")).code == 204
    assert (await call("PUT", "/team-a/text", token(mode="ro"), "B")).code == 403
    assert (await call("DELETE", "/team-a", token(mode="ro"))).code == 403
    assert (await call("GET", "/team-a/text", token(mode="ro"))).body == b"A"
    assert (await call("GET", "/secret/text", rw)).code == 403
    listed = json.loads((await call("GET", "", rw)).body)
    assert [d["name"] for d in listed] == ["team-a"]  # only what the token grants
    assert (await call("GET", "", "garbage")).code == 401


async def test_read_only_writes_are_dropped_while_awareness_flows(ws_url, port) -> None:
    writer = await YClient(ws_url("notes") + f"?token={token(sub='w')}", client_id=1).connect()
    reader = await YClient(
        ws_url("notes") + f"?token={token(sub='r', mode='ro')}", client_id=2
    ).connect()
    writer.text += "written"
    await eventually(lambda: str(reader.text) == "written")  # ro receives everything

    reader.text += " by a reader"  # sent as an update, dropped by the server
    reader.set_awareness(2, 1, '{"user":{"name":"Rita"}}')  # after it, on the same socket
    # Relayed, with the token's sub added by the server: who it is, verified.
    await eventually(lambda: writer.present().get(2) == '{"user":{"name":"Rita","sub":"r"}}')
    assert str(writer.text) == "written"
    response = await AsyncHTTPClient().fetch(
        f"http://127.0.0.1:{port}/api/docs/notes/text",
        headers={"Authorization": f"Bearer {token()}"},
    )
    assert response.body == b"written"
    assert reader.close_code is None and writer.close_code is None
    await reader.close()
    await writer.close()


async def test_expiry_while_connected_closes_4401_with_auth_message(ws_url, caplog) -> None:
    tok = token(sub="brief", exp=time.time() + 1.0)
    client = await YClient(ws_url("notes") + f"?token={tok}").connect()
    await client.closed.wait()
    assert (client.close_code, client.close_reason) == (4401, "token expired")
    assert protocol.decode(client.received[-1]) == Auth("token expired")
    assert any(
        "brief@127.0.0.1" in r.getMessage() and "(4401)" in r.getMessage() for r in caplog.records
    )


async def test_origins(ws_url) -> None:
    url = ws_url("notes") + f"?token={token()}"
    assert await refused(url, Origin="https://evil.example") == 403
    assert await refused(url, Origin="http://[::1") == 403  # malformed: refused, not a 500
    for origin in ("https://ok.example", "http://localhost:3000", "http://127.0.0.1:8080"):
        ws = await websocket_connect(HTTPRequest(url, headers={"Origin": origin}))
        assert isinstance(protocol.decode(await ws.read_message()), SyncStep1), origin  # joined
        ws.close()


# -- the embedding hook --------------------------------------------------------------------


async def host_authorize(request, name: str) -> Permission:
    """A host application's own login, as an async hook."""
    if request.headers.get("X-User") != "host-user":
        raise Unauthorized("not logged in to the host app")
    if name.startswith("private"):
        raise Forbidden("not yours")
    if name == "broken":
        return None  # type: ignore[return-value]  # a buggy hook
    return Permission(user="host-user", writable=not name.startswith("ro"))


@pytest.fixture
def embedded() -> bool:
    return True


@pytest.fixture
def app(request, config: Config, hub: Hub) -> tornado.web.Application:
    if "embedded" in request.fixturenames:
        return tornado.web.Application(routes(hub, "/collab", host_authorize))
    return make_app(config, hub)


async def test_a_hook_returning_no_permission_is_an_error_not_an_opening(
    embedded, port, caplog
) -> None:
    url = f"ws://127.0.0.1:{port}/collab/ws/broken"
    assert await refused(url, **{"X-User": "host-user"}) == 500
    assert "authorize() returned None, not a Permission" in caplog.text  # with the traceback


async def test_async_authorize_hook_decides_who_may_do_what(embedded, port, caplog) -> None:
    base, host = f"ws://127.0.0.1:{port}/collab", {"X-User": "host-user"}
    with caplog.at_level(logging.INFO, logger="collab.handler"):
        assert await refused(f"{base}/ws/doc") == 401
        assert await refused(f"{base}/ws/private", **host) == 403
    refusals = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert any("not logged in to the host app" in line for line in refusals), refusals
    assert any("not yours" in line for line in refusals), refusals

    writer = await YClient(f"{base}/ws/rw%20doc", headers=host).connect()
    writer.text += "written"
    await writer.roundtrip()
    assert str((await YClient(f"{base}/ws/rw%20doc", headers=host).connect()).text) == "written"

    reader = await YClient(f"{base}/ws/ro%20doc", headers=host).connect()
    reader.text += "dropped"  # the hook granted read-only: the server ignores it
    await reader.roundtrip()
    assert str((await YClient(f"{base}/ws/ro%20doc", headers=host).connect()).text) == ""
    response = await AsyncHTTPClient().fetch(
        f"http://127.0.0.1:{port}/collab/api/docs/ro%20doc/text",
        method="PUT",
        body="x",
        headers=host,
        raise_error=False,
    )
    assert response.code == 403

    assert reader.ws is not None and reader.close_code is None
    reader.ws.write_message(b"\x07", binary=True)  # unknown message type: closed, and logged
    await asyncio.wait_for(reader.closed.wait(), 10)
    assert reader.close_code == 1007
    assert any("host-user@127.0.0.1" in r.getMessage() for r in caplog.records), "the hook's user"


# -- a stock y-websocket client (Node) -----------------------------------------------------


async def test_stock_client_syncs_with_a_token_and_hears_why_it_expired(port) -> None:
    node = require_node()
    client = AsyncHTTPClient()
    await client.fetch(
        f"http://127.0.0.1:{port}/api/docs/notes/text",
        method="PUT",
        body="hello",
        headers={"Authorization": f"Bearer {token()}"},
    )
    tok = token(sub="node", docs=["notes"], exp=time.time() + 2)
    proc = await asyncio.create_subprocess_exec(
        node,
        "--input-type=module",
        "-e",
        STOCK_CLIENT,
        f"ws://127.0.0.1:{port}/ws",
        "notes",
        tok,
        cwd=JS_DIR,
        stdout=asyncio.subprocess.PIPE,
    )
    events = []
    try:
        assert proc.stdout is not None
        while line := await asyncio.wait_for(proc.stdout.readline(), 20):
            events.append(json.loads(line))
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
    assert proc.returncode == 0, "the stock client crashed"
    assert events[0] == {"event": "synced", "text": "hello"}
    assert events[1]["event"] == "warn" and "Permission denied" in events[1]["text"]
    assert "token expired" in events[1]["text"]
    assert events[2] == {"event": "close", "code": 4401, "reason": "token expired"}
