from tests.yclient import YClient, eventually


async def test_two_clients_converge(ws_url, http_client, port):
    a = await YClient(ws_url("doc")).connect()
    b = await YClient(ws_url("doc")).connect()
    a.text.insert(0, "hello")
    await eventually(lambda: str(b.text) == "hello")
    r = await http_client.fetch(f"http://127.0.0.1:{port}/api/docs/doc/text")
    assert r.body == b"hello"
    await a.close(); await b.close()
