"""``--log-format json`` (server/logfmt.py) and the audit trail (server/audit.py).

The live test starts the real CLI, makes it do the things an operator wants to
see in its log (WebSocket and API edits, refusals, a delete, a bad frame), stops
it, and parses every line of its output as JSON.
"""

from __future__ import annotations

import io
import json
import logging
import re
import sys
import threading
import time
import urllib.error
import urllib.request
from datetime import datetime, timedelta
from typing import Any

import jwt
import pytest
from tornado.httpclient import HTTPClientError, HTTPRequest
from tornado.websocket import websocket_connect

from collab import cli
from collab.server.logfmt import TEXT, BatchedStreamHandler, JsonFormatter, TextFormatter
from tests.server import ServerProcess
from tests.wait import eventually
from tests.yclient import YClient

SECRET = "log-secret-" * 4
SNAKE = re.compile(r"[a-z][a-z0-9_]*")


def token(**claims: Any) -> str:
    return jwt.encode({"exp": time.time() + 600, **claims}, SECRET, algorithm="HS256")


def record(message: str, *args: Any, **extra: Any) -> logging.LogRecord:
    rec = logging.LogRecord("collab.test", logging.WARNING, __file__, 1, message, args, None)
    rec.__dict__.update(extra)
    return rec


# -- the formatter alone --------------------------------------------------------------


def test_a_record_becomes_one_json_object() -> None:
    rec = record("closing %s on %r", "ann@1.2.3.4", "notes", event="connection_closed")
    rec.__dict__.update(connection="c7", document="notes", sub="ann", remote="1.2.3.4", code=1007)
    line = JsonFormatter().format(rec)
    assert "\n" not in line
    parsed = json.loads(line)
    assert parsed == {
        "time": parsed["time"],
        "level": "warning",
        "logger": "collab.test",
        "event": "connection_closed",
        "message": "closing ann@1.2.3.4 on 'notes'",
        "connection": "c7",
        "document": "notes",
        "sub": "ann",
        "remote": "1.2.3.4",
        "code": 1007,
    }
    when = datetime.fromisoformat(parsed["time"])
    assert when.utcoffset() == timedelta(0) and parsed["time"].endswith("Z")
    assert abs(when.timestamp() - rec.created) < 0.001


def test_tokens_are_hidden_and_anything_is_serializable() -> None:
    secret = "eyJhbGciOi.payload.signature"
    try:
        raise ValueError(f"failed on /ws/a?token={secret}")
    except ValueError:
        exc_info = sys.exc_info()
    rec = record("GET /ws/a?token=%s (1.2.3.4)", secret, path=f"/x?TOKEN={secret}", obj=object())
    rec.exc_info = exc_info
    rec.__dict__.update(nan=float("nan"), items=(1, "a?token=" + secret))
    for formatter in (JsonFormatter(), TextFormatter()):
        out = formatter.format(rec)
        assert secret not in out and "signature" not in out, out
    parsed = json.loads(JsonFormatter().format(rec))
    assert parsed["message"] == "GET /ws/a?token=*** (1.2.3.4)"
    assert parsed["event"] == "log"
    assert parsed["path"] == "/x?TOKEN=***" and parsed["items"] == [1, "a?token=***"]
    assert parsed["nan"] == "nan" and parsed["obj"].startswith("<object")
    assert "ValueError: failed on /ws/a?token=***" in parsed["exception"]


def test_the_format_is_an_option_with_a_variable(monkeypatch) -> None:
    def config(*argv: str) -> Any:
        return cli._config(cli._parser().parse_args(["serve", *argv]))

    assert config().log_format == "text"
    assert config("--log-format", "json").log_format == "json"
    monkeypatch.setenv("COLLAB_LOG_FORMAT", "json")
    assert config().log_format == "json"
    with pytest.raises(SystemExit, match="--log-format must be text or json"):
        config("--log-format", "xml")


# -- the real CLI ---------------------------------------------------------------------


