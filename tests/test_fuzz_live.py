"""A live server under a storm of random and mutated frames; honest clients are unharmed.

Eight fuzzing connections at a time make the server process at least 10,000 hostile
frames (counted at the hub): randomly generated y-protocols messages (random
awareness states and ids, state vectors, auth reasons, update bytes), real
frames with bytes flipped, cut, inserted or dropped, raw random bytes, huge
declared lengths and text frames. They reconnect whenever the server closes
them, while three honest clients keep typing. Afterwards ``/healthz`` answers,
the honest clients are still connected and the document holds exactly their
text.
"""

from __future__ import annotations

import asyncio
import json
import random
import time

import pytest
from pycrdt import Doc, Map
from tornado.httpclient import AsyncHTTPClient, HTTPClientError
from tornado.websocket import WebSocketClientConnection, WebSocketClosedError, websocket_connect

from collab import Config
from collab.core import protocol
from collab.core.errors import ProtocolError
from collab.core.protocol import (
    Auth,
    AwarenessEntry,
    AwarenessUpdate,
    QueryAwareness,
    SyncStep1,
    SyncStep2,
    Update,
)
from collab.server.document import Document
from tests.wait import eventually
from tests.yclient import YClient

FRAMES = 10_000
FUZZERS = 8
MARKER = protocol.encode(SyncStep1(b"\x00"))  # paces a fuzzer: answered to it alone
HONEST_IDS = (1001, 1002, 1003)  # fuzzed client ids are >= 10**9: a byte flip cannot reach these


def _fuzz_pool(rng: random.Random) -> list[bytes]:
    """Valid frames a fuzzer may send or mutate: updates to its own map, and chatter."""
    frames: list[bytes] = []
    for _ in range(4):
        doc: Doc = Doc(client_id=rng.randrange(10**9, 2**32))
        doc.observe(lambda e: frames.append(protocol.encode(Update(e.update))))
        junk = doc.get("fuzz", type=Map)
        for i in range(10):
            junk[f"k{i % 4}"] = rng.random()
    frames.append(protocol.encode(SyncStep1(b"\x00")))
    frames.append(protocol.encode(QueryAwareness()))
    entry = AwarenessEntry(rng.randrange(10**9, 2**32), 1, '{"user":"fuzz"}')
    frames.append(protocol.encode(AwarenessUpdate(protocol.encode_awareness([entry]))))
    return frames


def _mutate(rng: random.Random, frame: bytes) -> bytes:
    data = bytearray(frame)
    for _ in range(rng.randint(1, 3)):
        i = rng.randrange(len(data) + 1)
        match rng.randrange(4):
            case 0 if i < len(data):
                data[i] ^= 1 << rng.randrange(8)
            case 1:
                del data[i:]
            case 2:
                data[i:i] = rng.randbytes(rng.randint(1, 4))
            case _:
                data[i : i + 1] = b""
    return bytes(data)


def _random_json(rng: random.Random, depth: int = 0) -> object:
    roll = rng.random()
    if roll < 0.3 and depth < 3:
        return {f"k{rng.randrange(99)}": _random_json(rng, depth + 1) for _ in range(3)}
    if roll < 0.5 and depth < 3:
        return [_random_json(rng, depth + 1) for _ in range(rng.randrange(4))]
    if roll < 0.7:
        return "".join(
            chr(rng.choice([rng.randrange(32, 127), rng.randrange(160, 55000)])) for _ in range(8)
        )
    return rng.choice([None, True, rng.random() * 1e9, rng.randrange(-(2**60), 2**60)])


def _random_message(rng: random.Random) -> bytes:
    """A randomly generated message the server must take: well formed, random inside."""
    match rng.randrange(10):
        case 0 | 1:  # relayed to everyone: the costly kind for an in-process test
            entries = [
                AwarenessEntry(
                    rng.randrange(10**9, 2**53),
                    rng.randrange(2**53),
                    json.dumps(_random_json(rng)),
                )
                for _ in range(rng.randint(1, 3))
            ]
            return protocol.encode(AwarenessUpdate(protocol.encode_awareness(entries)))
        case 2 | 3:
            pairs = [
                (rng.randrange(10**9, 2**32), rng.randrange(2**31)) for _ in range(rng.randrange(4))
            ]
            vector = protocol.encode_varuint(len(pairs)) + b"".join(
                protocol.encode_varuint(c) + protocol.encode_varuint(k) for c, k in pairs
            )
            return protocol.encode(SyncStep1(vector))
        case 4 | 5 | 6:
            reason = "".join(chr(rng.randrange(32, 55000)) for _ in range(rng.randrange(20)))
            return protocol.encode(Auth(reason))
        case _:
            return protocol.encode(QueryAwareness())


