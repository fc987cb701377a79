"""Another room while a large document loads or applies: its relay latency and the loop lag.

One collab process (pinned to the server core) holds a large document in its
data directory (a seeded mix of text, a map and an array, built once and
cached). A writer in another room sends a small update every 10 ms and a
reader there times each relay. Meanwhile, from another process: (1) a fresh
client opens the large document (a cold load from disk, then its whole sync
step 2), and (2) a client sends a large update to it. Printed: the other room's relay p50/p99/max in
each window (the last: until the compaction the update starts is written), the
server's ``collab_loop_lag_seconds`` count above 50 ms, and
how long the large step took. ``--json PATH`` writes the figures.

    python tests/bench/bigload.py [--mb 50] [--update-mb 20] [--json PATH] [--keep DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from pycrdt import Array, Doc, Map, Text
from websockets.asyncio.client import connect

from collab.core.protocol import encode_varuint

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peers import free_port, spawn, stop_all, terminate

HERE = Path(__file__).resolve().parent
CACHE = HERE / ".cache"
TICK = 0.01  # the other room's writer: one update every 10 ms
LIMIT_S = 120  # every wait is bounded


def message(sync_type: int, update: bytes) -> bytes:
    return bytes([0, sync_type]) + encode_varuint(len(update)) + update


def build(mb: int, seed: int, client_id: int) -> bytes:
    """A seeded document of about ``mb`` MB: text in many edits, a map, an array."""
    path = CACHE / f"bigdoc-{mb}-{seed}-{client_id}.bin"
    if path.exists():
        return path.read_bytes()
    rng = random.Random(seed)
    doc: Doc = Doc(client_id=client_id)
    text, meta, items = (
        doc.get(n, type=t) for n, t in (("content", Text), ("meta", Map), ("items", Array))
    )
    words = ["lorem", "ipsum", "dolor", "sit", "amet", "collab", "yjs", "crdt", "sync", "edit"]
    target = mb * 1_000_000
    size = 0
    with doc.transaction():
        while size < target * 0.9:  # (bounded: each chunk adds about 12 KB)
            chunk = " ".join(rng.choice(words) for _ in range(2000)) + "\n"
            text.insert(rng.randint(0, size), chunk)
            size += len(chunk)
        for i in range(20_000):
            meta[f"k{i}"] = rng.random()
    for k in range(200):  # (an extend by ints at once costs pycrdt GBs of memory)
        items.extend([f"item {k}.{i} {rng.random()}" for i in range(100)])
    update = doc.get_update()
    CACHE.mkdir(exist_ok=True)
    path.write_bytes(update)
    return update


def start(data_dir: Path, port: int, workdir: Path) -> subprocess.Popen[bytes]:
    cmd = ["taskset", "-c", "0", sys.executable, "-m", "collab", "serve", "--host", "127.0.0.1",
           "--port", str(port), "--data-dir", str(data_dir), "--no-history"]  # fmt: skip
    env = {**os.environ, "COLLAB_RATE_BYTES": "0", "COLLAB_RATE_MESSAGES": "0",
           "COLLAB_MAX_DOCUMENT_BYTES": str(512 << 20)}  # fmt: skip
    proc = spawn(cmd, env, workdir / f"collab-{port}.log")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1):
                return proc
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("collab did not start")


def metric(port: int, sample: str) -> float:
    """The value of one ``/metrics`` sample (0 if absent)."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    for line in text.splitlines():
        if line.startswith(sample + " "):
            return float(line.split()[-1])
    return 0.0


def lag_over(port: int, le: str = "0.05") -> tuple[float, float]:
    """(samples, samples over ``le`` seconds) of collab_loop_lag_seconds."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    total = within = 0.0
    for line in text.splitlines():
        if line.startswith("collab_loop_lag_seconds_count"):
            total = float(line.split()[-1])
        elif line.startswith(f'collab_loop_lag_seconds_bucket{{le="{le}"}}'):
            within = float(line.split()[-1])
    return total, total - within


async def synced(ws: Any) -> None:
    """Answer the server's step 1 with an empty step 2 and wait for its step 2 to ours."""
    await ws.send(message(0, b"\x00"))
    while True:
        data = await asyncio.wait_for(ws.recv(), LIMIT_S)
        if data[:2] == b"\x00\x01":
            return


