"""``make soak``: hours of steady editing, and nothing grows or gets lost.

N stock y-websocket clients (Node, ``tests/js/swarm.mjs``) over M documents of
one ``collab serve`` process: steady edits each carrying a unique token,
awareness changes, clients leaving and new ones joining, documents whose
clients all go away for longer than the server's ``--idle-timeout`` (so they
unload and load again). Samples RSS, fds, loaded documents, asyncio tasks and
event-loop handles, and awareness states as the clients see them. Fails (exit
1) if one of them grows after warm-up beyond its tolerance, if a token is
missing, doubled or unknown in the final texts (``GET /api/docs/<name>/text``),
or if connections and documents do not drain once every client left.

    python tests/bench/soak.py --conns 2000 --docs 200 --duration 1800 --warmup 300
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.swarm import SoakOptions, run_soak  # noqa: E402


def options(argv: list[str]) -> tuple[SoakOptions, argparse.Namespace]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    for f in dataclasses.fields(SoakOptions):
        if f.name in ("extra_args", "pin"):
            continue
        flag = "--" + f.name.replace("_", "-")
        parser.add_argument(
            flag, type=type(f.default), default=f.default, help=f"default {f.default}"
        )
    parser.add_argument(
        "--no-pin", action="store_true", help="do not pin server and clients to cores"
    )
    parser.add_argument("--json", help="write every sample and the verdict to this file")
    parser.add_argument(
        "--server-arg", action="append", default=[], help="extra collab serve argument"
    )
    ns = parser.parse_args(argv)
    fields = {f.name: getattr(ns, f.name) for f in dataclasses.fields(SoakOptions)
              if f.name not in ("extra_args", "pin")}  # fmt: skip
    return SoakOptions(**fields, pin=not ns.no_pin, extra_args=tuple(ns.server_arg)), ns


async def main(argv: list[str]) -> int:
    opts, ns = options(argv)
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    print(f"# collab soak, {started}: {opts}", flush=True)
    with tempfile.TemporaryDirectory(prefix="collab-soak-") as tmp:
        verdict = await run_soak(opts, Path(tmp), say=lambda line: print(line, flush=True))
    print()
    for line in verdict.lines:
        print(line)
    tokens = verdict.tokens
    print(f"tokens: {tokens.get('checked', 0)} checked token by token: "
          f"{tokens.get('missing', '?')} missing, {tokens.get('doubled', '?')} doubled, "
          f"{tokens.get('unknown', '?')} unknown")  # fmt: skip
    for failure in verdict.failures:
        print(f"FAIL: {failure}")
    print("PASS" if verdict.ok else "FAIL")
    if ns.json:
        Path(ns.json).write_text(json.dumps(dataclasses.asdict(verdict), indent=1))
    return 0 if verdict.ok else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
