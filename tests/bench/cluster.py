"""Cluster-mode benchmark: what Redis costs per update, and the latency it adds.

Runs gen.mjs (pinned to the generator core) against, side by side in one run:

* ``single``: one collab process, ``--fsync always`` on a data dir (the same
  write-before-relay promise on one machine);
* ``cluster``: two collab processes on one redis-server (``appendfsync
  always``), the writer on the first, subscribers split over both;
* ``cluster-everysec``: the same with ``appendfsync everysec`` (relaxed).

Steps: fan-out to 1,000 subscribers at 20 updates/s (latency p50/p99), and one
room of 10 subscribers at a fixed rate (server CPU per update, collab
processes + redis-server together). Prints a table; ``--json PATH`` writes
the figures. collab processes share core 0; redis-server and the generator
core 1 (2 cores: there is no core for more total throughput, see README).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peers import GEN_CORE, HERE, NODE, ROOT, free_port, spawn, stop_all, terminate

SERVER_CORE = "0"


def wait_ready(port: int, timeout: float = 30.0) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"collab on {port} not ready")


def start_redis(workdir: Path, fsync: str) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    data = workdir / f"redis-{fsync}-{port}"
    data.mkdir(parents=True)
    cmd = ["taskset", "-c", GEN_CORE, "redis-server", "--bind", "127.0.0.1", "--port", str(port),
           "--save", "", "--appendonly", "yes", "--appendfsync", fsync, "--dir", str(data),
           "--maxmemory-policy", "noeviction"]  # fmt: skip
    proc = spawn(cmd, None, workdir / "redis.log")
    import redis

    client = redis.Redis(port=port)
    for _ in range(200):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    return proc, port


def start_collab(workdir: Path, *args: str) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    cmd = ["taskset", "-c", SERVER_CORE, sys.executable, "-m", "collab", "serve", "--host",
           "127.0.0.1", "--port", str(port), "--log-level", "warning",
           "--max-connections-per-ip", "0", "--max-connections-per-doc", "0",
           "--rate-messages", "0", "--rate-bytes", "0", *args]  # fmt: skip
    proc = spawn(cmd, None, workdir / f"collab-{port}.log", cwd=ROOT)
    wait_ready(port)
    return proc, port


def cpu(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        t = psutil.Process(pid).cpu_times()
        total += t.user + t.system
    return total


def generate(spec: dict[str, Any], pids: list[int], workdir: Path) -> dict[str, Any]:
    """Run gen.mjs; CPU of ``pids`` between each step's start and end marks."""
    path = workdir / f"spec-{time.monotonic_ns()}.json"
    path.write_text(json.dumps({**spec, "limit_s": 300}))
    cmd = ["taskset", "-c", GEN_CORE, NODE, str(HERE / "gen.mjs"), str(path)]
    proc = spawn(cmd, None, workdir / "gen.log", stdout=subprocess.PIPE)
    marks: dict[str, tuple[float, float]] = {}
    result: dict[str, Any] | None = None
    assert proc.stdout is not None
    for raw in proc.stdout:
        line = raw.decode(errors="replace").rstrip("\n")
        if line.startswith("MARK "):
            marks[line[5:]] = (time.monotonic(), cpu(pids))
        elif line.startswith("RESULT "):
            result = json.loads(line[7:])
    proc.wait(60)
    terminate(proc, grace=2)
    if result is None:
        raise RuntimeError("generator failed: see gen.log")
    for step in result["steps"]:
        a, b = marks.get(f"{step['label']}:start"), marks.get(f"{step['label']}:end")
        if a and b:
            step["server_cpu_s"] = b[1] - a[1]
            if step.get("sent"):
                step["us_per_update"] = 1e6 * step["server_cpu_s"] / step["sent"]
            if step.get("delivered"):
                step["us_per_delivery"] = 1e6 * step["server_cpu_s"] / step["delivered"]
    return result


def setup(kind: str, workdir: Path) -> tuple[list[subprocess.Popen[bytes]], list[int]]:
    """Start the servers of ``kind``; returns the processes and the collab ports."""
    if kind == "single":
        proc, port = start_collab(workdir, "--data-dir", str(workdir / f"data-{time.time_ns()}"),
                                  "--fsync", "always")  # fmt: skip
        return [proc], [port]
    fsync = "everysec" if kind.endswith("everysec") else "always"
    redis, rport = start_redis(workdir, fsync)
    extra = ["--redis-durability", "relaxed"] if fsync != "always" else []
    url = f"redis://127.0.0.1:{rport}/0"
    a, pa = start_collab(workdir, "--redis-url", url, *extra)
    b, pb = start_collab(workdir, "--redis-url", url, *extra)
    return [redis, a, b], [pa, pb]


def run(kinds: list[str], quick: bool, workdir: Path) -> dict[str, Any]:
    results: dict[str, Any] = {}
    subs = 200 if quick else 1000
    seconds = 3 if quick else 10
    for kind in kinds:
        procs, ports = setup(kind, workdir)
        try:
            bases = [f"ws://127.0.0.1:{p}" for p in ports]
            pids = [p.pid for p in procs]
            fan = generate({"scenario": "fanout", "subs": [subs], "rate": 20, "seconds": seconds,
                            "drain_ms": 2000, "base": bases[0], "sub_bases": bases,
                            "crdt": "yjs"}, pids, workdir)  # fmt: skip
            load = generate({"scenario": "fanout", "subs": [10], "rate": 500, "seconds": seconds,
                             "drain_ms": 3000, "base": bases[0], "sub_bases": bases,
                             "crdt": "yjs"}, pids, workdir)  # fmt: skip
            results[kind] = {"fanout": fan["steps"][0], "load": load["steps"][0]}
        finally:
            for proc in procs:
                terminate(proc, grace=10)
    return results


def fmt(v: Any, digits: int = 1) -> str:
    return "-" if v is None else f"{v:,.{digits}f}" if isinstance(v, float) else f"{v:,}"


def render(results: dict[str, Any]) -> str:
    lines = ["cluster mode: collab processes + redis-server CPU; subscribers split over processes",
             f"{'setup':<18}{'fan-out subs':>13}{'p50 ms':>9}{'p99 ms':>9}{'lost':>6}"
             f"{'µs/deliv':>10}   {'load upd/s':>11}{'p99 ms':>9}{'lost':>6}{'µs/update':>11}"
             f"{'x single':>9}"]  # fmt: skip
    base = results.get("single", {}).get("load", {}).get("us_per_update")
    for kind, r in results.items():
        f, ld = r["fanout"], r["load"]
        ratio = ld.get("us_per_update") / base if base and ld.get("us_per_update") else None
        lines.append(
            f"{kind:<18}{f.get('subs_per_room', 0):>13}{fmt(f['latency_ms']['p50']):>9}"
            f"{fmt(f['latency_ms']['p99']):>9}{f['lost']:>6}{fmt(f.get('us_per_delivery')):>10}   "
            f"{fmt(ld.get('achieved_rate'), 0):>11}{fmt(ld['latency_ms']['p99']):>9}{ld['lost']:>6}"
            f"{fmt(ld.get('us_per_update')):>11}{fmt(ratio, 2):>9}"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--setups", default="single,cluster,cluster-everysec")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="collab-cluster-bench-"))
    try:
        results = run(args.setups.split(","), args.quick, workdir)
    finally:
        stop_all()
    print(render(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
