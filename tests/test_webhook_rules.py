"""Webhook rules without I/O: signatures (golden vector), secrets, payloads, backoff,
Retry-After, and the outbox that coalesces document.changed per document."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from collab.core.outbox import Outbox
from collab.core.webhooks import (
    Event,
    check_url,
    encode_body,
    encode_secret,
    iso8601,
    merge,
    message_id,
    outcome,
    parse_events,
    parse_retry_after,
    parse_secret,
    retry_delay,
    sign,
)

# The test vector of the Standard Webhooks reference libraries.
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
MSG_ID, TIMESTAMP, PAYLOAD = "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}'
SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_signature_matches_the_standard_webhooks_test_vector():
    assert sign([parse_secret(SECRET)], MSG_ID, TIMESTAMP, PAYLOAD) == SIGNATURE


def test_rotation_sends_one_signature_per_secret_and_each_verifies_independently():
    other = encode_secret(bytes(range(32)))
    now = int(datetime.now(UTC).timestamp())
    header = sign([parse_secret(SECRET), parse_secret(other)], MSG_ID, now, PAYLOAD)
    assert len(header.split(" ")) == 2 and all(s.startswith("v1,") for s in header.split(" "))
    headers = {"webhook-id": MSG_ID, "webhook-timestamp": str(now), "webhook-signature": header}
    for secret in (SECRET, other):
        assert Webhook(secret).verify(PAYLOAD, headers) == {"test": 2432232314}
    with pytest.raises(WebhookVerificationError):  # the id is signed too
        Webhook(SECRET).verify(PAYLOAD, {**headers, "webhook-id": "msg_other"})
    with pytest.raises(WebhookVerificationError):
        Webhook(encode_secret(b"x" * 32)).verify(PAYLOAD, headers)


@pytest.mark.parametrize(
    "secret",
    ["MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_not base64!", "whsec_" + "QUJD", ""],
)
def test_bad_secrets_are_refused(secret):
    with pytest.raises(ValueError, match="webhook secret"):
        parse_secret(secret)


def test_a_fresh_secret_round_trips():
    key = bytes(range(32))
    assert parse_secret(encode_secret(key)) == key


def test_message_ids_are_deterministic_per_event():
    a = message_id("version.created", "notes", "7")
    assert a == message_id("version.created", "notes", "7") and a.startswith("msg_")
    assert a != message_id("version.created", "notes", "8")
    assert a != message_id("version.created", "notes7", "")  # parts cannot run together


@given(st.floats(min_value=0, max_value=4e9, allow_nan=False))
def test_iso8601_agrees_with_datetime(seconds):
    millis = round(seconds * 1000)
    expected = datetime.fromtimestamp(millis // 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    assert iso8601(seconds) == f"{expected}.{millis % 1000:03d}Z"


def test_the_body_is_thin_minified_json():
    event = Event("document.changed", "team/notes", 1764615731.532, "msg_1", ("ann",),
                  {"updates": 3, "bytes": 120}, 1764615730.0, {"clients": 2})  # fmt: skip
    body = encode_body(event)
    assert b" " not in body
    assert json.loads(body) == {
        "type": "document.changed",
        "timestamp": "2025-12-01T19:02:11.532Z",
        "data": {
            "name": "team/notes",
            "time": "2025-12-01T19:02:11.532Z",
            "first_change": "2025-12-01T19:02:10.000Z",
            "who": ["ann"],
            "counts": {"updates": 3, "bytes": 120},
            "clients": 2,
        },
    }


@pytest.mark.parametrize(
    ("status", "expected"),
    [(200, "ok"), (204, "ok"), (299, "ok"), (301, "retry"), (302, "retry"), (400, "retry"),
     (404, "retry"), (410, "gone"), (429, "retry"), (500, "retry"), (503, "retry"),
     (None, "retry")],
)  # fmt: skip
def test_what_an_answer_means(status, expected):
    assert outcome(status) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, None), ("", None), ("soon", None), ("120", 120.0), (" 7 ", 7.0),
     ("Wed, 21 Oct 2015 07:28:00 GMT", 30.0), ("Wed, 21 Oct 2015 07:27:00 GMT", 0.0)],
)  # fmt: skip
def test_retry_after_is_seconds_or_an_http_date(value, expected):
    now = datetime(2015, 10, 21, 7, 27, 30, tzinfo=UTC).timestamp()
    assert parse_retry_after(value, now) == expected


@pytest.mark.parametrize(
    ("attempt", "rand", "retry_after", "expected"),
    [(0, 0.0, None, 2.5), (0, 0.999999, None, 5.0), (1, 0.0, None, 5.0), (3, 0.5, None, 30.0),
     (10, 0.0, None, 50.0), (10, 0.99999999, None, 100.0),  # capped at 100
     (0, 0.0, 60.0, 60.0), (0, 0.0, 1.0, 2.5), (0, 0.0, 1e6, 100.0)],  # Retry-After: a floor
)  # fmt: skip
def test_backoff_doubles_with_jitter_honours_retry_after_and_is_capped(
    attempt, rand, retry_after, expected
):
    assert retry_delay(attempt, 5.0, 100.0, rand, retry_after) == pytest.approx(expected)


def test_event_names_and_urls_are_checked():
    assert parse_events(["connection.opened", " document.created", ""]) == (
        "document.created",
        "connection.opened",
    )
    with pytest.raises(ValueError, match=r"unknown webhook event 'document\.typo'"):
        parse_events(["document.typo"])
    assert check_url("https://example.test/hook?x=1")
    for bad in ("ftp://h/x", "http://", "//h/x", "http://user:pw@h/x", "h/x"):
        with pytest.raises(ValueError, match=r"http:// or https://"):
            check_url(bad)


def changed(name: str, at: float, updates: int = 1, who: str = "ann", clients: int = 1) -> Event:
    return Event("document.changed", name, at, f"msg_{name}_{at}", (who,),
                 {"updates": updates, "bytes": 10 * updates, "clients": clients}, at)  # fmt: skip


def test_merge_sums_counts_unites_who_and_keeps_the_first_change():
    both = merge(changed("a", 1.0, 2, "ann", clients=3), changed("a", 5.0, 3, "bob", clients=1))
    assert both.counts == {"updates": 5, "bytes": 50, "clients": 1}  # clients: now, not a sum
    assert (both.first, both.time, both.who, both.id) == (1.0, 5.0, ("ann", "bob"), "msg_a_5.0")


def test_waiting_changes_coalesce_per_document_and_other_events_do_not():
    box = Outbox(limit=100)
    box.put(changed("a", 1.0), now=1.0)
    box.put(changed("b", 1.5), now=1.5)
    box.put(changed("a", 2.0, 4), now=2.0)
    box.put(Event("document.deleted", "c", 2.5, "msg_d"), now=2.5)
    box.put(Event("document.deleted", "c", 2.6, "msg_e"), now=2.6)
    summary = [(p.event.type, p.event.name, p.event.counts.get("updates")) for p in box.items]
    assert summary == [
        ("document.changed", "a", 5),
        ("document.changed", "b", 1),
        ("document.deleted", "c", None),
        ("document.deleted", "c", None),
    ]
    assert box.items[0].event.first == 1.0 and box.items[0].due == 1.0


def test_a_change_in_flight_is_not_touched_and_a_failed_one_folds_into_the_newer():
    box = Outbox(limit=100)
    box.put(changed("a", 1.0, 2), now=1.0)
    flying = box.next_due(now=1.0)
    assert flying is not None and box.next_due(now=1.0) is None
    box.put(changed("a", 2.0, 3), now=2.0)  # waits beside the one in flight
    assert len(box) == 2 and flying.event.counts["updates"] == 2
    box.retry(flying, due=9.0)  # failed: one pending change remains, with everything
    (only,) = box.items
    assert only.event.counts["updates"] == 5 and only.event.first == 1.0
    assert only.attempt == 1 and only.due == 9.0  # the backoff still holds
    assert box.next_due(now=8.9) is None and box.earliest() == 9.0
    assert box.next_due(now=9.0) is only
    box.done(only)
    assert len(box) == 0 and box.earliest() is None


def test_the_outbox_is_bounded_dropping_the_oldest_waiting_event():
    box = Outbox(limit=2)
    assert box.put(changed("a", 1.0), 1.0) is None
    box.next_due(1.0)  # in flight: never dropped
    assert box.put(changed("b", 2.0), 2.0) is None
    assert box.put(changed("c", 3.0), 3.0) is None
    dropped = box.put(changed("d", 4.0), 4.0)
    assert dropped is not None and dropped.name == "b"
    assert [p.event.name for p in box.items] == ["a", "c", "d"]
    assert [e.name for e in box.clear()] == ["c", "d"] and len(box) == 1
