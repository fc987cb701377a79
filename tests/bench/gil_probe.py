"""Does pycrdt release the GIL? A thread runs one pycrdt call; the main thread ticks.

The main thread sleeps 0.2 ms between ticks, so each tick needs the GIL back:
if the call releases it, ticks go on (gaps of about a ms); if it holds it, the
largest gap is as long as the call. Printed per call: its time and the largest
gap the main thread saw while it ran.

    python tests/bench/gil_probe.py [--mb 20]
"""

from __future__ import annotations

import argparse
import itertools
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pycrdt import Doc, merge_updates

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bigload import build

LIMIT_S = 60  # each probe's call is bounded by the document's size; this bounds the wait


def probe(label: str, call: Callable[[], Any]) -> tuple[str, float, float]:
    """(label, the call's ms, the largest ms the main thread could not tick meanwhile)."""
    span: dict[str, float] = {}

    def run() -> None:
        time.sleep(0.01)  # the main thread is ticking before the call starts
        span["start"] = time.perf_counter()
        call()
        span["end"] = time.perf_counter()

    worker = threading.Thread(target=run)
    worker.start()
    ticks = [time.perf_counter()]
    deadline = ticks[0] + LIMIT_S
    while worker.is_alive() and ticks[-1] < deadline:
        time.sleep(0.0002)
        ticks.append(time.perf_counter())
    worker.join(LIMIT_S)
    start, end = span["start"], span["end"]
    gaps = [b - a for a, b in itertools.pairwise(ticks) if b > start and a < end]
    return label, (end - start) * 1e3, max(gaps, default=0.0) * 1e3


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mb", type=int, default=20)
    args = p.parse_args()
    update = build(args.mb, 2, 12)  # bigload's seeded document (cached)
    loaded: Doc[Any] = Doc()
    loaded.apply_update(update)
    observed: Doc[Any] = Doc()
    observed.observe(lambda _event: None)
    rows = [
        probe("apply_update", lambda: Doc().apply_update(update)),
        probe("apply_update, observed", lambda: observed.apply_update(update)),
        probe("get_update", loaded.get_update),
        probe("merge_updates", lambda: merge_updates(update, update)),
    ]
    print(f"## pycrdt and the GIL: a {len(update) / 1e6:.0f} MB update, in a thread")
    print("| call | call ms | longest main-thread gap ms |")
    print("|---|---:|---:|")
    for label, call_ms, gap_ms in rows:
        print(f"| {label} | {call_ms:.1f} | {gap_ms:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
