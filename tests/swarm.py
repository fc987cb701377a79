"""Many stock y-websocket clients in one Node process (``tests/js/swarm.mjs``), and the soak.

``Swarm`` drives the Node process (JSON lines, bounded waits). ``run_soak`` is the
whole soak of ``make soak`` and of its smoke test: a collab server process under
steady edits carrying unique tokens, awareness churn, clients joining and
leaving and documents going idle (and unloading); it samples the server and
judges growth after warm-up and every token (``Verdict``).

Sampled: RSS and open fds (``/proc``), and from ``/metrics`` the loaded
documents, connections, asyncio tasks and event-loop handles; awareness states
as the clients see them (a client of each document: the states it holds beyond
the clients live there, so a server keeping departed clients' states shows).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import statistics
import time
import urllib.parse
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .jsclient import JS_DIR, require_node
from .server import ServerProcess

__all__ = [
    "NO_LIMITS",
    "SoakOptions",
    "Swarm",
    "Verdict",
    "check_tokens",
    "metrics_of",
    "proc_stats",
    "run_soak",
]

TOKEN = re.compile(r"k\d+x\d+;")
_TICKS = os.sysconf("SC_CLK_TCK")

# One address opens thousands of sockets at full speed: the abuse limits are off (0).
NO_LIMITS = (
    "--max-connections-per-ip", "0", "--max-connections-per-doc", "0", "--max-documents", "0",
    "--rate-messages", "0", "--rate-bytes", "0", "--api-rate", "0",
)  # fmt: skip


def proc_stats(pid: int) -> dict[str, int]:
    """RSS, peak RSS (``VmHWM``) in bytes, open fds and CPU ticks of ``pid``, from ``/proc``."""
    found = {"rss": 0, "hwm": 0, "fds": 0, "cpu_ticks": 0}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                found["rss" if key == "VmRSS" else "hwm"] = int(value.split()[0]) * 1024
        found["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        found["cpu_ticks"] = int(fields[11]) + int(fields[12])  # utime + stime
    return found


def metrics_of(page: str) -> dict[str, float]:
    """``name{labels}`` -> value of a Prometheus text page (comments skipped)."""
    found = {}
    for line in page.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            with contextlib.suppress(ValueError):
                found[key] = float(value)
    return found


def check_tokens(sent: dict[str, list[str]], texts: dict[str, str | None]) -> dict[str, Any]:
    """Compare every token sent with the final texts: missing, doubled, unknown, per document."""
    missing: dict[str, list[str]] = {}
    doubled: dict[str, list[str]] = {}
    unknown: dict[str, list[str]] = {}
    checked = 0
    for doc, tokens in sent.items():
        text = texts.get(doc)
        found = Counter(TOKEN.findall(text or ""))
        want = set(tokens)
        checked += len(tokens)
        if lost := [t for t in tokens if found[t] == 0]:
            missing[doc] = lost
        if twice := [t for t, n in found.items() if n > 1]:
            doubled[doc] = twice
        if extra := [t for t in found if t not in want]:
            unknown[doc] = extra
    return {
        "checked": checked,
        "missing": sum(map(len, missing.values())),
        "doubled": sum(map(len, doubled.values())),
        "unknown": sum(map(len, unknown.values())),
        "examples": {"missing": _first(missing), "doubled": _first(doubled)},
    }


def _first(by_doc: dict[str, list[str]]) -> dict[str, list[str]]:
    return {doc: tokens[:5] for doc, tokens in list(by_doc.items())[:3]}


class Swarm:
    """One ``node swarm.mjs`` process; ``request`` sends a command and returns its reply."""

    def __init__(self, spec: dict[str, Any], cpu: str | None = None) -> None:
        self.spec = spec
        self.cpu = cpu
        self.proc: asyncio.subprocess.Process | None = None
        self.ready: dict[str, Any] = {}
        self.stderr = ""
        self._ids = 0
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._ready = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self, timeout: float = 120.0) -> Swarm:
        node = require_node()
        command = [node, str(JS_DIR / "swarm.mjs"), json.dumps(self.spec)]
        if self.cpu is not None:
            command = ["taskset", "-c", self.cpu, *command]
        self.proc = await asyncio.create_subprocess_exec(
            *command,
            cwd=JS_DIR,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            limit=64 << 20,
        )
        self._tasks = [
            asyncio.ensure_future(self._read_stdout()),
            asyncio.ensure_future(self._read_stderr()),
        ]
        try:
            await asyncio.wait_for(self._ready.wait(), timeout)
        except TimeoutError:
            raise AssertionError(f"swarm not ready in {timeout}s; stderr: {self.stderr}") from None
        if not self.ready:
            raise AssertionError(f"swarm exited before it was ready; stderr: {self.stderr}")
        return self

    async def _read_stdout(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        async for raw in self.proc.stdout:
            message = json.loads(raw)
            if message.get("event") == "ready":
                self.ready = message
                self._ready.set()
                continue
            future = self._pending.pop(message.get("id", -1), None)
            if future is not None and not future.done():
                future.set_result(message)
        self._ready.set()
        for future in self._pending.values():
            if not future.done():
                future.set_exception(AssertionError(f"swarm exited; stderr: {self.stderr}"))

    async def _read_stderr(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        async for raw in self.proc.stderr:
            self.stderr = (self.stderr + raw.decode(errors="replace"))[-8000:]

    async def request(self, cmd: str, timeout: float = 60.0, **fields: Any) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdin is not None
        self._ids += 1
        future = asyncio.get_running_loop().create_future()
        self._pending[self._ids] = future
        self.proc.stdin.write((json.dumps({"id": self._ids, "cmd": cmd, **fields}) + "\n").encode())
        reply: dict[str, Any] = await asyncio.wait_for(future, timeout)
        if "error" in reply:
            raise AssertionError(f"swarm {cmd}: {reply['error']}")
        return reply

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def close(self) -> None:
        if self.proc is None:
            return
        if self.proc.returncode is None:
            with contextlib.suppress(Exception):
                await self.request("quit", timeout=10)
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        for task in self._tasks:
            task.cancel()
        self.proc = None


async def in_thread(fn: Any, *args: Any) -> Any:
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


async def texts_of(server: ServerProcess, docs: list[str]) -> dict[str, str | None]:
    """Every document's text through ``GET /api/docs/<name>/text``."""
    found: dict[str, str | None] = {}
    for doc in docs:
        status, body = await in_thread(server.get, f"/api/docs/{urllib.parse.quote(doc)}/text")
        found[doc] = body.decode() if status == 200 else None
    return found


