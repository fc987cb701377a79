"""The xmlappend scenario of `make bench`: a typing run at the end of a ProseMirror paragraph.

No server and no socket: this process feeds one ``Room`` the updates of one
writer appending ``~S<n>;`` at the end of a Y.XmlText in a <paragraph> of the
``prosemirror`` Y.XmlFragment (as y-prosemirror stores it), one update a
keystroke, and times ``Room.receive`` (process CPU time) over the window of
updates just before the N-th append. Rows: the room with run breaking off
(``run_bound=0``: what every update cost before), the room as it is, and the
same run in the root Y.Text ``content`` for comparison.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the tests package

from collab.core import protocol
from collab.core.protocol import Update
from collab.core.room import Room
from tests.crdt import end_appends, xml_end_appends

Json = dict[str, Any]
WRITER = 3_000_000_000  # a client id like a real Yjs client's (random 32-bit)
VARIANTS = {
    "xml, runs not broken": ("xml", 0),
    "xml": ("xml", None),
    "content": ("content", None),
}
NOTE = (
    "in-process: Room.receive CPU per update over the window before the N-th append "
    "(median of 3 slices);\n'runs not broken' = run_bound=0, the cost before; breaks = "
    "tombstones the room added."
)


def run(q: bool) -> Json:
    points = [2500, 5000, 10000] if q else [5000, 20000, 40000]
    window, slices = (300, 3) if q else (1000, 3)
    chunks = [f"~S{i};" for i in range(points[-1])]
    head, xml_updates = xml_end_appends(chunks, WRITER)
    frames = {
        "xml": [protocol.encode(Update(u)) for u in [head, *xml_updates]],
        "content": [protocol.encode(Update(u)) for u in end_appends(chunks, WRITER)],
    }
    result: Json = {"points": points, "window": window, "rows": {}}
    for label, (kind, bound) in VARIANTS.items():
        room = Room("bench") if bound is None else Room("bench", run_bound=bound)
        peer = object()
        room.join(peer)
        updates = frames[kind]
        offset = len(updates) - len(chunks)  # the head creating the paragraph
        for frame in updates[:offset]:
            room.receive(peer, frame)
        marks = {p - window * (slices - k) for p in points for k in range(slices)}
        times: dict[int, list[float]] = {p: [] for p in points}
        breaks = 0
        i = 0
        while i < len(chunks):
            if i in marks:
                t0 = time.process_time()
                for frame in updates[offset + i : offset + i + window]:
                    breaks += len(room.receive(peer, frame).relay) - 1
                us = 1e6 * (time.process_time() - t0) / window
                times[min(p for p in points if p > i)].append(us)
                i += window
            else:
                breaks += len(room.receive(peer, updates[offset + i]).relay) - 1
                i += 1
        room.close()
        result["rows"][label] = {
            "us_per_update": {p: statistics.median(times[p]) for p in points},
            "breaks": breaks,
        }
    return result


def render(result: Json) -> tuple[list[str], list[list[Any]], str]:
    points: list[int] = result["points"]
    short = [f"{p // 1000}k" if p % 1000 == 0 else f"{p / 1000:g}k" for p in points]
    head = ["room", *(f"µs/upd @{s}" for s in short), f"{short[-1]}/{short[0]}", "breaks"]
    rows = []
    for label, row in result["rows"].items():
        us = [row["us_per_update"][p] for p in points]
        rows.append([label, *us, f"{us[-1] / us[0]:.2f}x" if us[0] else "-", row["breaks"]])
    return head, rows, NOTE


if __name__ == "__main__":  # python tests/bench/xml_append.py [--quick]
    figures = run("--quick" in sys.argv)
    head, rows, _ = render(figures)
    print(head)
    for r in rows:
        print(r)