class OtherRoom:
    """A writer and a reader in a small room: relay latency of each tick."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.latencies: list[tuple[float, float]] = []  # (sent at, latency)
        self.sent: dict[bytes, float] = {}
        self.stop = asyncio.Event()

    async def run(self) -> None:
        async with connect(self.url, max_size=None) as w, connect(self.url, max_size=None) as r:
            await synced(w)
            await synced(r)
            reader = asyncio.create_task(self._read(r))
            doc: Doc = Doc(client_id=77)
            text = doc.get("content", type=Text)
            i = 0
            while not self.stop.is_set():
                before = doc.get_state()
                marker = f"<{i}>"
                text += marker
                self.sent[marker.encode()] = time.perf_counter()
                await w.send(message(2, doc.get_update(before)))
                i += 1
                await asyncio.sleep(TICK)
            await asyncio.sleep(0.5)
            reader.cancel()

    async def _read(self, ws: Any) -> None:
        while True:
            data = await ws.recv()
            now = time.perf_counter()
            for marker, at in list(self.sent.items()):
                if marker in data:
                    self.latencies.append((at, now - at))
                    del self.sent[marker]

    def window(self, start: float, end: float) -> dict[str, float | int]:
        got = sorted(lat for at, lat in self.latencies if start <= at <= end)
        if not got:
            return {"n": 0}
        p = lambda q: got[min(len(got) - 1, int(q * len(got)))]  # noqa: E731
        return {"n": len(got), "p50_ms": p(0.5) * 1e3, "p99_ms": p(0.99) * 1e3,
                "max_ms": got[-1] * 1e3, "mean_ms": statistics.fmean(got) * 1e3}  # fmt: skip


async def scenario(mb: int, update_mb: int, workdir: Path) -> dict[str, Any]:
    big = build(mb, 1, 11)
    extra = build(update_mb, 2, 12)  # (cached for the client process)
    data_dir = workdir / "data"
    port = free_port()
    url = f"ws://127.0.0.1:{port}/ws"
    server = start(data_dir, port, workdir)
    try:  # store the large document, then restart so the next open is a cold load
        async with connect(f"{url}/big", max_size=None) as ws:
            await ws.send(message(1, big))
            await synced(ws)
    finally:
        terminate(server, grace=30)
    server = start(data_dir, port, workdir)
    out: dict[str, Any] = {"document_bytes": len(big), "update_bytes": len(extra)}
    try:
        other = OtherRoom(f"{url}/other")
        runner = asyncio.create_task(other.run())
        await asyncio.sleep(1.0)
        quiet = (time.perf_counter() - 1.0, time.perf_counter())
        lag0 = lag_over(port)
        snapshots = metric(port, 'collab_persist_seconds_count{operation="snapshot"}')
        t0, t1, t2 = await asyncio.to_thread(big_steps_apart, f"{url}/big", update_mb)
        deadline = time.monotonic() + LIMIT_S  # the update starts a compaction: until it is done
        while metric(port, 'collab_persist_seconds_count{operation="snapshot"}') <= snapshots:
            if time.monotonic() > deadline:
                raise RuntimeError("no compaction after the large update")
            await asyncio.sleep(0.05)
        t3 = time.perf_counter()
        await asyncio.sleep(0.5)
        lag1 = lag_over(port)
        other.stop.set()
        await runner
        out["quiet"] = other.window(*quiet)
        out["load_and_sync"] = {"seconds": t1 - t0, **other.window(t0, t1)}
        out["apply_and_sync"] = {"seconds": t2 - t1, **other.window(t1, t2)}
        out["compaction"] = {"seconds": t3 - t2, **other.window(t2, t3)}
        out["loop_lag_samples"] = lag1[0] - lag0[0]
        out["loop_lag_over_50ms"] = lag1[1] - lag0[1]
        out["server_rss_mb"] = _rss(server.pid) / 1e6
    finally:
        terminate(server, grace=10)
    return out


async def big_steps(url: str, update_mb: int) -> tuple[float, float, float]:
    """Open the large document (cold load, whole step 2), then send it a large update and
    wait until a second client's sync is answered: the (start, loaded, applied) times."""
    extra = build(update_mb, 2, 12)
    t0 = time.perf_counter()
    async with connect(url, max_size=None) as ws:
        await synced(ws)  # cold load + the whole step 2
        t1 = time.perf_counter()
        await ws.send(message(2, extra))  # a large update into the loaded document
        await asyncio.sleep(0)
        async with connect(url, max_size=None) as probe:  # answered once it is in
            await synced(probe)
        t2 = time.perf_counter()
    return t0, t1, t2


