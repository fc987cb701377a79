"""The history scenario of `make bench`: the large document with 100 versions.

Prepared offline (no server): the document's keystroke updates (gen.mjs build:
the automerge-paper trace, or the seeded synthetic fallback) are replayed into
pycrdt; at every 1 % a version (state + text) is written with the file history
store, and the final state becomes the document's snapshot. Then collab
serves that data directory (pinned to the server core) and this process, on
the generator core, times over HTTP: listing, one version's text, a diff
against the current text (JSON and unified), and restores (100 % -> 50 %,
then back), while two WebSocket clients in another room ping each other with
awareness messages every 10 ms: their relay latency while a restore runs,
against the same clients with nothing else going on.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import struct
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from websockets.sync.client import connect

from collab.core import protocol
from collab.core.history import VersionMeta
from collab.core.protocol import AwarenessEntry, AwarenessUpdate, SyncStep1
from collab.core.room import Room
from collab.storage.base import Record
from collab.storage.file import FileStore
from collab.storage.history_file import FileHistory

Json = dict[str, Any]
VERSIONS = 100


def read_updates(path: str) -> list[bytes]:
    data = Path(path).read_bytes()
    out, pos = [], 0
    while pos < len(data):
        (length,) = struct.unpack_from("<I", data, pos)
        out.append(data[pos + 4 : pos + 4 + length])
        pos += 4 + length
    return out


def prepare(data_dir: str, updates_path: str, name: str = "paper") -> Json:
    """Write the document and its 100 versions into ``data_dir`` (offline)."""
    updates = read_updates(updates_path)
    room = Room(name)
    history = FileHistory(data_dir)
    step = len(updates) // VERSIONS if len(updates) >= VERSIONS else 1
    started = time.perf_counter()

    async def write() -> int:
        stored = 0
        for i, update in enumerate(updates, 1):
            room.doc.apply_update(update)
            if i % step == 0 and i // step <= VERSIONS:
                now = 1.7e9 + i  # one version per 1 % of the keystrokes
                meta = VersionMeta(0, now, "quiet", None, now - 1, now, step, len(room.text))
                saved = await history.save(name, meta, room.doc.get_update(), room.text)
                stored += saved.stored_bytes
        await history.close()
        store = FileStore(data_dir)
        log = store.log(name)
        await log.load()
        state = room.doc.get_update()
        cursor = log.append(Record(state, time.time(), "bench"))  # as `collab import` does
        await log.flush(cursor)
        await log.compact(state, cursor)
        await log.close()
        await store.close()
        return stored

    stored = asyncio.run(write())
    return {
        "updates": len(updates),
        "versions": len(list((Path(data_dir) / "history" / name).glob("*.ver"))),
        "history_bytes": stored,
        "text_chars": len(room.text),
        "prepare_s": time.perf_counter() - started,
    }


def _http(method: str, url: str) -> tuple[float, bytes]:
    request = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    t0 = time.perf_counter()
    with urllib.request.urlopen(request, timeout=120) as response:
        body = response.read()
    return (time.perf_counter() - t0) * 1000, body


def _median(times: list[float]) -> Json:
    return {"p50": statistics.median(times), "max": max(times), "n": len(times)}


class Pinger:
    """Two clients in one room: A sends an awareness state carrying its send time every
    ``interval`` s; B records ``(received_at, latency_ms)`` for each."""

    def __init__(self, base: str, room: str = "other", interval: float = 0.01) -> None:
        self.url = f"{base}/ws/{room}"
        self.interval = interval
        self.samples: list[tuple[float, float]] = []
        self.stop = threading.Event()
        self.a = connect(self.url, max_size=None)
        self.b = connect(self.url, max_size=None)
        for ws in (self.a, self.b):
            ws.send(protocol.encode(SyncStep1(b"\x00")))
        self.threads = [threading.Thread(target=self._send), threading.Thread(target=self._recv)]
        for thread in self.threads:
            thread.start()

    def _send(self) -> None:
        clock = 0
        while not self.stop.is_set() and clock < 1_000_000:
            clock += 1
            state = json.dumps({"t": time.perf_counter()})
            entry = AwarenessEntry(77, clock, state)
            self.a.send(protocol.encode(AwarenessUpdate(protocol.encode_awareness([entry]))))
            self.stop.wait(self.interval)

    def _recv(self) -> None:
        while not self.stop.is_set():
            try:
                data = self.b.recv(timeout=0.5)
            except TimeoutError:
                continue
            except Exception:
                return
            now = time.perf_counter()
            if not isinstance(data, bytes):
                continue
            message = protocol.decode(data)
            if isinstance(message, AwarenessUpdate):
                for entry in protocol.decode_awareness(message.payload):
                    if entry.client_id == 77 and not entry.removed:
                        self.samples.append((now, (now - json.loads(entry.state)["t"]) * 1000))

    def between(self, start: float, end: float) -> Json:
        found = sorted(ms for t, ms in self.samples if start <= t <= end)
        if not found:
            return {}
        return {
            "n": len(found),
            "p50": found[len(found) // 2],
            "p99": found[min(len(found) - 1, int(len(found) * 0.99))],
            "max": found[-1],
        }

    def close(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(5)
        self.a.close()
        self.b.close()


def run(server_cls: Any, peer: Any, q: bool, workdir: Path, document: Json) -> Json:
    """The whole scenario against one collab configuration (a persistent one)."""
    data_dir = tempfile.mkdtemp(prefix="history-", dir=workdir)
    prepared = prepare(data_dir, document["updates"])
    result: Json = {"prepared": prepared}
    with server_cls(peer, workdir, data_dir) as server:
        http = f"http://127.0.0.1:{server.port}/api/docs/paper"
        cold, _ = _http("GET", f"{http}/versions?limit=100")
        lists = [_http("GET", f"{http}/versions?limit=100")[0] for _ in range(10 if q else 30)]
        result["list_ms"] = {**_median(lists), "first": cold}
        ids = [
            v["id"] for v in json.loads(_http("GET", f"{http}/versions?limit=100")[1])["versions"]
        ]
        texts = [_http("GET", f"{http}/versions/{i}/text")[0] for i in ids[:: 10 if q else 3]]
        result["text_ms"] = _median(texts)
        half = ids[len(ids) // 2]  # ~50 % of the keystrokes
        recent = ids[1]  # ~99 %
        result["diff_ms"] = {
            "99%->now json": _http("GET", f"{http}/versions/{recent}/diff")[0],
            "50%->now json": _http("GET", f"{http}/versions/{half}/diff")[0],
            "50%->now unified": _http("GET", f"{http}/versions/{half}/diff?format=unified")[0],
        }
        pinger = Pinger(server.base)
        try:
            time.sleep(1.0 if q else 3.0)  # the baseline: nothing else runs
            t0 = time.perf_counter()
            baseline = pinger.between(t0 - (1.0 if q else 3.0), t0)
            restore_ms, body = _http("POST", f"{http}/versions/{half}/restore")
            t1 = time.perf_counter()
            answer = json.loads(body)
            undo_ms, _ = _http("POST", f"{http}/versions/{answer['before']['id']}/restore")
            t2 = time.perf_counter()
            time.sleep(0.2)
            result["restore_ms"] = {"100%->50%": restore_ms, "50%->100% (undo)": undo_ms}
            result["other_room_ms"] = {
                "idle": baseline,
                "during restore": pinger.between(t0, t1),
                "during undo": pinger.between(t1, t2),
            }
            result["restored_chars"] = answer["version"]["chars"] if answer["version"] else None
        finally:
            pinger.close()
        result["server_rss"] = server.ps.memory_info().rss if server.ps else None
    return result


def render(result: Json) -> list[tuple[str, Any]]:
    """``(what, value)`` rows for the README table."""
    if "error" in result:
        return [("error", result["error"])]
    p = result["prepared"]
    rows: list[tuple[str, Any]] = [
        (
            "document",
            f"{p['updates']:,} keystrokes, {p['text_chars']:,} chars, {p['versions']} versions, "
            f"{p['history_bytes'] / 1e6:.2f} MB of history",
        ),
        (
            "list 100 versions (p50 / first)",
            f"{result['list_ms']['p50']:.1f} / {result['list_ms']['first']:.1f} ms",
        ),
        (
            "one version's text (p50 / max)",
            f"{result['text_ms']['p50']:.1f} / {result['text_ms']['max']:.1f} ms",
        ),
    ]
    rows += [(f"diff {k}", f"{v:.0f} ms") for k, v in result["diff_ms"].items()]
    rows += [(f"restore {k}", f"{v:.0f} ms") for k, v in result["restore_ms"].items()]
    for k, v in result["other_room_ms"].items():
        if v:
            rows.append(
                (
                    f"other room relay, {k} (p50 / p99 / max, n)",
                    f"{v['p50']:.1f} / {v['p99']:.1f} / {v['max']:.1f} ms, {v['n']}",
                )
            )
    return rows
