"""``make storm``: a reconnect storm, collab and the Yjs reference server side by side.

For each server and each way of stopping it (SIGTERM, SIGKILL): 2,000 stock
y-websocket clients (Node, ``tests/js/swarm.mjs``; y-websocket's own
exponential backoff, no jitter) over 200 documents connect and sync, each makes
an edit carrying a unique token; the server is stopped, each client makes one
more edit while it is down, the server is started again on the same port (and,
for collab, the same data directory), every client reconnects and resyncs, and
each makes a third edit. Reported: the time from the signal until the last
client had resynced, the server's start time, its peak RSS (``VmHWM`` of the
new process once all had resynced) and RSS before the stop; then every token
is checked in a fresh client's copy of each document (and, for collab, in
``GET /api/docs/<name>/text``): nothing may be missing or doubled.

Each server in ``--jitter`` (default collab) is also stormed with every client
using the editor page's reconnect policy (``backoffDelay`` imported from
``web/src/connection.js``: a random delay in [cap/2, cap], cap = min(10 s,
0.4 s * 2^n)) instead of y-websocket's fixed 100 ms * 2^n.

The reference server keeps documents in memory only, so after its restart the
documents come back from the clients; collab's come from its disk.

Server on core 0, clients on core 1.

    python tests/bench/storm.py [--conns 2000] [--docs 200] [--peers collab,yjs-ref]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from peers import PEERS, Peer, free_port, spawn, stop_all  # noqa: E402

from tests.swarm import NO_LIMITS, Swarm, check_tokens, proc_stats  # noqa: E402

SERVER_ARGS: list[str] = []  # --server-arg: more collab serve arguments (a later one wins)


class Restartable:
    """One server on a fixed port and data directory, started again after each stop."""

    def __init__(self, peer: Peer, workdir: Path) -> None:
        self.peer = peer
        self.workdir = workdir
        self.port = free_port()
        self.data_dir = str(workdir / "data") if peer.persistent else None
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> float:
        """Start it; return the seconds until it accepted a connection (collab: /healthz)."""
        cmd, env = self.peer.command(self.port, self.data_dir)
        if self.peer.kind == "collab":
            cmd += [*NO_LIMITS, "--log-level", "warning", *SERVER_ARGS]
        started = time.monotonic()
        self.proc = spawn(cmd, env, self.workdir / f"{self.peer.key}.log")
        deadline = started + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.peer.key} exited with {self.proc.returncode}")
            try:
                if self.peer.kind == "collab":
                    with urllib.request.urlopen(f"{self.http}/healthz", timeout=1) as r:
                        if r.status == 200:
                            return time.monotonic() - started
                else:
                    import socket

                    with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                        return time.monotonic() - started
            except OSError:
                time.sleep(0.02)
        raise RuntimeError(f"{self.peer.key} did not start in {timeout}s")

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}" + ("/ws" if self.peer.kind == "collab" else "")

    def signal(self, sig: int, timeout: float = 60.0) -> tuple[int | None, float]:
        """Send ``sig``, wait for the exit; return the exit code and the seconds it took."""
        assert self.proc is not None
        proc, self.proc = self.proc, None
        started = time.monotonic()
        proc.send_signal(sig)  # taskset execs the server: this is the server
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        return proc.returncode, time.monotonic() - started

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.signal(signal.SIGTERM, 20)


async def texts_over_rest(server: Restartable, docs: list[str]) -> dict[str, str | None]:
    def get(doc: str) -> str | None:
        url = f"{server.http}/api/docs/{urllib.parse.quote(doc)}/text"
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                return str(r.read().decode())
        except OSError:
            return None

    loop = asyncio.get_running_loop()
    return {doc: await loop.run_in_executor(None, get, doc) for doc in docs}


async def storm(
    peer: Peer, kind: str, conns: int, docs: int, workdir: Path, jitter: bool = False
) -> dict[str, Any]:
    names = [f"storm-{i:03d}" for i in range(docs)]
    server = Restartable(peer, workdir)
    server.start()
    swarm = Swarm({"url": server.ws, "docs": names, "perDoc": conns // docs, "connectBatch": 100,
                   "soak": None, "jitter": 1 if jitter else 0}, cpu="1")  # fmt: skip
    label = peer.label + (", page backoff (jittered)" if jitter else "")
    row: dict[str, Any] = {"server": label, "stop": kind}
    try:
        t = time.monotonic()
        await swarm.start(timeout=300)
        row["connect_s"] = time.monotonic() - t
        if jitter:
            row["policy"] = swarm.ready.get("pagePolicy")
            assert swarm.ready.get("jittered") == swarm.ready.get("clients"), swarm.ready
        row["before"] = (await swarm.request("edit"))["made"]
        await asyncio.sleep(1.0)  # the first edits reach everyone
        assert server.proc is not None
        row["rss_before_mb"] = proc_stats(server.proc.pid)["rss"] / 2**20
        await swarm.request("arm")
        sig = signal.SIGTERM if kind == "term" else signal.SIGKILL
        code, row["exit_s"] = await asyncio.get_running_loop().run_in_executor(
            None, server.signal, sig
        )
        row["exit_code"] = code
        row["offline"] = (await swarm.request("edit", offline=True))["made"]
        row["start_s"] = await asyncio.get_running_loop().run_in_executor(None, server.start)
        assert server.proc is not None
        pid, peak = server.proc.pid, 0
        armed: dict[str, Any] = {}
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            armed = await swarm.request("armed")
            peak = max(peak, proc_stats(pid)["hwm"])
            if armed["all"]:
                break
            await asyncio.sleep(0.05)
        row["resynced"] = f"{armed.get('resynced')}/{armed.get('clients')}"
        row["all_synced_s"] = armed["lastMs"] / 1000 if armed.get("all") else None
        row["peak_rss_mb"] = max(peak, proc_stats(pid)["hwm"]) / 2**20
        row["after"] = (await swarm.request("edit"))["made"]
        path = workdir / f"tokens-{peer.key}-{kind}.json"
        await swarm.request("tokens", path=str(path))
        sent = json.loads(path.read_text())
        result: dict[str, Any] = {}
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            texts = (await swarm.request("fresh", timeout=120))["texts"]
            result = check_tokens(sent, texts)
            if peer.kind == "collab" and result["missing"] == 0:
                rest = check_tokens(sent, await texts_over_rest(server, names))
                result["rest_missing"] = rest["missing"]
                result["rest_doubled"] = rest["doubled"]
                if rest["missing"] == 0:
                    break
            elif result["missing"] == 0:
                break
            await asyncio.sleep(1)
        row["tokens"] = result
    finally:
        await swarm.close()
        server.stop()
    return row


def table(rows: list[dict[str, Any]]) -> str:
    head = ["server", "stop", "exit s", "start s", "all resynced s", "resynced", "RSS before MB",
            "peak RSS MB", "tokens checked", "missing", "doubled"]  # fmt: skip
    out = [" | ".join(head), " | ".join("---" for _ in head)]
    for r in rows:
        t = r.get("tokens", {})
        missing = t.get("missing", "?")
        if "rest_missing" in t:
            missing = f"{missing} (REST {t['rest_missing']})"
        synced = r.get("all_synced_s")
        out.append(" | ".join(str(x) for x in [
            r["server"], "SIGTERM" if r["stop"] == "term" else "SIGKILL",
            f"{r.get('exit_s', 0):.2f}",
            f"{r.get('start_s', 0):.2f}", "timeout" if synced is None else f"{synced:.2f}",
            r.get("resynced"), f"{r.get('rss_before_mb', 0):.1f}", f"{r.get('peak_rss_mb', 0):.1f}",
            t.get("checked", "?"), missing, t.get("doubled", "?"),
        ]))  # fmt: skip
    return "\n".join(out)


async def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--conns", type=int, default=2000)
    parser.add_argument("--docs", type=int, default=200)
    parser.add_argument("--peers", default="collab,yjs-ref")
    parser.add_argument("--kinds", default="term,kill")
    parser.add_argument(
        "--jitter",
        default="collab",
        help="servers also stormed with clients using the editor page's jittered backoff "
        "(web/src/connection.js); empty: none",
    )
    parser.add_argument("--json", help="write the rows to this file")
    parser.add_argument("--server-arg", action="append", default=[], help="collab serve argument")
    parser.add_argument("--logs", help="copy each server's log into this directory")
    ns = parser.parse_args(argv)
    SERVER_ARGS.extend(ns.server_arg)
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    print(f"# reconnect storm, {started}: {ns.conns} clients over {ns.docs} documents", flush=True)
    rows = []
    try:
        runs = [(key, False) for key in ns.peers.split(",")]
        runs += [(key, True) for key in ns.jitter.split(",") if key]
        for key, jitter in runs:
            for kind in ns.kinds.split(","):
                with tempfile.TemporaryDirectory(prefix=f"collab-storm-{key}-") as tmp:
                    row = await storm(PEERS[key], kind, ns.conns, ns.docs, Path(tmp), jitter)
                    if ns.logs:
                        Path(ns.logs).mkdir(parents=True, exist_ok=True)
                        for log in Path(tmp).glob("*.log"):
                            target = (
                                Path(ns.logs)
                                / f"{log.stem}-{kind}{'-jitter' if jitter else ''}.log"
                            )
                            shutil.copy(log, target)
                rows.append(row)
                print(json.dumps({k: v for k, v in row.items() if k != "tokens"}), flush=True)
    finally:
        stop_all()
    print()
    print(table(rows))
    print("all resynced = from the signal until the last client had synced again "
          "(includes exit s and start s); peak RSS = VmHWM of the restarted server.")  # fmt: skip
    if ns.json:
        Path(ns.json).write_text(json.dumps(rows, indent=1))

    def failed(r: dict[str, Any]) -> bool:
        t = r["tokens"]
        return r.get("all_synced_s") is None or any(
            t.get(k) for k in ("missing", "doubled", "rest_missing", "rest_doubled")
        )

    bad = [r for r in rows if failed(r)]
    for r in bad:
        print(
            f"FAIL: {r['server']} {r['stop']}: {r.get('resynced')} resynced, tokens {r['tokens']}"
        )
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