@dataclass
class SoakOptions:
    conns: int = 2000
    docs: int = 200
    duration: float = 1800.0  # seconds of steady load
    warmup: float = 300.0  # seconds before growth is measured from
    sample: float = 10.0  # seconds between samples
    edit_every: float = 20.0  # seconds between two edits of one client (on average)
    awareness_every: float = 5.0  # seconds between two awareness changes of one client
    churn_every: float = 1.0  # seconds between two rounds of leave-and-rejoin
    churn_count: int = 4  # clients that leave (and are replaced by new ones) each round
    idle_every: float = 5.0  # seconds between two documents going idle (all clients leave)
    idle_for: float = 8.0  # seconds they stay away (longer than idle_timeout: unloaded)
    idle_timeout: float = 2.0  # the server's --idle-timeout
    fsync: str = "interval"
    pin: bool = True  # server on core 0, clients on core 1 (when taskset exists)
    # Tolerances, end of run against the first samples after warm-up (medians of a window each).
    rss_slack: float = 0.10  # fraction of the warm RSS...
    rss_bytes: int = 32 << 20  # ...plus this (documents grow: every token stays)
    fd_slack: int = 16  # fds beyond connections + loaded documents
    task_slack: int = 16
    handle_slack: int = -1  # -1: max(64, conns / 10) (closing sockets hold a timer each)
    awareness_slack: int = 0  # states beyond live clients (a window's median)
    extra_args: tuple[str, ...] = ()


@dataclass
class Verdict:
    ok: bool
    lines: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    tokens: dict[str, Any] = field(default_factory=dict)
    samples: list[dict[str, float]] = field(default_factory=list)