def _frame(rng: random.Random, pool: list[bytes]) -> bytes | str:
    """One hostile frame; most are random messages the server takes, the rest close the socket."""
    roll = rng.random()
    if roll < 0.90:
        return _random_message(rng)
    if roll < 0.96:
        return _mutate(rng, rng.choice(pool))
    if roll < 0.98:
        kind = rng.choice([Update, SyncStep2, AwarenessUpdate])  # random bytes as a payload
        return protocol.encode(kind(rng.randbytes(rng.randint(0, 40))))
    if roll < 0.99:
        return rng.randbytes(rng.randint(0, 64))
    if roll < 0.995:
        return bytes([0, rng.randrange(3)]) + b"\xff" * rng.randint(1, 9)  # huge lengths
    return rng.choice(["hello", "\x00\x01", ""])  # text frames


def _is_step1(frame: bytes | str) -> bool:
    try:
        return isinstance(frame, bytes) and isinstance(protocol.decode(frame), SyncStep1)
    except ProtocolError:
        return False


@pytest.fixture
def config(tmp_path) -> Config:
    return Config(data_dir=str(tmp_path / "data"))


@pytest.mark.timeout(seconds=120)  # about 20 s alone; more on a loaded machine
async def test_fuzzing_many_connections_leaves_honest_clients_unharmed(
    ws_url, port, hub, monkeypatch
) -> None:
    processed = 0
    receive = Document.receive

    honest_peers: set[object] = set()

    def counting_receive(document, session, data):
        nonlocal processed
        if data != MARKER and session.peer not in honest_peers:
            processed += 1  # a hostile frame reached the decoder
        return receive(document, session, data)

    monkeypatch.setattr(Document, "receive", counting_receive)
    honest = [await YClient(ws_url("fuzz"), client_id=cid).connect() for cid in HONEST_IDS]
    honest_peers.update(hub.document("fuzz").room.peers)  # the server's side of them
    written: list[str] = []
    done = asyncio.Event()

    async def type_honestly(client: YClient, who: int) -> None:
        clock = 0
        while not done.is_set():
            word = f"h{who}w{clock} "
            client.text.insert(len(client.text), word)
            written.append(word)
            clock += 1
            client.set_awareness(HONEST_IDS[who], clock, f'{{"user":{who}}}')
            await asyncio.sleep(0.05)  # pacing: a person typing, not a wait

    stats = {"connections": 0, "closed": 0, "sent": 0}

    async def connect() -> WebSocketClientConnection | None:
        try:
            return await websocket_connect(ws_url("fuzz"))
        except HTTPClientError:  # e.g. the per-IP cap while closed sockets wind down
            return None

    async def fuzz(seed: int) -> None:
        rng = random.Random(seed)
        pool = _fuzz_pool(rng)
        while processed < FRAMES:
            ws = await eventually(connect, interval=0.01)
            stats["connections"] += 1
            inbox: asyncio.Queue[bytes | str | None] = asyncio.Queue()

            async def pump(ws=ws, inbox=inbox) -> None:  # read everything, as clients must
                while (message := await ws.read_message()) is not None:
                    inbox.put_nowait(message)
                inbox.put_nowait(None)

            reader = asyncio.ensure_future(pump())
            try:
                while processed < FRAMES:
                    steps = 1  # each sync step 1 the server takes is answered with a step 2
                    for _ in range(6):
                        frame = _frame(rng, pool)
                        ws.write_message(frame, binary=isinstance(frame, bytes))
                        stats["sent"] += 1
                        steps += _is_step1(frame)
                    ws.write_message(MARKER, binary=True)
                    reply: bytes | str | None = b""
                    while steps and (reply := await inbox.get()) is not None:
                        steps -= isinstance(reply, bytes) and reply[:2] == b"\x00\x01"
                    if reply is None:  # closed by the server
                        stats["closed"] += 1
                        break
            except WebSocketClosedError:
                stats["closed"] += 1
            finally:
                ws.close()
                await reader

    started = time.monotonic()
    typists = [asyncio.ensure_future(type_honestly(c, i)) for i, c in enumerate(honest)]
    await asyncio.wait_for(asyncio.gather(*(fuzz(seed) for seed in range(FUZZERS))), 110)
    done.set()
    await asyncio.gather(*typists)
    elapsed = time.monotonic() - started

    assert processed >= FRAMES
    assert stats["closed"] >= 100, stats  # the server refused plenty, one connection at a time
    health = await AsyncHTTPClient().fetch(f"http://127.0.0.1:{port}/healthz")
    assert health.code == 200 and health.body == b"ok"
    assert all(c.close_code is None and not c.closed.is_set() for c in honest)

    server = hub.document("fuzz").room
    await eventually(lambda: all(str(c.text) == server.text for c in honest))
    assert sorted(server.text.split()) == sorted(w.strip() for w in written)
    print(f"\nfuzz: {processed} frames processed in {elapsed:.1f}s, {stats}")