def http(server: ServerProcess, method: str, path: str, tok: str, body: str | None = None) -> int:
    request = urllib.request.Request(
        server.url + path,
        data=body.encode() if body is not None else None,
        method=method,
        headers={"Authorization": f"Bearer {tok}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


async def test_json_logs_of_a_live_server(tmp_path) -> None:
    server = ServerProcess(tmp_path / "data", "--jwt-secret", SECRET, "--log-format", "json")
    ann, bob = token(sub="ann"), token(sub="bob")
    root, reader = token(sub="root", admin=True), token(sub="rita", mode="ro")
    tokens = [ann, bob, root, reader]
    with server:
        # A document created over a WebSocket (token in the query string).
        writer = await YClient(f"{server.ws}/ws%20doc?token={ann}").connect()
        writer.text += "hello"
        await writer.roundtrip()
        # One created by a PUT, replaced by another, refused a delete, then deleted.
        assert http(server, "PUT", "/api/docs/api-doc/text", bob, "one") == 204
        assert http(server, "PUT", "/api/docs/api-doc/text", bob, "two") == 204
        assert http(server, "DELETE", "/api/docs/api-doc", bob) == 403
        assert http(server, "PUT", "/api/docs/api-doc/text", reader, "no") == 403
        assert http(server, "DELETE", "/api/docs/api-doc", root) == 204
        assert server.get(f"/api/docs/ws%20doc/text?token={reader}") == (200, b"hello")
        # Refused before the upgrade, and closed after it (a text frame: 1003).
        with pytest.raises(HTTPClientError):
            await websocket_connect(HTTPRequest(f"{server.ws}/x?token=bad.to.ken"))
        ws = await websocket_connect(f"{server.ws}/ws%20doc?token={reader}")
        ws.write_message("text")
        await eventually(lambda: ws.close_code == 1003)
        ws.close()
        await writer.close()
        server.stop()

    lines = server.output().splitlines()
    assert len(lines) > 10
    logs = [json.loads(line) for line in lines]  # every line, or this fails
    for entry in logs:
        assert {"time", "level", "logger", "event", "message"} <= entry.keys(), entry
        assert datetime.fromisoformat(entry["time"]).utcoffset() == timedelta(0)
        assert entry["level"] in ("debug", "info", "warning", "error", "critical")
        assert SNAKE.fullmatch(entry["event"]), entry
    output = server.output()
    for tok in tokens:
        assert tok not in output and tok.split(".")[2] not in output

    audit = [
        (e["action"], e["document"], e["sub"], e["remote"]) for e in logs if e["event"] == "audit"
    ]
    assert audit == [
        ("create", "ws doc", "ann", "127.0.0.1"),
        ("create", "api-doc", "bob", "127.0.0.1"),
        ("put", "api-doc", "bob", "127.0.0.1"),
        ("put", "api-doc", "bob", "127.0.0.1"),
        ("delete", "api-doc", "root", "127.0.0.1"),
    ]
    created = next(e for e in logs if e["event"] == "audit")
    assert SNAKE.fullmatch(created["connection"]) and created["logger"] == "collab.audit"

    def one(event: str, **fields: Any) -> dict[str, Any]:
        found = [e for e in logs if e["event"] == event and fields.items() <= e.items()]
        assert len(found) == 1, (event, fields, [e for e in logs if e["event"] == event])
        return found[0]

    upgrade = one("request", status=101, sub="ann", document="ws doc")
    assert upgrade["path"] == "/ws/ws doc" or upgrade["path"] == "/ws/ws%20doc"
    assert upgrade["method"] == "GET" and upgrade["remote"] == "127.0.0.1"
    assert "token=***" in upgrade["message"] and upgrade["duration_ms"] >= 0
    assert one("request", status=204, method="DELETE", sub="root")["document"] == "api-doc"
    refused = one("api_refused", status=403, method="DELETE", sub="bob")
    assert (refused["reason"], refused["document"]) == ("admin role required", "api-doc")
    assert one("api_refused", status=403, sub="rita")["reason"] == "read-only token"
    assert one("connection_refused", status=401, document="x")["remote"] == "127.0.0.1"
    closed = one("connection_closed", code=1003, sub="rita", document="ws doc")
    assert closed["reason"] == "text frames not supported" and closed["connection"]
    assert closed["remote"] == "127.0.0.1" and closed["level"] == "warning"


class CountingStream(io.StringIO):
    """A stream that counts its writes."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


def batched(stream: CountingStream) -> logging.Logger:
    handler = BatchedStreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger(f"batched.{id(stream)}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.handlers = [handler]
    return logger


async def test_lines_of_one_loop_iteration_are_written_together_and_in_order() -> None:
    stream = CountingStream()
    logger = batched(stream)
    for n in range(5):
        logger.info("line %d", n)
    assert stream.getvalue() == ""  # not yet: the iteration is still running
    await eventually(lambda: stream.getvalue() != "")
    assert stream.getvalue() == "".join(f"line {n}\n" for n in range(5))
    assert stream.writes == 1
    logger.info("later")
    logger.handlers[0].flush()  # as logging.shutdown does at exit
    assert stream.getvalue().endswith("line 4\nlater\n")


def test_lines_logged_off_a_loop_are_written_at_once() -> None:
    stream = CountingStream()
    logger = batched(stream)
    worker = threading.Thread(target=logger.info, args=("from a thread",))
    worker.start()
    worker.join()
    logger.info("from no loop")
    assert stream.getvalue() == "from a thread\nfrom no loop\n"


def test_text_lines_carry_the_time_logging_would_give_them() -> None:
    ours, standard = TextFormatter(), logging.Formatter(TEXT)
    base = 1_780_000_000.0
    for created in (base + 0.001, base + 0.999, base + 1.0, base + 1.5, base + 61.25, base + 0.5):
        record = logging.LogRecord("collab", logging.INFO, __file__, 1, "hello", None, None)
        record.created, record.msecs = created, (created - int(created)) * 1000
        assert ours.format(record) == standard.format(record)
