"""Webhooks against real receivers on 127.0.0.1: signatures checked with the independent
``standardwebhooks`` package, debounce per document, retries, 410, a hung receiver, the CLI."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time

import jwt
import pytest
from standardwebhooks.webhooks import WebhookVerificationError
from tornado.httpclient import AsyncHTTPClient

from collab import Config, Hub, cli
from collab.core.auth import Permission
from collab.core.webhooks import ALL_EVENTS, parse_secret
from collab.server.delivery import CONCURRENCY
from collab.server.extensions import RestoreEvent, VersionEvent
from collab.server.webhooks import Webhooks
from collab.tornado.webhooks import webhooks
from tests.peers import Editor, RecordingPeer
from tests.readme import example
from tests.receiver import HANG, SECRET, SECRET_OLD, Delivery, Receiver
from tests.server import ServerProcess, free_port
from tests.wait import eventually
from tests.yclient import YClient

FAST = {
    "webhook_secrets": (SECRET, SECRET_OLD),
    "webhook_events": ALL_EVENTS,
    "webhook_debounce": 0.2,
    "webhook_max_wait": 3.0,
    "webhook_retry_delay": 0.05,
    "webhook_retry_max": 1.5,
    "webhook_timeout": 5.0,
    "webhook_grace": 1.0,
}


@pytest.fixture
def receiver(io_loop):
    r = Receiver()
    yield r
    io_loop.run_sync(r.stop)


@pytest.fixture
def witness(io_loop):
    """A second endpoint that always answers 204."""
    r = Receiver()
    yield r
    io_loop.run_sync(r.stop)


@pytest.fixture
def config(tmp_path, receiver, witness) -> Config:
    return Config(data_dir=str(tmp_path / "data"), webhooks=(receiver.url, witness.url), **FAST)


def webhook_extensions(hub: Hub) -> list[Webhooks]:
    hooks = hub.extensions.hooks["on_change"]
    return [h.__self__ for h in hooks if isinstance(getattr(h, "__self__", None), Webhooks)]


async def scrape(port: int) -> str:
    response = await AsyncHTTPClient().fetch(f"http://127.0.0.1:{port}/metrics")
    return response.body.decode()


async def test_every_delivery_verifies_with_each_secret_and_tampering_fails(
    ws_url, receiver, witness
):
    client = await YClient(ws_url("notes")).connect()
    client.text += "hello"
    await eventually(lambda: receiver.of("document.changed", ok=True))
    await client.close()
    await eventually(lambda: receiver.of("connection.closed", ok=True))
    assert {d.type for d in receiver.deliveries} >= {
        "document.created", "connection.opened", "document.changed", "connection.closed",
    }  # fmt: skip
    for delivery in receiver.deliveries:
        assert delivery.headers["content-type"] == "application/json"
        for secret in (SECRET, SECRET_OLD):  # rotation: both signatures verify
            assert receiver.verify(delivery, secret) == delivery.event
        flipped = bytearray(delivery.body)
        flipped[-2] ^= 1
        for tampered in (
            {"body": bytes(flipped)},
            {"headers": {**delivery.headers, "webhook-id": delivery.headers["webhook-id"] + "x"}},
            {
                "headers": {
                    **delivery.headers,
                    "webhook-timestamp": str(int(delivery.headers["webhook-timestamp"]) - 1),
                }
            },
        ):
            copy = dataclasses.replace(delivery, **tampered)
            with pytest.raises(WebhookVerificationError):
                receiver.verify(copy)
    (changed,) = receiver.of("document.changed")
    data = changed.event["data"]
    assert data["name"] == "notes" and data["counts"]["updates"] >= 1
    assert "text" not in data  # only with --webhook-include-text
    assert data["who"] and data["counts"]["clients"] == 1
    assert receiver.of("connection.opened")[0].event["data"]["counts"]["clients"] == 1
    await eventually(lambda: len(witness.deliveries) == len(receiver.deliveries))
    ids = {d.headers["webhook-id"] for d in receiver.deliveries}
    assert ids == {d.headers["webhook-id"] for d in witness.deliveries}  # one id per event


async def test_two_documents_edited_within_the_window_are_both_reported(ws_url, receiver):
    a, b = await YClient(ws_url("a")).connect(), await YClient(ws_url("b")).connect()
    for i in range(5):
        a.text += f"a{i}"
        b.text += f"b{i}"
    await a.roundtrip()
    await b.roundtrip()
    await eventually(lambda: {d.event["data"]["name"] for d in receiver.of("document.changed")}
                     == {"a", "b"})  # fmt: skip
    for name in ("a", "b"):  # debounced: one event per document for the burst
        (event,) = [
            d.event for d in receiver.of("document.changed") if d.event["data"]["name"] == name
        ]
        assert event["data"]["counts"]["updates"] == 5
        created = [d for d in receiver.of("document.created") if d.event["data"]["name"] == name]
        assert len(created) == 1
    await a.close()
    await b.close()


async def test_retries_after_500s_with_the_same_id_and_fresh_timestamps(ws_url, receiver, port):
    receiver.script = [500, (503, {"Retry-After": "1"}), 500]
    receiver.scripted = "document.created"
    client = await YClient(ws_url("r")).connect()
    client.text += "x"
    created = await eventually(lambda: receiver.of("document.created", ok=True))
    attempts = [d for d in receiver.of("document.created")]
    assert [d.status for d in attempts] == [500, 503, 500, 204]
    assert len({d.headers["webhook-id"] for d in attempts}) == 1
    stamps = [int(d.headers["webhook-timestamp"]) for d in attempts]
    assert stamps == sorted(stamps) and stamps[-1] > stamps[0]  # Retry-After: 1 s passed
    assert (
        attempts[2].at - attempts[1].at >= 1.0
    )  # honoured, more than the backoff (0.05 s, doubling)
    for d in attempts:
        receiver.verify(d)
    assert created
    metrics = await scrape(port)
    assert 'collab_webhook_deliveries_total{outcome="retry"} 3.0' in metrics
    await client.close()


async def test_a_closed_port_is_retried_until_a_receiver_listens():
    port = free_port()  # nobody listens yet: connection refused
    config = Config(data_dir=None, webhooks=(f"http://127.0.0.1:{port}/hook",), **FAST)
    hub = Hub(config)
    hub.use(webhooks(hub))
    session = await hub.join("late", RecordingPeer(), Permission(user="ann"))
    session.receive(Editor().type("hi"))
    sample = hub.metrics.registry.get_sample_value
    await eventually(
        lambda: (sample("collab_webhook_deliveries_total", {"outcome": "retry"}) or 0) >= 2
    )
    receiver = Receiver(port=port)
    try:
        changed = await eventually(lambda: receiver.of("document.changed", ok=True))
        assert changed[0].event["data"]["who"] == ["ann"]
        session.leave()
        await hub.close(timeout=1)
    finally:
        await receiver.stop()


async def test_410_disables_the_endpoint_and_the_others_go_on(ws_url, receiver, witness, hub, port):
    receiver.default = 410
    client = await YClient(ws_url("g")).connect()
    client.text += "x"
    await eventually(lambda: witness.of("document.changed", ok=True))
    client.text += "y"
    await client.close()
    await hub.close(timeout=1)  # sends all that is pending, within the grace
    assert len(witness.of("document.changed")) == 2
    assert len(receiver.deliveries) == 1 and receiver.deliveries[0].status == 410
    sample = hub.metrics.registry.get_sample_value
    assert sample("collab_webhook_deliveries_total", {"outcome": "disabled"}) == 1


async def test_a_hung_receiver_never_delays_relays(ws_url, receiver, hub):
    receiver.default = HANG
    a = await YClient(ws_url("busy")).connect()
    b = await YClient(ws_url("busy")).connect()
    worst = 0.0
    for i in range(30):  # each edit makes a webhook event pile up behind the hung receiver
        start = time.monotonic()
        a.text += str(i % 10)
        await eventually(lambda n=i + 1: len(str(b.text)) == n, timeout=5, interval=0.001)
        worst = max(worst, time.monotonic() - start)
        await asyncio.sleep(0.01 if i % 10 else 0.25)  # quiet gaps: changed events fall due
    assert receiver.deliveries and all(d.status is None for d in receiver.deliveries)
    assert worst < 1.0, f"a relay took {worst:.3f} s while the receiver hung"
    (endpoint, _) = next(w.endpoints for w in webhook_extensions(hub))
    assert len(endpoint.outbox) > CONCURRENCY  # four hang, the rest wait their turn
    turns = endpoint.turns
    await asyncio.sleep(0.3)  # nothing lands, nothing falls due: the worker must sleep
    assert endpoint.turns - turns <= 2, "the delivery worker spins while its requests hang"
    await a.close()
    await b.close()


async def test_version_and_restore_events_from_the_history_hooks(app, hub, receiver):
    now = time.time()
    event = VersionEvent("paper", "7", "draft", "named", ("ann", "bob"), now)
    hub.extensions.after("on_version", event)
    hub.extensions.after("on_version", event)  # the same version again: the same id
    hub.extensions.after("on_restore", RestoreEvent("paper", "7", "ann", now + 1))
    await eventually(lambda: len(receiver.of("document.restored", ok=True)) == 1)
    first, again = receiver.of("version.created")
    assert first.headers["webhook-id"] == again.headers["webhook-id"]
    assert first.event["data"] == {
        "name": "paper", "time": first.event["timestamp"], "who": ["ann", "bob"], "counts": {},
        "version": "7", "label": "draft", "reason": "named",
    }  # fmt: skip
    restored = receiver.of("document.restored")[0].event["data"]
    assert (restored["version"], restored["who"]) == ("7", ["ann"])


async def test_a_deleted_document_gets_no_change_after_document_deleted(
    ws_url, receiver, port, hub
):
    client = await YClient(ws_url("gone")).connect()
    client.text += "soon deleted"
    await client.roundtrip()
    response = await AsyncHTTPClient().fetch(
        f"http://127.0.0.1:{port}/api/docs/gone", method="DELETE", raise_error=False
    )
    assert response.code == 204
    await eventually(lambda: receiver.of("document.deleted", ok=True))
    await client.close()
    await hub.close(timeout=1)  # anything pending would go out now
    types = [d.type for d in receiver.deliveries if d.event["data"]["name"] == "gone"]
    # (a loaded machine may pass the debounce before the DELETE: a change before it is fine)
    assert "document.changed" not in types[types.index("document.deleted") :]
    assert types.index("document.created") < types.index("document.deleted")


async def test_the_cli_sends_signed_events_with_text_and_the_token_sub_never_the_token(
    tmp_path, io_loop
):
    receiver = Receiver()
    secret = "jwt-secret-" * 4
    tok = jwt.encode({"sub": "ann", "exp": time.time() + 60}, secret, algorithm="HS256")
    server = ServerProcess(
        tmp_path / "data", "--jwt-secret", secret,
        "--webhook", receiver.url, "--webhook-secret", SECRET,
        "--webhook-debounce", "0.2", "--webhook-include-text",
    )  # fmt: skip
    try:
        server.start()
        client = await YClient(f"{server.ws}/cli?token={tok}").connect()
        client.text += "typed in a real client"
        changed = await eventually(lambda: receiver.of("document.changed", ok=True))
        data = changed[0].event["data"]
        assert (data["text"], data["who"]) == ("typed in a real client", ["ann"])
        assert receiver.of("document.created")[0].event["data"]["who"] == ["ann"]
        assert not receiver.of("connection.opened")  # opt-in: not in the default events
        for delivery in receiver.deliveries:
            receiver.verify(delivery)
            assert tok.encode() not in delivery.body and tok not in str(delivery.headers)
        await client.close()
        await asyncio.get_running_loop().run_in_executor(None, server.stop)
    finally:
        if server.proc is not None:
            server.kill()
        await receiver.stop()
    assert "Traceback" not in server.output()


def ids(deliveries: list[Delivery]) -> set[str]:
    return {d.headers["webhook-id"] for d in deliveries}


async def test_changes_coalesce_while_the_receiver_fails(ws_url, receiver):
    receiver.scripted, receiver.script = "document.changed", [500] * 1000
    client = await YClient(ws_url("down")).connect()
    for burst in range(1, 4):  # three bursts, each debounced into its own event
        client.text += f"burst {burst}. "
        await eventually(lambda n=burst: len(ids(receiver.of("document.changed"))) >= n)
    receiver.script.clear()  # the receiver is back
    ok = await eventually(lambda: receiver.of("document.changed", ok=True))
    await client.close()
    await eventually(lambda: sum(d.event["data"]["counts"]["updates"] for d in receiver.of(
        "document.changed", ok=True)) == 3)  # fmt: skip
    assert len(receiver.of("document.changed", ok=True)) < 3  # not one per burst: merged
    assert ok[0].event["data"]["first_change"] < ok[-1].event["data"]["time"]


def serve_config(*args: str) -> Config:
    return cli._config(cli._parser().parse_args(["serve", *args]))


def test_flags_and_variables_configure_webhooks(monkeypatch, capsys):
    config = serve_config(
        "--webhook", "http://127.0.0.1:9/a", "--webhook", "https://hooks.example/b",
        "--webhook-secret", f"{SECRET},{SECRET_OLD}", "--webhook-events",
        "document.changed,connection.opened", "--webhook-debounce", "0.5",
    )  # fmt: skip
    assert config.webhooks == ("http://127.0.0.1:9/a", "https://hooks.example/b")
    assert config.webhook_secrets == (SECRET, SECRET_OLD)
    assert config.webhook_events == ("document.changed", "connection.opened")
    assert (config.webhook_debounce, config.webhook_include_text) == (0.5, False)
    monkeypatch.setenv("COLLAB_WEBHOOK", "http://127.0.0.1:9/env")
    monkeypatch.setenv("COLLAB_WEBHOOK_SECRET", SECRET)
    monkeypatch.setenv("COLLAB_WEBHOOK_INCLUDE_TEXT", "yes")
    config = serve_config()
    assert (config.webhooks, config.webhook_secrets) == (("http://127.0.0.1:9/env",), (SECRET,))
    assert config.webhook_include_text and config.webhook_events == Config().webhook_events
    assert serve_config("--webhook-secret", SECRET_OLD).webhook_secrets == (SECRET_OLD,)
    assert cli.main(["webhook-secret"]) == 0
    secret = capsys.readouterr().out.strip()
    assert len(parse_secret(secret)) == 32


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--webhook", "http://127.0.0.1:9/a"], "collab: --webhook needs --webhook-secret"),
        (["--webhook", "ftp://h/a", "--webhook-secret", SECRET], "collab: a webhook must be"),
        (["--webhook-secret", "s3cret"], "collab: a webhook secret must look like whsec_"),
        (["--webhook-events", "document.typo"], "collab: unknown webhook event 'document.typo'"),
        (["--webhook-retries", "-1"], "collab: --webhook-retries: must be a number >= 0"),
    ],
)
def test_bad_webhook_settings_stop_the_server_in_one_line(args, message, capsys):
    assert cli.main(["serve", "--memory", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1, err


async def test_the_readme_example_gets_the_same_events_as_the_webhooks(receiver):
    hub, notify = example("webhooks")["make_hub"](receiver.url, SECRET)
    session = await hub.join("shared", RecordingPeer(), Permission(user="ann"))
    session.receive(Editor().type("hi"))
    hub.extensions.after("on_version", VersionEvent("shared", "1", None, "quiet", ("ann",), 1.0))
    await eventually(lambda: receiver.of("version.created", ok=True))
    session.leave()
    await hub.close(timeout=1)  # pending changes go out on both paths
    sent = [(d.type, d.event["data"]["name"]) for d in receiver.deliveries]
    assert sorted(notify.seen) == sorted(sent)  # history's own "stop" version too
    assert set(sent) == {
        ("document.changed", "shared"), ("document.created", "shared"),
        ("version.created", "shared"),
    }  # fmt: skip
    verified = example("verify")["verified"]
    for delivery in receiver.deliveries:
        assert verified(delivery.body, delivery.headers, SECRET) == delivery.event
        assert verified(delivery.body + b" ", delivery.headers, SECRET) is None


async def test_a_shared_claim_sends_each_event_once_across_processes(receiver):
    claimed: set[str] = set()

    async def claim(event_id: str) -> bool:  # what Redis SET NX answers
        await asyncio.sleep(0)
        fresh = event_id not in claimed
        claimed.add(event_id)
        return fresh

    config = Config(data_dir=None, webhooks=(receiver.url,), **FAST)
    hubs = [Hub(config) for _ in range(2)]
    for hub in hubs:
        hub.use(webhooks(hub, claim=claim))
        hub.extensions.after("on_version", VersionEvent("doc", "3", None, "quiet", (), 1.0))
        hub.extensions.after("on_restore", RestoreEvent("doc", "3", None, 2.0))
    for hub in hubs:
        await hub.close(timeout=1)
    assert len(receiver.of("version.created")) == 1  # the same id in both: claimed once
    assert len(receiver.of("document.restored")) == 1
    assert len(claimed) == 2


async def test_in_cluster_mode_redis_claims_each_event_once(receiver, redis_server, redis_prefix):
    config = Config(data_dir=None, webhooks=(receiver.url,), redis_url=redis_server.url,
                    redis_prefix=redis_prefix, **FAST)  # fmt: skip
    hubs = [Hub(config) for _ in range(2)]  # two processes of one cluster
    for hub in hubs:
        await hub.start()
        hub.use(webhooks(hub))  # the claim is the Redis store's (SET NX)
        hub.extensions.after("on_version", VersionEvent("doc", "3", None, "quiet", (), 1.0))
    for hub in hubs:
        await hub.close(timeout=1)
    assert len(receiver.of("version.created")) == 1
    assert redis_server.client().keys(f"{redis_prefix}:claim:*")


async def test_when_the_claim_fails_the_event_is_sent_anyway(receiver):
    async def claim(event_id: str) -> bool:
        raise ConnectionError("redis down")

    hub = Hub(Config(data_dir=None, webhooks=(receiver.url,), **FAST))
    hub.use(webhooks(hub, claim=claim))
    hub.extensions.after("on_version", VersionEvent("doc", "3", None, "quiet", (), 1.0))
    await hub.close(timeout=1)
    assert len(receiver.of("version.created", ok=True)) == 1


def test_plain_http_off_this_machine_is_warned_about(caplog):
    urls = ("http://hooks.example/a", "https://hooks.example/b", "http://127.0.0.1:9/c")
    hub = Hub(Config(data_dir=None, webhooks=urls, webhook_secrets=(SECRET,)))
    webhooks(hub).transport.close()
    warned = [r.getMessage() for r in caplog.records if r.name == "collab.webhooks"]
    assert warned == [
        "webhook http://hooks.example/a is not https: bodies and signatures travel in clear"
    ]


async def test_sigterm_exits_promptly_while_a_receiver_hangs(tmp_path, io_loop):
    receiver = Receiver(default=HANG)
    server = ServerProcess(
        tmp_path / "data", "--webhook", receiver.url, "--webhook-secret", SECRET,
        "--webhook-debounce", "0.1", "--webhook-grace", "0.5",
    )  # fmt: skip
    try:
        server.start()
        client = await YClient(f"{server.ws}/stuck").connect()
        client.text += "x"
        await eventually(lambda: receiver.of("document.changed"))  # in flight, unanswered
        await client.close()
        stop = asyncio.get_running_loop().run_in_executor(None, server.stop, 5.0)
        assert await stop == 0  # within the grace, not the 10 s request timeout
    finally:
        if server.proc is not None:
            server.kill()
        await receiver.stop()
    assert "undelivered event(s) dropped at shutdown" in server.output()


async def test_real_history_sends_version_created_and_document_restored(ws_url, receiver, port):
    client = await YClient(ws_url("hist")).connect()
    client.text += "first draft"
    await client.roundtrip()
    http = AsyncHTTPClient()
    base = f"http://127.0.0.1:{port}/api/docs/hist/versions"
    named = await http.fetch(base, method="POST", body='{"label": "Draft"}')
    version = json.loads(named.body)
    client.text += ", then more"
    await client.roundtrip()
    restore = await http.fetch(f"{base}/{version['id']}/restore", method="POST", body="")
    assert json.loads(restore.body)["changed"] is True
    await eventually(lambda: str(client.text) == "first draft")
    restored = await eventually(lambda: receiver.of("document.restored", ok=True))
    assert restored[0].event["data"]["version"] == str(version["id"])
    labels = [d.event["data"]["label"] for d in receiver.of("version.created", ok=True)]
    assert "Draft" in labels
    for delivery in receiver.deliveries:
        receiver.verify(delivery)
    await client.close()
