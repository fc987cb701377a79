from __future__ import annotations

# pytest imports tracemalloc lazily inside its unraisable-exception hook; if a
# garbage-collected client warns during that import, the hook re-enters the
# half-imported module and fails the test. Imported here, it is complete.
import tracemalloc  # noqa: F401

# Imported here, at the top of the stack: CPython 3.11.7 can fail with "AST constructor
# recursion depth mismatch" when pytest first imports hypothesis deep inside a test run.
import hypothesis  # noqa: F401
import pytest
import tornado.web

from collab import Config, Hub, make_app


@pytest.fixture
def config(tmp_path) -> Config:
    return Config(data_dir=str(tmp_path / "data"), idle_timeout=30.0, fsync="interval")


@pytest.fixture
def hub(config) -> Hub:
    return Hub(config)


@pytest.fixture
def app(config, hub) -> tornado.web.Application:
    return make_app(config, hub)


@pytest.fixture
def port(http_server, http_server_port) -> int:
    """The port of the live test server (requesting it starts the server)."""
    return http_server_port[1]


@pytest.fixture
def ws_url(port):
    def url(name: str) -> str:
        return f"ws://127.0.0.1:{port}/ws/{name}"

    return url
