#!/usr/bin/env python3
"""`make bench`: collab side by side with pycrdt-websocket, the Yjs reference server and a relay.

Each server runs pinned to core 0; the Node load generator (gen.mjs) runs pinned
to core 1 and prints ``MARK`` lines at which this script samples the CPU time
and RSS of both processes (psutil), so every figure comes with the CPU that
produced it. Loopback only; every step is bounded in count and time; every
server started is stopped, on errors and Ctrl-C too.

    python tests/bench/run.py [--quick] [--json PATH] [--scenarios a,b] [--peers x,y]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))

import history_bench
import xml_append
from peers import GEN_CORE, HERE, NODE, PEERS, ROOT, Server, spawn, stop_all, terminate

TRACE = ROOT.parent / "shared" / "data" / "automerge-paper.ascii.json.gz"
CACHE = HERE / ".cache"
SATURATED = 90.0  # % of one core: the generator is the bottleneck, not the server
COMPARED = ["collab", "collab-mem", "pycrdt-ws", "yjs-ref", "relay"]
DURABILITY = ["collab-always", "collab", "collab-never", "collab-mem"]
SCENARIOS = [
    "fanout", "throughput", "connections", "largedoc", "durability", "history", "bigdocs"
]  # fmt: skip

Json = dict[str, Any]

NOTES = {
    "fanout": "µs/deliv = server CPU time / messages delivered to subscribers; "
    "x collab compares µs/deliv.",
    "throughput": "1x10: 1 room, 1 writer, 10 subscribers; 200x2: 200 rooms, 2 writers each "
    "(each update reaches the other).\n'next step' = the first rate that failed, and why; "
    "x collab compares max upd/s.",
    "connections": "sync = connect start to step 2 received (relay: to open); "
    "50 handshakes in flight (burst: all at once).",
    "largedoc": "cold = collab restarted on a data dir holding the document, first connect to "
    "step 2 received (the others\nrun without persistence); fresh sync = median time for a new "
    "client to sync the loaded document;\nreplay = every keystroke sent at full speed by one "
    "client, rate at which a second client received them.",
}


# -- the generator --------------------------------------------------------------------------


class Sample:
    def __init__(self, server: Server | None, gen: psutil.Process) -> None:
        self.t = time.monotonic()
        self.server_cpu = self.server_rss = 0.0
        if server is not None and server.ps is not None:
            t = server.ps.cpu_times()
            self.server_cpu = t.user + t.system
            self.server_rss = float(server.ps.memory_info().rss)
        self.server_ns = _task_ns(server.ps.pid) if server is not None and server.ps else None
        try:
            g = gen.cpu_times()
            self.gen_cpu = g.user + g.system
        except psutil.Error:
            self.gen_cpu = 0.0


def _task_ns(pid: int) -> int | None:
    """CPU time of every thread of ``pid`` in ns (/proc/PID/task/*/schedstat), or None.

    psutil's CPU times tick at 10 ms, too coarse for a window of 1,000 updates at ~10 µs each.
    A thread that exits between two samples takes its time with it (the servers' threads live
    as long as they do)."""
    try:
        total = 0
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        return total
    except (OSError, ValueError, IndexError):
        return None


def _add_cpu(result: Json, samples: dict[str, Sample]) -> None:
    """Give every step its CPU window and the server's CPU µs per delivered message."""
    for step in result["steps"]:
        step.update(window(samples, step["label"]))
        if step.get("delivered"):
            step["us_per_msg"] = 1e6 * step["server_cpu_s"] / step["delivered"]


def window(samples: dict[str, Sample], label: str) -> Json:
    """CPU use of server and generator between ``label:start`` and ``label:end``."""
    a, b = samples.get(f"{label}:start"), samples.get(f"{label}:end")
    if a is None or b is None:
        return {}
    wall = max(b.t - a.t, 1e-9)
    gen_pct = 100 * (b.gen_cpu - a.gen_cpu) / wall
    return {
        "wall_s": wall,
        "server_cpu_s": b.server_cpu - a.server_cpu,
        "server_cpu_pct": 100 * (b.server_cpu - a.server_cpu) / wall,
        "gen_cpu_pct": gen_pct,
        "gen_saturated": gen_pct >= SATURATED,
        "server_rss": b.server_rss,
    }


def generate(
    spec: Json, server: Server | None, workdir: Path, limit_s: float
) -> tuple[Json, dict[str, Sample]]:
    """Run gen.mjs on ``spec`` pinned to the generator core; sample at each MARK."""
    spec = {**spec, "limit_s": limit_s}
    if server is not None:
        spec.setdefault("base", server.base)
        spec.setdefault("crdt", server.peer.crdt)
    path = workdir / f"spec-{spec['scenario']}.json"
    path.write_text(json.dumps(spec))
    cmd = ["taskset", "-c", GEN_CORE, NODE, str(HERE / "gen.mjs"), str(path)]
    proc = spawn(cmd, None, workdir / "gen.log", stdout=subprocess.PIPE)
    gen = psutil.Process(proc.pid)
    timer = threading.Timer(limit_s + 30, proc.kill)
    timer.start()
    samples: dict[str, Sample] = {}
    result: Json | None = None
    try:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            if line.startswith("MARK "):
                samples[line[5:]] = Sample(server, gen)
            elif line.startswith("RESULT "):
                result = json.loads(line[7:])
        proc.wait()
    finally:
        timer.cancel()
        terminate(proc, grace=2)
    if result is None:
        tail = (workdir / "gen.log").read_text(errors="replace").splitlines()[-10:]
        raise RuntimeError(f"generator failed ({spec['scenario']}): " + " | ".join(tail))
    return result, samples


# -- scenarios ----------------------------------------------------------------------------------


def fanout(server: Server, q: bool, workdir: Path) -> Json:
    subs = [10, 100] if q else [10, 100, 500, 1000]
    spec = {
        "scenario": "fanout",
        "subs": subs,
        "rate": 20,
        "seconds": 3 if q else 10,
        "drain_ms": 2000,
    }
    result, samples = generate(spec, server, workdir, 240 if q else 600)
    _add_cpu(result, samples)
    return result


def _throughput(
    server: Server,
    q: bool,
    workdir: Path,
    layout: str,
    resolution: float = 1.2,
    writer: str = "jump",
) -> Json:
    """Highest passing rate, bisected until the first failing rate is within ``resolution``."""
    one_room = layout in ("1x10", "1x10-end")
    spec = {
        "scenario": "throughput",
        "label": f"tp-{layout}",
        "layout": {"rooms": 1, "writers_per_room": 1, "subs_per_room": 10}
        if one_room
        else {"rooms": 200, "writers_per_room": 2, "subs_per_room": 0},
        "start_rate": 250 if one_room else 400,
        "min_rate": 25,
        "seconds": 1.5 if q else 3,
        "drain_ms": 2000,
        "p99_limit_ms": 100,
        "max_steps": 4 if q else 9 + round(math.log(1.2 / resolution, 1.02)),
        "budget_s": (30 if q else 100) * (1.2 / resolution) ** 4,
        "retries": 2,
        "resolution": resolution,
        "writer": writer,
    }
    result, samples = generate(spec, server, workdir, 120 if q else 400)
    _add_cpu(result, samples)
    best = [s for s in result["steps"] if s.get("pass")]
    result["best"] = max(best, key=lambda s: s["rate"]) if best else None
    return result


LAYOUTS = ["1x10", "1x10-end", "200x2"]  # --layouts picks some


def throughput(server: Server, q: bool, workdir: Path) -> Json:
    out = {}
    for layout in LAYOUTS:
        writer = "end" if layout.endswith("-end") else "jump"
        out[layout] = _throughput(server, q, workdir, layout, writer=writer)
    return out


def connections(server: Server, q: bool, workdir: Path) -> Json:
    spec = {
        "scenario": "connections",
        "counts": [300] if q else [1000, 5000],
        "per_room": 10,
        "concurrency": 50,
        "settle_ms": 2000,
        "burst": 100 if q else 300,
        "burst_timeout_ms": 10000,
    }
    result, samples = generate(spec, server, workdir, 240 if q else 600)
    for step in result["steps"]:
        a, b = samples.get(f"{step['label']}:before"), samples.get(f"{step['label']}:after")
        if a and b and step["n"] - step["failed"] > 0:
            step["rss_per_conn"] = (b.server_rss - a.server_rss) / (step["n"] - step["failed"])
            step["server_rss"] = b.server_rss
    return result


def bigdocs(server: Server, q: bool, workdir: Path) -> Json:
    """Fresh sync of 1, 10 and 50 MB documents (seeded, gen.mjs ``bigDocument``), and RSS."""
    spec = {"scenario": "bigdocs", "sizes": [1 << 20, 10 << 20] if q else [1_000_000,
            10_000_000, 50_000_000], "syncs": 3}  # fmt: skip
    result, samples = generate(spec, server, workdir, 300 if q else 900)
    for step in result["steps"]:
        for when in ("loaded", "synced"):
            sample = samples.get(f"{step['label']}:{when}")
            if sample is not None:
                step[f"rss_{when}"] = sample.server_rss
    return result


def _bigdocs_table(results: Json, peers: list[str]) -> str:
    rows = []
    label = {k: PEERS[k].label for k in PEERS}
    by = {k: {s["label"]: s for s in r.get("steps", [])} for k, r in results["bigdocs"].items()}
    labels = sorted({x for k in by for x in by[k]}, key=lambda x: int(x.split("-")[1]))
    for lab in labels:
        base = by.get("collab", {}).get(lab, {}).get("plain_ms", {}).get("p50")
        for key in [k for k in peers if k in by]:
            step = by[key].get(lab)
            if step is None:
                continue
            plain, deflate = step.get("plain_ms", {}), step.get("deflate_ms", {})
            note = step.get("error") or ""
            held = step.get("step2_bytes")
            if held is not None and held < step["doc_bytes"] // 2:
                note = f"step 2 of {held} B: not held"  # the upload was dropped
            mb = lambda v: None if v is None else v / 1e6  # noqa: E731
            rows.append([
                f"{step['size'] / 1e6:g} MB", label[key], step.get("doc_bytes"),
                step.get("upload_s"), plain.get("p50"), ratio(plain.get("p50"), base),
                deflate.get("p50"), "yes" if step.get("deflate_negotiated") else "no",
                mb(step.get("rss_loaded")), mb(step.get("rss_synced")),
                note[:40],
            ])  # fmt: skip
    return table(
        "(h) big documents: a fresh client's sync (median of 3), plain and with "
        "permessage-deflate offered",
        ["size", "server", "doc B", "upload s", "plain ms", "x collab", "deflate ms",
         "negotiated", "RSS MB loaded", "RSS MB synced", "note"],
        rows,
        "a sync = connect until the step 2 arrived and all received was applied to a Y.Doc "
        "(its text checked);\nplain = the client offers no compression; deflate = it offers "
        "permessage-deflate (as stock clients do);\nRSS after the upload, and after the six "
        "fresh syncs.",
    )  # fmt: skip


def build_document(q: bool, workdir: Path) -> Json:
    """The automerge-paper document and its keystrokes as Yjs updates (cached)."""
    CACHE.mkdir(exist_ok=True)
    stem = "automerge-paper" if TRACE.exists() else "synthetic"
    doc, updates, meta = (CACHE / f"{stem}.{ext}" for ext in ("doc", "updates", "json"))
    if not (doc.exists() and updates.exists() and meta.exists()):
        spec = {
            "scenario": "build",
            "trace": str(TRACE),
            "synthetic_ops": 260_000,
            "doc_out": str(doc),
            "updates_out": str(updates),
        }
        result, _ = generate(spec, None, workdir, 300)
        meta.write_text(json.dumps(result))
    return {"doc": str(doc), "updates": str(updates), **json.loads(meta.read_text())}


def largedoc(server: Server, q: bool, workdir: Path, document: Json) -> Json:
    spec = {
        "scenario": "largedoc",
        "doc": document["doc"],
        "updates": document["updates"],
        "syncs": 3 if q else 5,
        "window": 1000,
        "replay_seconds": 5 if q else 30,
    }
    result, samples = generate(spec, server, workdir, 180 if q else 400)
    loaded = samples.get("largedoc:loaded")
    if loaded is not None and result.get("fresh"):
        result["server_rss"] = loaded.server_rss
        result["doc_rss"] = loaded.server_rss - server.startup_rss
    result["replay"].update(window(samples, "replay"))
    if server.peer.kind == "collab" and server.peer.persistent:
        result["cold"] = cold_load(server, q, workdir, document)
    return result


def cold_load(server: Server, q: bool, workdir: Path, document: Json) -> Json:
    """Restart collab on a data dir holding the document; time first connect → step 2."""
    data_dir = tempfile.mkdtemp(prefix="cold-", dir=workdir)
    with Server(server.peer, workdir, data_dir) as prep:
        generate(
            {"scenario": "prepare", "doc": document["doc"], "room": "paper"}, prep, workdir, 120
        )
    times, step2 = [], 0
    for _ in range(1 if q else 3):
        with Server(server.peer, workdir, data_dir) as cold:
            result, _ = generate({"scenario": "coldsync", "room": "paper"}, cold, workdir, 120)
            times.append(result["ms"])
            step2 = result["step2_bytes"]
    times.sort()
    disk = sum(p.stat().st_size for p in Path(data_dir).iterdir() if p.is_file())
    return {"ms": times[len(times) // 2], "all_ms": times, "step2_bytes": step2, "disk_bytes": disk}


def durability(server: Server, q: bool, workdir: Path) -> Json:
    # Finer than the throughput scenario: the target (always within 15 % of
    # memory) is smaller than its 1.2x steps.
    return {"1x10": _throughput(server, q, workdir, "1x10", resolution=1.05)}


# -- append: one long typing run at the end (issue 14) ------------------------------------------

SCENARIOS.append("append")
NOTES["throughput"] += (
    "\n1x10-end: as 1x10, but the writer appends at the end without moving its cursor "
    "(one run growing to rate x seconds)."
)
NOTES["append"] = (
    "one writer (random 32-bit client id) appends ~S<n>; at the end, never moving its cursor; "
    "1 subscriber.\nµs/upd @N = server CPU / updates in the window of updates just before the "
    "N-th append (median of 5 slices,\neach taken once every earlier update was received); "
    "last/first = flatness (target ≤ 1.5x).\npaste = a new writer pastes the chars as one insert "
    "(paste ms = server CPU for it), then appends\nkeystrokes after it (µs/key, median slice)."
)


SCENARIOS.append("xmlappend")  # in this process, no server (xml_append.py)


def append(server: Server, q: bool, workdir: Path) -> Json:
    """Server CPU per update at growing lengths of one end-appended run, and after a paste."""
    spec = {
        "scenario": "append",
        "rate": 1000,
        "points": [2500, 5000, 10000] if q else [5000, 20000, 40000],
        "window": 500 if q else 1000,
        "max_in_flight": 2000,
        "drain_ms": 30000,
        "paste_chars": 200_000,
        "keystrokes": 500 if q else 2000,
        "slices": 5,
        "budget_s": 90 if q else 240,
    }
    result, samples = generate(spec, server, workdir, spec["budget_s"] + 60)
    for step in result["steps"]:
        step.update(window(samples, step["label"]))
        a, b = samples.get(f"{step['label']}:start"), samples.get(f"{step['label']}:end")
        if a and b and a.server_ns is not None and b.server_ns is not None:
            step["server_cpu_s_psutil"] = step.get("server_cpu_s")
            step["server_cpu_s"] = (b.server_ns - a.server_ns) / 1e9  # ns resolution
            step["server_cpu_pct"] = 100 * step["server_cpu_s"] / step["wall_s"]
        if step.get("count") and "server_cpu_s" in step:
            step["us_per_update"] = 1e6 * step["server_cpu_s"] / step["count"]
    result["slices"] = result.get("steps", [])
    result["steps"] = _join_slices(result["slices"])
    runs = [s for s in result["steps"] if s["label"].startswith("append-")]
    first, last = (runs[0], runs[-1]) if runs else ({}, {})
    result["points"] = result.get("points") or spec["points"]
    result["flatness"] = (
        last["us_per_update"] / first["us_per_update"]
        if len(runs) == len(spec["points"]) and first.get("us_per_update")
        else None
    )
    return result


def _join_slices(slices: list[Json]) -> list[Json]:
    """One step per window from its slices (``label/k``): µs/update is the median slice's."""
    groups: dict[str, list[Json]] = {}
    for s in slices:
        groups.setdefault(s["label"].split("/")[0], []).append(s)
    steps = []
    for label, group in groups.items():
        us = sorted(s["us_per_update"] for s in group if s.get("us_per_update") is not None)
        lat = sorted((s.get("latency_ms") or {}).get("p99") or 0.0 for s in group if s.get("count"))
        count = sum(s.get("count", 0) for s in group)
        cpu = sum(s.get("server_cpu_s", 0.0) for s in group)
        steps.append(
            {
                "label": label,
                "slices": len(group),
                "count": count,
                "delivered": sum(s.get("delivered", 0) for s in group),
                "lost": sum(s.get("lost", 0) for s in group),
                "drained_before": all(s.get("drained_before") for s in group),
                "complete": all(s.get("complete") for s in group),
                "server_cpu_s": cpu,
                "us_per_update": us[(len(us) - 1) // 2] if us else None,  # median slice
                "us_per_update_all": 1e6 * cpu / count if count else None,
                "us_per_update_slices": us,
                "latency_ms": {"p99": lat[-1] if lat else None},  # worst slice's p99
                "gen_cpu_pct": max((s.get("gen_cpu_pct", 0.0) for s in group), default=0.0),
                "gen_saturated": any(s.get("gen_saturated") for s in group),
                "server_cpu_pct": max((s.get("server_cpu_pct", 0.0) for s in group), default=0.0),
            }
        )
    return steps


def _append_tables(results: Json, peers: list[str]) -> str:
    label = {k: PEERS[k].label for k in PEERS}
    res = results["append"]
    points: list[int] = next((r["points"] for r in res.values() if r.get("points")), [])
    rows = []
    for k in peers:
        r = res.get(k)
        if r is None:
            continue
        by = {s["label"]: s for s in r.get("steps", [])}
        at = [by.get(f"append-{n}", {}) for n in points]
        paste, keys = by.get("paste-insert", {}), by.get("paste-keys", {})
        steps = list(by.values())
        timed = [s for s in steps if s.get("count", 0) >= 100]  # not the one-update paste window
        rows.append(
            [
                label[k],
                *(s.get("us_per_update") for s in at),
                f"{r['flatness']:.2f}x" if r.get("flatness") else "-",
                (at[-1].get("latency_ms") or {}).get("p99") if at else None,
                1e3 * paste["server_cpu_s"] if "server_cpu_s" in paste else None,
                keys.get("us_per_update"),
                sum(s.get("lost", 0) for s in steps),
                max((s.get("gen_cpu_pct", 0) for s in timed), default=None),
                r.get("error", "")[:40]
                or ", ".join(
                    x
                    for x in (
                        "" if r.get("complete") else "incomplete",
                        "backlog" if any(not s.get("drained_before") for s in steps) else "",
                        *sorted({_flag(s) for s in timed} - {""}),
                    )
                    if x
                ),
            ]
        )
    short = [f"{n // 1000}k" if n % 1000 == 0 else f"{n / 1000:g}k" for n in points]
    head = [f"µs/upd @{n}" for n in short]
    rate = next((r.get("rate") for r in res.values() if r.get("rate")), None)
    chars = next((r.get("paste_chars") for r in res.values() if r.get("paste_chars")), None)
    out = [
        table(
            f"(h) append: one writer appending at the end at {fmt(rate)} updates/s, "
            f"1 subscriber; then a {fmt(chars)}-char paste",
            [
                "server",
                *head,
                f"{short[-1]}/{short[0]}" if short else "last/first",
                f"p99 ms @{short[-1]}" if short else "p99 ms",
                "paste ms",
                "µs/key",
                "lost",
                "gen CPU %",
                "note",
            ],
            rows,
            NOTES["append"],
        )
    ]
    tp = results.get("throughput", {})
    ref = ((tp.get("yjs-ref") or {}).get("1x10-end", {}).get("best") or {}).get("rate")
    rows = []
    for k in peers:
        r = res.get(k)
        end = (tp.get(k) or {}).get("1x10-end")
        if r is None and end is None:
            continue
        rate = ((end or {}).get("best") or {}).get("rate")
        flat = (r or {}).get("flatness")
        rows.append(
            [
                label[k],
                f"{flat:.2f}x" if flat else "-",
                "yes" if flat is not None and flat <= 1.5 else "no",
                rate,
                ratio(rate, ref),
                "yes" if rate is not None and ref and rate >= ref else "no" if ref else "-",
            ]
        )
    out.append(
        table(
            "(h) issue 14 targets: flat appends, 1x10-end rate against the Yjs reference server",
            [
                "server",
                "append last/first",
                "≤ 1.5x",
                "1x10-end max upd/s",
                "x yjs-ref",
                "≥ yjs-ref",
            ],
            rows,
        )
    )
    return "\n".join(out)


# -- tables --------------------------------------------------------------------------------


def fmt(v: Any, digits: int = 1) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else ""
    if isinstance(v, float):
        if abs(v) >= 100:
            return f"{v:,.0f}"
        return f"{v:.{digits}f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def _just(value: Any, cell: str, width: int) -> str:
    text = isinstance(value, str) and not value.endswith("x") and value != "-"
    return cell.ljust(width) if text else cell.rjust(width)


def ratio(v: float | None, base: float | None) -> str:
    if v is None or not base:
        return "-"
    return f"{v / base:.2f}x"


def table(title: str, headers: list[str], rows: list[list[Any]], note: str = "") -> str:
    cells = [[fmt(c) for c in row] for row in rows]
    widths = [
        max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)
    ]
    line = "  ".join("-" * w for w in widths)
    out = [
        f"\n## {title}",
        "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip(),
        line,
    ]
    for row, r in zip(rows, cells, strict=True):
        out.append(
            "  ".join(_just(v, c, w) for v, c, w in zip(row, r, widths, strict=True)).rstrip()
        )
    if note:
        out.append(note)
    return "\n".join(out)


def _flag(step: Json) -> str:
    flags = []
    if step.get("gen_saturated"):
        flags.append("GEN SATURATED")
    if step.get("server_cpu_pct", 0) >= SATURATED:
        flags.append("server saturated")
    if step.get("error"):
        flags.append(str(step["error"])[:40])
    return ", ".join(flags)


def render(results: Json, peers: list[str]) -> str:
    out = []
    label = {k: PEERS[k].label for k in PEERS}
    if "fanout" in results:
        rows = []
        by = {
            k: {s["subs_per_room"]: s for s in results["fanout"][k]["steps"]}
            for k in results["fanout"]
        }
        sizes = sorted({n for k in by for n in by[k]})
        for n in sizes:
            base = by.get("collab", {}).get(n, {}).get("us_per_msg")
            for k in peers:
                s = by.get(k, {}).get(n)
                if s is None:
                    continue
                lat = s.get("latency_ms", {})
                rows.append(
                    [
                        n,
                        label[k],
                        lat.get("p50"),
                        lat.get("p99"),
                        s.get("lost"),
                        s.get("server_cpu_pct"),
                        s.get("us_per_msg"),
                        ratio(s.get("us_per_msg"), base),
                        s.get("gen_cpu_pct"),
                        _flag(s),
                    ]
                )
        out.append(
            table(
                "(a) fan-out: 1 writer at 20 updates/s, N subscribers in one room",
                [
                    "subs",
                    "server",
                    "p50 ms",
                    "p99 ms",
                    "lost",
                    "srv CPU %",
                    "µs/deliv",
                    "x collab",
                    "gen CPU %",
                    "note",
                ],
                rows,
                NOTES["fanout"],
            )
        )
    if "throughput" in results:
        rows = []
        for layout in ("1x10", "1x10-end", "200x2"):
            base = (
                (results["throughput"].get("collab") or {}).get(layout, {}).get("best") or {}
            ).get("rate")
            for k in peers:
                r = (results["throughput"].get(k) or {}).get(layout)
                if r is None:
                    continue
                rows.append(_tp_row(layout, label[k], r, base))
        out.append(
            table(
                "(b) throughput: highest rate with p99 ≤ 100 ms and nothing lost (rate stepped up)",
                [
                    "layout",
                    "server",
                    "max upd/s",
                    "deliv/s",
                    "p99 ms",
                    "srv CPU %",
                    "µs/deliv",
                    "x collab",
                    "gen CPU %",
                    "next step",
                    "note",
                ],
                rows,
                NOTES["throughput"],
            )
        )
    if "connections" in results:
        rows = []
        by = {
            k: {s["label"]: s for s in results["connections"][k]["steps"]}
            for k in results["connections"]
        }
        for lab in sorted(
            {x for k in by for x in by[k]}, key=lambda x: (x.startswith("burst"), len(x), x)
        ):
            base = by.get("collab", {}).get(lab, {}).get("rss_per_conn")
            for k in peers:
                s = by.get(k, {}).get(lab)
                if s is None:
                    continue
                hs = s.get("handshake_sync_ms", {})
                kb = s["rss_per_conn"] / 1024 if s.get("rss_per_conn") is not None else None
                rows.append(
                    [
                        lab,
                        label[k],
                        s.get("failed"),
                        kb,
                        ratio(s.get("rss_per_conn"), base),
                        hs.get("p50"),
                        hs.get("p99"),
                        hs.get("max"),
                        s.get("total_s"),
                        _flag(s),
                    ]
                )
        out.append(
            table(
                "(c) connections: idle, in rooms of 10; burst = all join one new room at once",
                [
                    "step",
                    "server",
                    "failed",
                    "KB RSS/conn",
                    "x collab",
                    "sync p50 ms",
                    "p99 ms",
                    "max ms",
                    "total s",
                    "note",
                ],
                rows,
                NOTES["connections"],
            )
        )
    if "largedoc" in results:
        rows = []
        base = (results["largedoc"].get("collab") or {}).get("fresh", {}).get("ms", {}).get("p50")
        for k in peers:
            r = results["largedoc"].get(k)
            if r is None:
                continue
            f = r.get("fresh") or {}
            rp = r.get("replay") or {}
            cold = (r.get("cold") or {}).get("ms")
            rows.append(
                [
                    label[k],
                    r.get("doc_bytes") if f else None,
                    cold,
                    (f.get("ms") or {}).get("p50"),
                    ratio((f.get("ms") or {}).get("p50"), base),
                    r["server_rss"] / 2**20 if r.get("server_rss") else None,
                    r["doc_rss"] / 2**20 if r.get("doc_rss") else None,
                    rp.get("keys_per_s"),
                    f"{rp.get('keys', 0):,}/{rp.get('of', 0):,}",
                    rp.get("server_cpu_pct"),
                    rp.get("gen_cpu_pct"),
                    _flag(rp),
                ]
            )
        doc = results.get("document", {})
        out.append(
            table(
                f"(d) large document: {doc.get('source', '?')}, {fmt(doc.get('ops'))} edits, "
                f"{fmt(doc.get('doc_bytes'))} B of Yjs state",
                [
                    "server",
                    "doc B",
                    "cold ms",
                    "fresh sync ms",
                    "x collab",
                    "RSS MB",
                    "+doc MB",
                    "replay keys/s",
                    "replayed",
                    "srv CPU %",
                    "gen CPU %",
                    "note",
                ],
                rows,
                NOTES["largedoc"],
            )
        )
    if "durability" in results:
        rows = []
        base = (
            (results["durability"].get("collab-mem") or {}).get("1x10", {}).get("best") or {}
        ).get("rate")
        for k in DURABILITY:
            r = (results["durability"].get(k) or {}).get("1x10")
            if r is not None:
                rows.append(_tp_row("1x10", label[k], r, base))
        out.append(
            table(
                "(e) durability cost: throughput (1 room, 10 subscribers) per persistence policy",
                [
                    "layout",
                    "server",
                    "max upd/s",
                    "deliv/s",
                    "p99 ms",
                    "srv CPU %",
                    "µs/deliv",
                    "x memory",
                    "gen CPU %",
                    "next step",
                    "note",
                ],
                rows,
            )
        )
    if "history" in results:
        out.append(_history_tables(results))
    if "bigdocs" in results:
        out.append(_bigdocs_table(results, peers))
    if "append" in results:
        out.append(_append_tables(results, peers))
    if "xmlappend" in results:
        head, rows, note = xml_append.render(results["xmlappend"])
        title = "(h) xmlappend: one writer appending at the end of a ProseMirror paragraph"
        out.append(table(title, head, rows, note))
    return "\n".join(out)


def _history_tables(results: Json) -> str:
    out = []
    for key, result in results.get("history", {}).items():
        rows = [[what, value] for what, value in history_bench.render(result)]
        out.append(
            table(
                f"(f) history: {PEERS[key].label}",
                ["what", "figure"],
                rows,
                "restore = POST .../restore round trip (diff on a fork in a thread, one "
                "CRDT edit, logged, relayed, versions cut);\nother room = awareness "
                "pings between two clients in another document every 10 ms.",
            )
        )
    return "\n\n".join(out)


def _tp_row(layout: str, name: str, r: Json, base: float | None) -> list[Any]:
    best = r.get("best") or {}
    fails = [s for s in r["steps"] if not s.get("pass") and not s.get("superseded")]
    why = ""
    if fails:
        f = min(fails, key=lambda s: s["rate"])
        p99 = (f.get("latency_ms") or {}).get("p99")
        why = f"{f['rate']:,}: " + (
            f"lost {f['lost']:,}"
            if f.get("lost")
            else f"p99 {fmt(p99)} ms"
            if p99 is not None
            else "failed"
        )
        if f.get("gen_saturated"):
            why += " GEN SAT"
    rate = best.get("rate")
    deliv = best.get("delivered", 0) / best["send_s"] if best.get("send_s") else None
    return [
        layout,
        name,
        rate,
        deliv,
        (best.get("latency_ms") or {}).get("p99"),
        best.get("server_cpu_pct"),
        best.get("us_per_msg"),
        ratio(rate, base),
        best.get("gen_cpu_pct"),
        why,
        _flag(best),
    ]


# -- main ------------------------------------------------------------------------------------


def machine() -> Json:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for dist in ("pycrdt", "pycrdt-websocket", "tornado", "websockets", "hypercorn"):
        try:
            from importlib.metadata import version

            versions[dist] = version(dist)
        except Exception:
            versions[dist] = None
    for pkg in ("yjs", "@y/websocket-server", "ws"):
        try:
            versions[pkg] = json.loads((HERE / "node_modules" / pkg / "package.json").read_text())[
                "version"
            ]
        except OSError:
            versions[pkg] = None
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "node": subprocess.run(
            [NODE, "--version"], capture_output=True, text=True, check=False
        ).stdout.strip(),
        "load_avg_at_start": os.getloadavg(),
        "collab_commit": commit,
        "versions": versions,
    }


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="short run: fewer, shorter steps")
    p.add_argument("--json", metavar="PATH", help="write every figure to PATH")
    p.add_argument(
        "--scenarios", default=",".join(SCENARIOS), help=f"subset of {','.join(SCENARIOS)}"
    )
    p.add_argument("--peers", default=",".join(COMPARED), help=f"subset of {','.join(COMPARED)}")
    p.add_argument(
        "--layouts", default=",".join(LAYOUTS), help=f"throughput: subset of {','.join(LAYOUTS)}"
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    scenarios = [s for s in args.scenarios.split(",") if s]
    peers = [p for p in args.peers.split(",") if p]
    for name in scenarios:
        if name not in SCENARIOS:
            raise SystemExit(f"unknown scenario {name!r}")
    for name in peers:
        if name not in PEERS:
            raise SystemExit(f"unknown peer {name!r}")
    layouts = [x for x in args.layouts.split(",") if x]
    for name in layouts:
        if name not in LAYOUTS:
            raise SystemExit(f"unknown layout {name!r}")
    LAYOUTS[:] = layouts
    if (os.cpu_count() or 1) < 2:
        raise SystemExit("make bench needs two cores: one for the server, one for the generator")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)
    if soft < want:
        resource.setrlimit(
            resource.RLIMIT_NOFILE, (want, hard)
        )  # inherited by servers and generator
    os.sched_setaffinity(0, {int(GEN_CORE)})  # keep this process off the server's core

    def on_term(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    results: Json = {"machine": machine(), "quick": args.quick, "command": " ".join(sys.argv)}
    started = time.monotonic()
    print(
        f"bench: {results['machine']['cpu']} x{results['machine']['cores']}, load "
        f"{results['machine']['load_avg_at_start'][0]:.2f}; server on core 0, generator on core 1"
        + (" (quick)" if args.quick else ""),
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="collab-bench-") as tmp:
        workdir = Path(tmp)
        try:
            run_all(scenarios, peers, args.quick, workdir, results)
        except KeyboardInterrupt:
            print("\nbench: interrupted; servers stopped", file=sys.stderr)
            return 130
        finally:
            stop_all()
    results["elapsed_s"] = time.monotonic() - started
    print(render(results, peers))
    print(f"\n{time.monotonic() - started:.0f} s; load average now {os.getloadavg()[0]:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str))
        print(f"figures written to {args.json}")
    return 0


def run_all(scenarios: list[str], peers: list[str], q: bool, workdir: Path, results: Json) -> None:
    runs: dict[str, Callable[[Server, bool, Path], Json]] = {
        "fanout": fanout,
        "throughput": throughput,
        "connections": connections,
        "bigdocs": bigdocs,
    }
    runs["append"] = append
    document = None
    if "largedoc" in scenarios or "history" in scenarios:
        print("building the large document ...", flush=True)
        document = results["document"] = build_document(q, workdir)
        runs["largedoc"] = lambda s, q_, w: largedoc(s, q_, w, document)
    for scenario in scenarios:
        if scenario == "xmlappend":  # the room alone, in this process
            print("xmlappend: room ...", end=" ", flush=True)
            t0 = time.monotonic()
            results["xmlappend"] = xml_append.run(q)
            print(f"{time.monotonic() - t0:.0f} s", flush=True)
            continue
        if scenario == "history":  # the server is started by the scenario, on its data
            results["history"] = {}
            for key in [k for k in peers if PEERS[k].kind == "collab" and PEERS[k].persistent]:
                print(f"history: {PEERS[key].label} ...", end=" ", flush=True)
                t0 = time.monotonic()
                try:
                    results["history"][key] = history_bench.run(
                        Server, PEERS[key], q, workdir, document
                    )
                except (RuntimeError, OSError) as exc:
                    print(f"failed: {exc}", flush=True)
                    results["history"][key] = {"error": str(exc)}
                    continue
                print(f"{time.monotonic() - t0:.0f} s", flush=True)
            continue
        if scenario == "durability":
            keys = [k for k in DURABILITY if k.startswith("collab")]
            run = durability
        else:
            keys, run = peers, runs[scenario]
        results[scenario] = {}
        for key in keys:
            t0 = time.monotonic()
            print(f"{scenario}: {PEERS[key].label} ...", end=" ", flush=True)
            try:
                with Server(PEERS[key], workdir) as server:
                    results[scenario][key] = run(server, q, workdir)
            except (RuntimeError, OSError) as exc:
                print(f"failed: {exc}", flush=True)
                results[scenario][key] = {"error": str(exc), "steps": []}
                continue
            print(f"{time.monotonic() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    sys.exit(main())
