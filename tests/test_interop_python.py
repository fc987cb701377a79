"""Interop with Python Yjs clients (pycrdt over a real WebSocket): convergence.

Three ``YClient``s edit one document concurrently against a live server; they
converge, and a fresh client and the REST API see the same text.
"""

from __future__ import annotations

import asyncio
from urllib.parse import quote

from pycrdt import Doc, Text

from tests.crdt import random_edits, state_vector
from tests.wait import eventually
from tests.yclient import YClient

OPS = 300


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

    await eventually(stored, 5)
    await first.close()
    # The writer is gone: the joiner can only get the text from the server.
    late = await YClient(url).connect()
    assert str(late.text) == "written before anyone else came"
    response = await http_server_client.fetch("/api/docs/py-late/text")
    assert response.body.decode() == "written before anyone else came"
    await late.close()
