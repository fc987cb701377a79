"""Micro-benchmark of the disk layer's hot path (issue 14 part 2): run under the bench lock.

    flock /work/bench.lock .venv/bin/python tests/bench/disk_micro.py [--quick]

1. ``append``: CPU per ``FileLog.append`` of a 40-byte update on the event
   loop (``--fsync interval``: one ``os.write`` each), against what one
   ``os.write`` per event-loop iteration of 16 records would cost (the frames
   encoded and joined, written once): the most batching could save.
2. new documents with ``--fsync always``: N documents created at once, each
   appends one record and waits until it is durable (what relaying its first
   update waits for); wall time, fsyncs and directory fsyncs counted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from collab.storage import disk  # noqa: E402
from collab.storage import file as file_store  # noqa: E402
from collab.storage import records as fmt  # noqa: E402
from collab.storage.base import Record  # noqa: E402
from collab.storage.file import FileStore  # noqa: E402


def update(i: int) -> bytes:
    return b"\x01\x01\xa4\x9c\x9d\x05" + f"{i:034d}".encode()  # 40 bytes, like one keystroke


async def append_cost(n: int) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        store = FileStore(tmp, fsync="interval", fsync_interval=3600)
        log = store.log("doc")
        await log.load()
        log.append(Record(update(0), 0.0, "a"))
        t = time.process_time()
        for i in range(n):
            log.append(Record(update(i), 0.0, "a"))
        each = (time.process_time() - t) / n
        file = log._files[-1]
        t = time.process_time()
        for i in range(0, n, 16):
            frames = [fmt.encode_record(Record(update(j), 0.0, "a")) for j in range(i, i + 16)]
            disk.write_whole(file, b"".join(frames))
        batched = (time.process_time() - t) / n
        await store.close()
    return each * 1e6, batched * 1e6


async def new_documents(count: int) -> dict[str, float]:
    calls = {"fsync": 0, "dir": 0}  # os.fsync calls (directories too), directory fsyncs
    real_fsync, real_dir = os.fsync, disk.fsync_dir

    def counting_fsync(fd: int) -> None:
        calls["fsync"] += 1
        real_fsync(fd)

    def counting_dir(path: Path) -> None:
        calls["dir"] += 1
        real_dir(path)

    before = getattr(file_store, "fsync_dir", None)  # where the store calls it from, if there
    os.fsync, disk.fsync_dir = counting_fsync, counting_dir  # type: ignore[assignment]
    if before is not None:
        file_store.fsync_dir = counting_dir  # type: ignore[attr-defined]
    try:
        with tempfile.TemporaryDirectory(dir=ROOT) as tmp:  # the real disk, not a tmpfs
            store = FileStore(tmp, fsync="always")
            logs = [store.log(f"doc-{i}") for i in range(count)]
            await asyncio.gather(*(log.load() for log in logs))
            calls.update(fsync=0, dir=0)
            t = time.perf_counter()

            async def first(log) -> None:
                cursor = log.append(Record(update(0), 0.0, "a"))
                await log.flush(cursor)

            await asyncio.gather(*(first(log) for log in logs))
            wall = time.perf_counter() - t
            found = dict(calls)
            await store.close()
    finally:
        os.fsync, disk.fsync_dir = real_fsync, real_dir  # type: ignore[assignment]
        if before is not None:
            file_store.fsync_dir = before  # type: ignore[attr-defined]
    return {"wall_ms": wall * 1000, **found}


async def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    ns = parser.parse_args(argv)
    n = 2_000 if ns.quick else 100_000
    each, batched = min([await append_cost(n) for _ in range(3)])
    print(f"append: {each:.2f} us CPU per record, one os.write each ({n} records, best of 3)")
    print(f"        {batched:.2f} us CPU per record if 16 records were written with one os.write")
    for count in (1, 20, 200):
        runs = [await new_documents(count) for _ in range(3)]
        best = min(runs, key=lambda r: r["wall_ms"])
        print(f"new documents, fsync always: {count:>3} at once: first record durable after "
              f"{best['wall_ms']:.1f} ms (best of 3), {best['fsync']:g} fsyncs, "
              f"{best['dir']:g} directory fsyncs")  # fmt: skip


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