async def _sample(server: ServerProcess, swarm: Swarm, t0: float) -> dict[str, float]:
    assert server.proc is not None
    status, page = await in_thread(server.get, "/metrics")
    m = metrics_of(page.decode()) if status == 200 else {}
    proc = proc_stats(server.proc.pid)
    clients = await swarm.request("status") if swarm.proc is not None else {}
    conns = m.get("collab_connections", 0.0)
    docs = m.get("collab_documents_loaded", 0.0)
    return {
        "t": round(time.monotonic() - t0, 1),
        "rss_mb": proc["rss"] / 2**20,
        "fds": proc["fds"],
        "fds_extra": proc["fds"] - conns - docs,
        "connections": conns,
        "docs_loaded": docs,
        "tasks": m.get("collab_asyncio_tasks", -1.0),
        "timers": m.get('collab_asyncio_handles{kind="timer"}', -1.0),
        "ready_cbs": m.get('collab_asyncio_handles{kind="ready"}', -1.0),
        "aw_states": clients.get("awarenessStates", 0),
        "aw_excess": clients.get("awarenessExcess", 0),
        "clients": clients.get("clients", 0),
        "synced": clients.get("synced", 0),
        "edits": clients.get("edits", 0),
        "joins": clients.get("joins", 0),
        "updates_in": m.get("collab_updates_in_total", 0.0),
        "node_rss_mb": clients.get("rss", 0) / 2**20,
        "srv_cpu_s": proc["cpu_ticks"] / _TICKS,
        "node_cpu_s": proc_stats(swarm.proc.pid)["cpu_ticks"] / _TICKS if swarm.proc else 0.0,
    }


_COLUMNS = ["t", "rss_mb", "fds", "fds_extra", "connections", "docs_loaded", "tasks", "timers",
    "ready_cbs", "aw_states", "aw_excess", "clients", "synced", "edits", "joins", "srv_cpu_s",
    "node_cpu_s", "node_rss_mb"]  # fmt: skip


def _row(sample: dict[str, float]) -> str:
    return "  ".join(
        f"{k}={sample[k]:.1f}" if k.endswith(("_mb", "_s")) else f"{k}={sample[k]:g}"
        for k in _COLUMNS
    )


