"""Interop with Python Yjs clients (pycrdt over a real WebSocket): convergence.

Three ``YClient``s edit one document concurrently against a live server; they
converge, and a fresh client and the REST API see the same text.
"""

from __future__ import annotations

import asyncio
import random
from urllib.parse import quote

from pycrdt import Doc, Text

from tests.jsclient import wait_until
from tests.yclient import YClient, eventually

OPS = 300


async def random_edits(client: YClient, seed: int, ops: int, label: str, pace: float = 0.0) -> int:
    """Seeded random inserts/deletes on ``client.text``, each sent as it happens.

    Mirrors ``tests/js/peer.mjs`` ``edit``: a fifth of the inserts go to
    position 0, where every client collides.

    Args:
        pace: seconds to pause after each edit (0: just yield), to keep pace
            with slower clients so the edits overlap in time.

    Returns:
        how many frames the client received while it was editing (more than
        zero shows the edits really were concurrent with the others').
    """
    received = len(client.received)
    rnd = random.Random(seed)
    text = client.text
    for i in range(ops):
        length = len(text)
        r = rnd.random()
        word = f"{label}{i} "
        if length > 0 and r < 0.3:
            pos = rnd.randrange(length)
            del text[pos : min(length, pos + 1 + rnd.randrange(6))]
        elif r < 0.5:
            text.insert(0, word)
        elif r < 0.6:
            text.insert(length, word)
        else:
            text.insert(rnd.randint(0, length), word)
        # Not a wait: yield to the loop so other clients' updates land between edits.
        await asyncio.sleep(pace)
    return len(client.received) - received


def state_vector(doc: Doc) -> dict[int, int]:
    """Decode ``doc``'s state vector: client id -> clock (lib0 varuints)."""
    data = doc.get_state()
    pos = 0

    def varuint() -> int:
        nonlocal pos
        n = shift = 0
        while True:
            byte = data[pos]
            pos += 1
            n |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                return n

    return {varuint(): varuint() for _ in range(varuint())}


def converged(docs: list[Doc]) -> bool:
    """Same text, and every doc holds every other doc's operations."""
    svs = [state_vector(doc) for doc in docs]
    texts = [str(doc.get("content", type=Text)) for doc in docs]
    assert all(sv == svs[0] for sv in svs), f"state vectors differ: {svs}"
    assert all(t == texts[0] for t in texts), "texts differ"
    return True


async def test_three_python_clients_converge(ws_url, http_server_client):
    name = "py converge"
    clients = [await YClient(ws_url(quote(name))).connect() for _ in range(3)]
    during = await asyncio.gather(
        *(random_edits(c, seed=100 + i, ops=OPS, label="abc"[i]) for i, c in enumerate(clients))
    )
    assert all(n > 0 for n in during), f"edits did not interleave: {during}"
    ids = {c.doc.client_id for c in clients}
    await eventually(lambda: all(set(state_vector(c.doc)) >= ids for c in clients), 15)
    await eventually(lambda: converged([c.doc for c in clients]), 15)
    text = str(clients[0].text)
    assert len(text) > OPS  # the edits did not cancel out

    fresh = await YClient(ws_url(quote(name))).connect()
    assert str(fresh.text) == text
    assert state_vector(fresh.doc) == state_vector(clients[0].doc)
    response = await http_server_client.fetch(f"/api/docs/{quote(name, safe='')}/text")
    assert response.body.decode() == text
    for client in [*clients, fresh]:
        await client.close()


async def test_python_late_joiner_gets_state_from_server(ws_url, http_server_client):
    url = ws_url("py-late")
    first = await YClient(url).connect()
    first.text.insert(0, "written before anyone else came")

    async def stored() -> bool:
        response = await http_server_client.fetch("/api/docs/py-late/text", raise_error=False)
        return response.code == 200 and response.body == b"written before anyone else came"

    await wait_until(stored, 5)
    await first.close()
    # The writer is gone: the joiner can only get the text from the server.
    late = await YClient(url).connect()
    assert str(late.text) == "written before anyone else came"
    response = await http_server_client.fetch("/api/docs/py-late/text")
    assert response.body.decode() == "written before anyone else came"
    await late.close()
