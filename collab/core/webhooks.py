"""Webhooks after Standard Webhooks (standardwebhooks.com): secrets, signatures,
message ids, event payloads and the retry rules, as pure functions.

Rule: pure; no I/O, no clock, no randomness (callers pass ``now`` and a
uniform ``rand`` in [0, 1)). ``server.webhooks`` sends what this builds.

A delivery is ``POST url`` with the body below and three headers:
``webhook-id`` (stable across retries), ``webhook-timestamp`` (unix seconds of
this attempt) and ``webhook-signature``, a space-separated list of
``v1,<base64 HMAC-SHA256(secret, id + "." + timestamp + "." + body)>``, one per
secret (rotation: receivers accept any). Secrets are ``whsec_<base64>``.
The body is minified JSON ``{"type", "timestamp", "data"}``; ``data`` is thin:
``name``, ``time``, ``who`` and ``counts``, plus what the event type adds.
"""

from __future__ import annotations

import base64
import binascii
import calendar
import hashlib
import hmac
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from email.utils import parsedate_tz
from typing import Any, Literal

__all__ = [
    "ALL_EVENTS",
    "DEFAULT_EVENTS",
    "Event",
    "MIN_SECRET_BYTES",
    "check_url",
    "encode_body",
    "encode_secret",
    "iso8601",
    "merge",
    "message_id",
    "outcome",
    "parse_events",
    "parse_retry_after",
    "parse_secret",
    "retry_delay",
    "sign",
]

DEFAULT_EVENTS = (
    "document.created",
    "document.changed",
    "document.deleted",
    "version.created",
    "document.restored",
)
ALL_EVENTS = (*DEFAULT_EVENTS, "connection.opened", "connection.closed")
GAUGES = frozenset({"clients"})  # counts that say "now", not "how many since"
MIN_SECRET_BYTES = 24  # Standard Webhooks: 24 to 64 bytes
_PREFIX = "whsec_"


