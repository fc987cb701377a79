"""Document names never reach outside the data directory, however they are spelled."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tornado.websocket import websocket_connect

from collab import Config
from collab.core import names, protocol
from collab.core.errors import BadName
from collab.core.protocol import Update
from tests.crdt import valid_update

_STEM = re.compile(r"^(?:[A-Za-z0-9_-]|%[0-9A-F]{2})+$|^~h[0-9a-f]{64}$")
_FILE = re.compile(r"^(?P<stem>[^.]+)\.(?:snap|\d+\.log)(?:\.corrupt)?$")

EVIL = [
    "..",
    ".",
    "...",
    "../escape",
    "../../etc/passwd",
    "/abs/path",
    "a/../../b",
    "..\\..\\windows",
    "%2e%2e",
    "%2e%2e%2fescape",
    "%252e%252e",
    "~",
    "~root/.ssh",
    ".hidden",
    "trailing.",
    "nul",
    "CON",
    "*",
    "[a-z]?",
    "\u2024\u2024",  # one-dot leaders
    "\uff0e\uff0e",  # full-width full stops
    "x" * 200,
    "é" * 100,
]
INVALID = ["", "a\x00b", "\x00", "x" * 201, "é" * 101, "tab\there", "\x7f", "line\nbreak"]


@settings(max_examples=300, deadline=None, database=None)
@given(st.text(min_size=1, max_size=220))
def test_every_valid_name_becomes_one_safe_file_name(name: str) -> None:
    try:
        names.validate(name)
    except BadName:
        return
    stem = names.to_stem(name)
    assert _STEM.match(stem) and "." not in stem and len(stem) <= 180
    root = Path("/data")
    assert (root / f"{stem}.snap").resolve().parent == root
    assert names.from_stem(stem) in (name, None)  # None only for hashed long names


@pytest.mark.parametrize("name", INVALID)
def test_invalid_names_are_refused(name: str) -> None:
    with pytest.raises(BadName):
        names.validate(name)


@pytest.fixture
def config(tmp_path) -> Config:
    return Config(data_dir=str(tmp_path / "data"), fsync="always")


async def http(port: int, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
    """One request with the path sent exactly as given (no client-side normalising)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    response = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    head, _, payload = response.partition(b"\r\n\r\n")
    return int(head.split()[1]), payload


def snapshot(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


async def test_traversal_attempts_stay_in_the_data_dir(tmp_path: Path, port: int, hub) -> None:
    outside = tmp_path.parent
    before = snapshot(outside) - {p for p in snapshot(outside) if p.startswith(tmp_path.name)}
    (tmp_path / "victim.snap").write_bytes(b"not a document")  # a file a name could aim at

    for name in EVIL:
        status, _ = await http(port, "PUT", f"/api/docs/{quote(name, safe='')}/text", name.encode())
        assert status == 204, name
        status, body = await http(port, "GET", f"/api/docs/{quote(name, safe='')}/text")
        assert (status, body.decode()) == (200, name)
    for name in INVALID[1:]:  # (the empty name cannot be spelled in this route)
        status, _ = await http(port, "PUT", f"/api/docs/{quote(name, safe='')}/text", b"x")
        assert status == 400, name

    raw_paths = [
        "/api/docs/../../raw-escape/text",
        "/api/docs/..%2f..%2fraw-escape2/text",
        "/api/docs/%2e%2e/%2e%2e/raw-escape3/text",
        "/api/docs//tmp/raw-abs/text",
        "/api/docs/..%5c..%5craw-escape4/text",
    ]
    for path in raw_paths:
        status, _ = await http(port, "PUT", path, b"raw")
        assert status == 204, path
    status, _ = await http(port, "DELETE", "/api/docs/..%2fvictim")
    assert status == 404  # no such document: the file outside is not it

    for path in ("/ws/../../ws-escape", "/ws/%2e%2e%2f%2e%2e%2fws-escape2", "/ws//abs-ws"):
        ws = await websocket_connect(f"ws://127.0.0.1:{port}{path}")
        ws.write_message(protocol.encode(Update(valid_update("via ws"))), binary=True)
        await ws.read_message()  # sync step 1: the document is open
        ws.close()

    await hub.close()  # flush everything to disk
    data = tmp_path / "data"
    history = data / "history"  # versions: history/<stem>/index and NNNNNN.ver, nothing else
    for path in history.rglob("*"):
        if path.parent == history:
            assert path.is_dir() and _STEM.match(path.name), path
        else:
            assert path.parent.parent == history, path
            assert path.name == "index" or re.fullmatch(r"\d{6}\.ver", path.name), path
    assert {p.parent.name for p in history.glob("*/*.ver")}  # the names made versions too
    for path in data.rglob("*"):
        if path == history or history in path.parents:
            continue
        assert path.parent == data, path  # no other subdirectories
        if path.name != ".lock":
            match = _FILE.match(path.name)
            assert match and _STEM.match(match["stem"]), path.name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "victim.snap"]
    assert (tmp_path / "victim.snap").read_bytes() == b"not a document"
    after = snapshot(outside) - {p for p in snapshot(outside) if p.startswith(tmp_path.name)}
    assert after == before
    assert not Path("/abs").exists() and not Path("/tmp/raw-abs").exists()

    listed = {d.name for d in await hub.list()}
    assert set(EVIL) <= listed
    assert {"../../raw-escape", "../../ws-escape", "/abs-ws"} <= listed
    status, body = await http(port, "GET", "/api/docs")
    assert status == 200 and {d["name"] for d in json.loads(body)} == listed  # names as given
