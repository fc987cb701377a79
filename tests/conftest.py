from __future__ import annotations

# pytest imports tracemalloc lazily inside its unraisable-exception hook; if a
# garbage-collected client warns during that import, the hook re-enters the
# half-imported module and fails the test. Imported here, it is complete.
import tracemalloc  # noqa: F401
import uuid
from collections.abc import Iterator
from typing import Any

# Imported here, at the top of the stack: CPython 3.11.7 can fail with "AST constructor
# recursion depth mismatch" when pytest first imports hypothesis deep inside a test run.
import hypothesis  # noqa: F401
import pytest
import tornado.httpserver
import tornado.ioloop
import tornado.web

from collab import Config, Hub, make_app
from tests.redis_server import RedisServer, require_redis


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium for one test module (skips on a laptop without it; fails in CI)."""
    from tests.browser import launch_chromium, sync_playwright

    with sync_playwright() as playwright:
        chromium = launch_chromium(playwright)
        yield chromium
        chromium.close()


@pytest.fixture
def config(tmp_path) -> Config:
    return Config(data_dir=str(tmp_path / "data"), idle_timeout=30.0, fsync="interval")


_HUB = pytest.StashKey[Hub]()


@pytest.fixture
def hub(request: pytest.FixtureRequest, config, io_loop: tornado.ioloop.IOLoop) -> Iterator[Hub]:
    """The server's hub, closed on the test's loop afterwards (documents flushed)."""
    hub = request.node.stash[_HUB] = Hub(config)
    yield hub
    io_loop.run_sync(hub.close, timeout=15)


def hubs_of(app: tornado.web.Application) -> set[Hub]:
    """The hubs an application's routes serve (``make_app``'s own, or a host's)."""
    rules = app.wildcard_router.rules
    return {hub for rule in rules if isinstance(hub := (rule.target_kwargs or {}).get("hub"), Hub)}


@pytest.fixture
def app(config, hub) -> tornado.web.Application:
    return make_app(config, hub)


@pytest.fixture
def http_server(
    request: pytest.FixtureRequest,
    http_server: tornado.httpserver.HTTPServer,
    io_loop: tornado.ioloop.IOLoop,
) -> Iterator[tornado.httpserver.HTTPServer]:
    """pytest-tornasync's server, shut down afterwards as ``collab serve`` does.

    The hub it serves (``make_app``'s, or the ``hub`` fixture's under a host
    app's routes) is closed and the WebSockets finish their closing handshake,
    so no socket is left for the garbage collector to find open.
    """
    yield http_server
    app = http_server.request_callback
    hubs = {*hubs_of(app), request.node.stash.get(_HUB, None)} - {None}

    async def shut_down() -> None:
        for hub in hubs:
            await hub.close(timeout=5)  # and its WebSockets finish their closing handshake

    io_loop.run_sync(shut_down, timeout=15)


@pytest.fixture
def port(http_server, http_server_port) -> int:
    """The port of the live test server (requesting it starts the server)."""
    return http_server_port[1]


@pytest.fixture
def ws_url(port):
    def url(name: str) -> str:
        return f"ws://127.0.0.1:{port}/ws/{name}"

    return url


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One real redis-server for the session; tests keep apart by key prefix."""
    require_redis()
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
def redis_prefix(request: pytest.FixtureRequest) -> str:
    """A key prefix of this test's own."""
    return "t" + uuid.uuid4().hex[:12]