def parse_secret(secret: str) -> bytes:
    """The key bytes of ``whsec_<base64>``.

    Raises:
        ValueError: not ``whsec_`` followed by base64 of at least 24 bytes.
    """
    if not secret.startswith(_PREFIX):
        raise ValueError("a webhook secret must look like whsec_<base64>")
    try:
        key = base64.b64decode(secret[len(_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("a webhook secret must be whsec_ followed by base64") from None
    if len(key) < MIN_SECRET_BYTES:
        raise ValueError(f"a webhook secret must hold at least {MIN_SECRET_BYTES} bytes")
    return key


def encode_secret(key: bytes) -> str:
    """``key`` (e.g. 32 random bytes) as a ``whsec_`` secret."""
    return _PREFIX + base64.b64encode(key).decode()


def sign(keys: Sequence[bytes], msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header: one ``v1,<base64>`` per key, space-separated."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    macs = (hmac.new(key, signed, hashlib.sha256).digest() for key in keys)
    return " ".join("v1," + base64.b64encode(mac).decode() for mac in macs)


def message_id(*parts: str) -> str:
    """A ``webhook-id`` determined by ``parts`` (type, document, what identifies the
    event): the same event gets the same id in every process (cluster dedupe)."""
    digest = hashlib.sha256("\0".join(parts).encode()).hexdigest()
    return "msg_" + digest[:32]


def parse_events(names: Iterable[str]) -> tuple[str, ...]:
    """``names`` (stripped, empty ones skipped) as event types, in ``ALL_EVENTS`` order.

    Raises:
        ValueError: an unknown event type.
    """
    wanted = {n.strip() for n in names if n.strip()}
    unknown = sorted(wanted - set(ALL_EVENTS))
    if unknown:
        raise ValueError(f"unknown webhook event {unknown[0]!r} (known: {', '.join(ALL_EVENTS)})")
    return tuple(e for e in ALL_EVENTS if e in wanted)


def check_url(url: str) -> str:
    """``url`` if it is an absolute http(s) URL with a host and no credentials.

    Raises:
        ValueError: anything else.
    """
    scheme, sep, rest = url.partition("://")
    host = rest.split("/", 1)[0].split("?", 1)[0]
    if not sep or scheme.lower() not in ("http", "https") or not host or "@" in host:
        raise ValueError(f"a webhook must be an http:// or https:// URL, not {url!r}")
    return url


# -- events ------------------------------------------------------------------------


@dataclass
class Event:
    """One webhook event. ``counts`` are summed when ``document.changed`` events
    coalesce (``merge``); ``fields`` are extra ``data`` members, newest wins."""

    type: str
    name: str
    time: float  # when it happened (the last change it covers)
    id: str
    who: tuple[str, ...] = ()
    counts: dict[str, int] = field(default_factory=dict)
    first: float | None = None  # document.changed: the first change it covers
    fields: dict[str, Any] = field(default_factory=dict)


def merge(old: Event, new: Event) -> Event:
    """One ``document.changed`` covering both: counts summed (``clients``, a gauge,
    the newer), ``who`` united, the newer id, time and fields, the earlier first change."""
    counts = dict(old.counts)
    for key, value in new.counts.items():
        counts[key] = value if key in GAUGES else counts.get(key, 0) + value
    who = tuple(dict.fromkeys((*old.who, *new.who)))
    firsts = [t for t in (old.first, new.first) if t is not None]
    first = min(firsts) if firsts else None
    return Event(
        new.type, new.name, new.time, new.id, who, counts, first, {**old.fields, **new.fields}
    )


def encode_body(event: Event) -> bytes:
    """The delivery body: minified UTF-8 JSON ``{"type", "timestamp", "data"}``."""
    data: dict[str, Any] = {"name": event.name, "time": iso8601(event.time)}
    if event.first is not None:
        data["first_change"] = iso8601(event.first)
    data["who"] = list(event.who)
    data["counts"] = event.counts
    data.update(event.fields)
    envelope = {"type": event.type, "timestamp": iso8601(event.time), "data": data}
    return json.dumps(envelope, separators=(",", ":"), ensure_ascii=False).encode()


def iso8601(seconds: float) -> str:
    """Unix ``seconds`` as UTC ISO-8601 with milliseconds: ``2026-12-01T19:02:11.532Z``."""
    millis = round(seconds * 1000)
    whole, ms = divmod(millis, 1000)
    days, rest = divmod(whole, 86400)
    hour, rest = divmod(rest, 3600)
    minute, second = divmod(rest, 60)
    # days since 1970-01-01 to a civil date (H. Hinnant's algorithm)
    z = days + 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = mp + 3 if mp < 10 else mp - 9
    year = yoe + era * 400 + (month <= 2)
    return f"{year:04d}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}.{ms:03d}Z"


# -- delivery rules ------------------------------------------------------------------

Outcome = Literal["ok", "retry", "gone"]


def outcome(status: int | None) -> Outcome:
    """What an answer means: 2xx delivered, 410 the endpoint is gone, anything else
    (3xx: redirects are not followed; 4xx, 5xx, no answer) is tried again."""
    if status is not None and 200 <= status < 300:
        return "ok"
    return "gone" if status == 410 else "retry"


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta seconds or an HTTP date,
    relative to unix time ``now``); None if absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    parsed = parsedate_tz(value)
    if parsed is None:
        return None
    when = calendar.timegm(parsed[:9]) - (parsed[9] or 0)
    return max(0.0, when - now)


def retry_delay(
    attempt: int, base: float, cap: float, rand: float, retry_after: float | None = None
) -> float:
    """Seconds before retry number ``attempt`` (0: the first retry).

    Exponential (``base`` · 2^attempt, at most ``cap``) with jitter: a uniform
    ``rand`` in [0, 1) picks between half and all of it, so receivers that come
    back are not hit by every sender at once. A ``Retry-After`` the receiver
    asked for is honoured as a minimum, but never beyond ``cap``.
    """
    delay = min(cap, base * 2.0**attempt) * (0.5 + 0.5 * rand)
    if retry_after is not None:
        delay = max(delay, min(retry_after, cap))
    return delay
