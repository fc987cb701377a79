"""Cluster kill loop (``make kill-loop``): nothing anyone saw is lost, nothing doubled.

Three ``collab serve --redis-url`` processes on one redis-server (AOF
``always``). A writer streams unique tokens ``t<i>.`` through one process
while an observer on each of the others watches. Each cycle SIGKILLs the
writer's process (and every few cycles redis-server instead), restarts it,
and the writer reconnects to another process with its offline edits. At the
end the text Redis holds (read as a fresh process loads it) must have every
token exactly once, in order, and hold every token any observer saw right
after each kill. Bounded: every wait has a timeout, the token count is fixed.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from collab.storage.redis.store import RedisStore  # noqa: E402
from tests.crdt import text_of  # noqa: E402
from tests.redis_server import RedisServer  # noqa: E402
from tests.server import ServerProcess  # noqa: E402
from tests.wait import eventually  # noqa: E402
from tests.yclient import YClient  # noqa: E402

PER_CYCLE = 30


def tokens(text: str) -> list[str]:
    return re.findall(r"t\d+\.", text)


async def stored(redis: RedisServer) -> list[str]:
    store = RedisStore(redis.url)
    try:
        return tokens(text_of((await store.log("doc").load()).updates))
    finally:
        await store.close()


async def connect(client: YClient) -> YClient:
    """Connect as a real client does: retry while the server answers 503 (Redis coming back)."""

    async def attempt() -> bool:
        try:
            await client.connect()
        except Exception as exc:  # 503 or refused while a process or Redis restarts
            raise AssertionError(f"cannot connect to {client.url}: {exc}") from exc
        return True

    await eventually(attempt, timeout=30, interval=0.2)
    return client


async def run(kills: int, redis_kills: int, seed: int) -> int:
    rnd = random.Random(seed)
    root = Path(tempfile.mkdtemp(prefix="collab-kill-loop-"))
    redis = RedisServer(root / "redis").start()
    servers = [ServerProcess(root / f"p{i}", "--redis-url", redis.url) for i in range(3)]
    for server in servers:
        server.start()
    written = 0
    checks = 0
    started = time.monotonic()
    try:
        cycles = kills + redis_kills
        redis_cycles = set(rnd.sample(range(cycles), redis_kills))
        home = 0
        writer = await connect(YClient(f"{servers[home].ws}/doc"))
        for cycle in range(cycles):
            others = [s for i, s in enumerate(servers) if i != home]
            observers = [await connect(YClient(f"{s.ws}/doc")) for s in others]
            kill_at = rnd.randrange(5, PER_CYCLE - 5)
            for j in range(PER_CYCLE):
                writer.text.insert(len(writer.text), f"t{written}.")
                written += 1
                if j % 5 == 0:
                    await asyncio.sleep(0.005)
                if j == kill_at:
                    if cycle in redis_cycles:
                        redis.kill()
                    else:
                        servers[home].kill()
            await asyncio.sleep(0.3)  # what was in flight has landed, or never will
            if cycle in redis_cycles:
                redis.start()
            seen = set().union(*(tokens(str(o.text)) for o in observers))
            if cycle not in redis_cycles:
                held = set(await stored(redis))
                lost = seen - held
                assert not lost, f"cycle {cycle}: observers saw {sorted(lost)[:5]}, Redis lost them"
                checks += 1
            for observer in observers:
                if observer.connected:
                    await observer.close()
            if cycle not in redis_cycles:
                servers[home].start()
                home = rnd.choice([i for i in range(3) if i != home])
                writer.url = f"{servers[home].ws}/doc"
            if not writer.connected:
                await connect(writer)
            else:
                await writer.roundtrip()
            print(f"cycle {cycle + 1}/{cycles}: {'redis' if cycle in redis_cycles else 'collab'} "
                  f"killed, {written} tokens so far", flush=True)  # fmt: skip
        expected = [f"t{i}." for i in range(written)]

        async def complete() -> bool:
            return await stored(redis) == expected

        await eventually(complete, timeout=30)
        await writer.close()
    finally:
        for server in servers:
            if server.proc is not None:
                server.kill()
        redis.stop()
    print(f"kill loop: {kills} collab SIGKILLs, {redis_kills} redis-server SIGKILLs, "
          f"{written} tokens, {checks} observer checks, 0 lost, 0 doubled, "
          f"{time.monotonic() - started:.0f} s")  # fmt: skip
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--redis-kills", type=int, default=5)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    return asyncio.run(run(args.kills, args.redis_kills, args.seed))


if __name__ == "__main__":
    sys.exit(main())