def _big_steps_child(url: str, update_mb: int, out: Any) -> None:
    _client_core()
    os.nice(10)  # the load: on the probe's core, it must not delay the probe's own timing
    try:
        out.put(asyncio.run(big_steps(url, update_mb)))
    except BaseException as exc:
        out.put(repr(exc))
        raise


def big_steps_apart(url: str, update_mb: int) -> tuple[float, float, float]:
    """``big_steps`` in a process of its own, at a lower priority: inflating and reading
    the large messages must not delay this process's timing of the other room (both
    run off the server's core; perf_counter is CLOCK_MONOTONIC, one clock for both)."""
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    child = ctx.Process(target=_big_steps_child, args=(url, update_mb, out), daemon=True)
    child.start()
    try:
        got = out.get(timeout=LIMIT_S)
        if isinstance(got, str):
            raise RuntimeError(f"the large document's client failed: {got}")
        times: tuple[float, float, float] = got
        return times
    finally:
        child.join(timeout=10)
        if child.is_alive():
            child.kill()


def _client_core() -> None:
    """Keep this process off the server's core (0), where the machine has another."""
    if (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {1})


def _rss(pid: int) -> int:
    import psutil

    return int(psutil.Process(pid).memory_info().rss)


def render(r: dict[str, Any]) -> str:
    rows = [("idle (1 s before)", r["quiet"], None), ("cold load + fresh sync", r["load_and_sync"],
            r["load_and_sync"]["seconds"]), ("large update applied", r["apply_and_sync"],
            r["apply_and_sync"]["seconds"]), ("then its compaction", r["compaction"],
            r["compaction"]["seconds"])]  # fmt: skip
    lines = [f"## another room while a {r['document_bytes'] / 1e6:.0f} MB document loads "
             f"and takes a {r['update_bytes'] / 1e6:.0f} MB update",
             "| window | big step s | other room relays | p50 ms | p99 ms | max ms |",
             "|---|---:|---:|---:|---:|---:|"]  # fmt: skip
    for label, w, secs in rows:
        cells = [f"{w.get(k, float('nan')):.1f}" for k in ("p50_ms", "p99_ms", "max_ms")]
        lines.append(
            f"| {label} | {'' if secs is None else f'{secs:.2f}'} | {w['n']} | "
            + " | ".join(cells)
            + " |"
        )
    lines.append(
        f"\nloop lag samples (every 250 ms) over 50 ms: {r['loop_lag_over_50ms']:.0f} "
        f"of {r['loop_lag_samples']:.0f}; server RSS {r['server_rss_mb']:.0f} MB"
    )
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mb", type=int, default=50)
    p.add_argument("--update-mb", type=int, default=20)
    p.add_argument("--json", metavar="PATH")
    p.add_argument("--keep", metavar="DIR", help="work in DIR and keep it (the server's log)")
    args = p.parse_args()
    _client_core()
    with tempfile.TemporaryDirectory(prefix="bigload-") as tmp:
        workdir = Path(args.keep or tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        try:
            result = asyncio.run(scenario(args.mb, args.update_mb, workdir))
        finally:
            stop_all()
    print(render(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