async def run_soak(
    opts: SoakOptions, workdir: Path, say: Any = print, deadline_s: float | None = None
) -> Verdict:
    """The soak: start a server and a swarm, load, sample, drain, check.

    A finding (growth, a lost token) is in the verdict, never raised."""
    names = [f"soak-{i:04d}" for i in range(opts.docs)]
    args = [*NO_LIMITS, "--idle-timeout", str(opts.idle_timeout), "--fsync", opts.fsync]
    args += ["--log-level", "warning", *opts.extra_args]
    server = ServerProcess(workdir / "data", *args)
    server.log_path = workdir / "server.log"
    pin = opts.pin and os.path.exists("/usr/bin/taskset") and (os.cpu_count() or 1) > 1
    verdict = Verdict(ok=True)
    samples = verdict.samples
    await in_thread(server.start)
    if pin:
        assert server.proc is not None
        os.sched_setaffinity(server.proc.pid, {0})
    per_doc = max(1, opts.conns // opts.docs)
    spec = {
        "url": server.ws,
        "docs": names,
        "perDoc": per_doc,
        "connectBatch": 100,
        "soak": {
            "tick": 100,
            "editEvery": opts.edit_every * 1000,
            "awarenessEvery": opts.awareness_every * 1000,
            "churnEvery": opts.churn_every * 1000,
            "churnCount": opts.churn_count,
            "idleEvery": opts.idle_every * 1000,
            "idleFor": opts.idle_for * 1000,
        },
    }
    swarm = Swarm(spec, cpu="1" if pin else None)
    t0 = time.monotonic()
    try:
        before = await _sample(server, swarm, t0)  # no client yet
        before["phase"] = "before"  # type: ignore[assignment]
        samples.append(before)
        say("before: " + _row(before))
        await swarm.start(timeout=max(120.0, opts.conns / 10))
        took = time.monotonic() - t0
        say(f"# {per_doc * opts.docs} clients over {opts.docs} documents connected and synced "
            f"in {took:.1f}s; soaking {opts.duration:g}s (warm-up {opts.warmup:g}s)")  # fmt: skip
        t0 = time.monotonic()
        while (elapsed := time.monotonic() - t0) < opts.duration:
            sample = await _sample(server, swarm, t0)
            samples.append(sample)
            say(_row(sample))
            await asyncio.sleep(min(opts.sample, max(0.1, opts.duration - elapsed)))
        await _finish(server, swarm, opts, names, verdict, t0, say)
    finally:
        await swarm.close()
        with contextlib.suppress(Exception):
            await in_thread(server.stop)
    _judge(opts, verdict)
    return verdict


async def _finish(
    server: ServerProcess,
    swarm: Swarm,
    opts: SoakOptions,
    names: list[str],
    verdict: Verdict,
    t0: float,
    say: Any,
) -> None:
    """Stop the load, check every token, let every client go, check that everything drains."""
    await swarm.request("stop")
    end = time.monotonic() + 120
    while time.monotonic() < end:  # the idle documents' clients are back and every one synced
        status = await swarm.request("status")
        if status["synced"] == status["clients"]:
            break
        await asyncio.sleep(0.2)
    path = Path(server.log_path).with_name("tokens.json")
    await swarm.request("tokens", path=str(path))
    sent = json.loads(path.read_text())
    result: dict[str, Any] = {}
    end = time.monotonic() + 60
    while time.monotonic() < end:  # the last edits may still be on their way
        result = check_tokens(sent, await texts_of(server, names))
        if result["missing"] == 0:
            break
        await asyncio.sleep(0.5)
    verdict.tokens = result
    say(f"# tokens: {result['checked']} checked, {result['missing']} missing, "
        f"{result['doubled']} doubled, {result['unknown']} unknown")  # fmt: skip
    if result["missing"] or result["doubled"] or result["unknown"]:
        verdict.failures.append(f"tokens: {result}")
    await swarm.request("quit")
    await swarm.close()
    before = next(s for s in verdict.samples if s.get("phase") == "before")
    slack = {"fds": 4, "tasks": 2, "timers": 4}
    drained: dict[str, float] = {}
    end = time.monotonic() + opts.idle_timeout + 30
    while time.monotonic() < end:  # what is only finishing (a version cut, a close) goes
        drained = await _sample(server, swarm, t0)
        if (
            drained["connections"] == 0
            and drained["docs_loaded"] == 0
            and all(drained[k] <= before[k] + n for k, n in slack.items())
        ):
            break
        await asyncio.sleep(0.25)
    drained["phase"] = "drained"  # type: ignore[assignment]
    verdict.samples.append(drained)
    say("drained: " + _row(drained))
    if drained["connections"] != 0 or drained["docs_loaded"] != 0:
        verdict.failures.append(
            f"not drained {opts.idle_timeout + 30:g}s after every client left: "
            f"{drained['connections']:g} connections, {drained['docs_loaded']:g} documents loaded"
        )
    for key, n in slack.items():
        if drained[key] > before[key] + n:
            verdict.failures.append(
                f"{key}: {drained[key]:g} once every client left and every document unloaded, "
                f"{before[key]:g} before any client came (tolerance +{n})"
            )


def _judge(opts: SoakOptions, verdict: Verdict) -> None:
    """Growth after warm-up: the median of the last window against that of the first."""
    steady = [s for s in verdict.samples if "phase" not in s]
    after = [s for s in steady if s["t"] >= opts.warmup]
    if not steady:
        verdict.ok = False
        return
    if len(after) < 4:
        verdict.failures.append(f"only {len(after)} samples after warm-up: run longer")
        verdict.ok = False
        return
    width = max(2, len(after) // 10)
    warm, last = after[:width], after[-width:]
    start = steady[0]

    def med(window: list[dict[str, float]], key: str) -> float:
        return float(statistics.median(s[key] for s in window))

    handles = opts.handle_slack if opts.handle_slack >= 0 else max(64, opts.conns // 10)
    limits = {
        "rss_mb": med(warm, "rss_mb") * opts.rss_slack + opts.rss_bytes / 2**20,
        "fds_extra": float(opts.fd_slack),
        "tasks": float(opts.task_slack),
        "timers": float(handles),
        "ready_cbs": float(handles),
        "aw_excess": float(opts.awareness_slack),
    }
    verdict.lines.append(
        f"{'figure':<12} {'start':>10} {'warm-up':>10} {'end':>10} {'growth':>10} {'tolerance':>10}"
    )
    for key, limit in limits.items():
        a, b = med(warm, key), med(last, key)
        growth = b - a
        verdict.lines.append(
            f"{key:<12} {start[key]:>10.1f} {a:>10.1f} {b:>10.1f} {growth:>+10.1f} {limit:>10.1f}"
        )
        if growth > limit:
            verdict.failures.append(
                f"{key} grew by {growth:.1f} after warm-up (tolerance {limit:.1f})"
            )
    loaded = max(s["docs_loaded"] for s in steady)
    if loaded > opts.docs:
        verdict.failures.append(f"{loaded:g} documents loaded, more than the {opts.docs} there are")
    unloads = min(s["docs_loaded"] for s in after)
    verdict.lines.append(f"documents loaded: {unloads:g}..{loaded:g} of {opts.docs} after warm-up")
    verdict.ok = not verdict.failures
