"""Awareness between processes over Redis pub/sub, and who is alive (heartbeats).

Presence is soft state: it is never stored, never fsynced. Each loaded
document has a channel; a message is ``pid (8 bytes) ‖ kind (1 byte) ‖ frame``
with kind ``U`` (an awareness frame of that process's clients) or ``Q`` (a
process just loaded the document: everyone answers with their clients' states).

Every second each process runs ``collab_beat`` (``ZADD`` in Redis time) and
learns the others' last beats; a process silent for ``heartbeat_ttl`` seconds,
or gone from the set (it stopped cleanly), is dead, and every document drops
the states it relayed. The same beat publishes this process's connection
counts, which ``clients`` adds up across live processes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError

from ..base import PresenceListener

if TYPE_CHECKING:
    from .store import RedisStore

__all__ = ["RedisPresence"]

log = logging.getLogger("collab.redis")

BEAT_SECONDS = 1.0


class RedisPresence:
    """The ``Presence`` of a ``RedisStore``."""

    def __init__(self, store: RedisStore) -> None:
        self.store = store
        self.listeners: dict[bytes, PresenceListener] = {}  # by channel
        self.counts: dict[str, int] = {}  # stem -> local connections
        self.live: dict[str, float] = {}  # pid -> last beat (ms), from the last beat
        self.heard: set[str] = set()  # pids whose states some document holds
        self._pubsub: Any = store.redis.pubsub()
        self._outgoing: list[tuple[bytes, bytes]] = []
        self._sending: asyncio.Task[None] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._me = store.pid.encode()

    def start(self) -> None:
        self._tasks = [self.store.spawn(self._listen()), self.store.spawn(self._beat())]

    # -- the Presence protocol -------------------------------------------------------

    def join(self, name: str, listener: PresenceListener) -> None:
        channel = self.store.keys.doc(name).channel.encode()
        self.listeners[channel] = listener
        self.store.spawn(self._subscribe(channel))

    async def _subscribe(self, channel: bytes) -> None:
        try:
            await self._pubsub.subscribe(channel)
            await self.store.redis.publish(channel, self._me + b"Q")
        except (RedisError, OSError) as exc:
            log.debug("could not subscribe to %r: %s", channel, exc)

    def publish(self, name: str, frame: bytes) -> None:
        channel = self.store.keys.doc(name).channel.encode()
        self._outgoing.append((channel, self._me + b"U" + frame))
        if self._sending is None:
            self._sending = self.store.spawn(self._send())

    async def _send(self) -> None:
        try:
            await asyncio.sleep(0)  # one pipeline for this iteration's frames
            while self._outgoing:
                batch, self._outgoing = self._outgoing, []
                async with self.store.redis.pipeline(transaction=False) as pipe:
                    for channel, message in batch:
                        pipe.publish(channel, message)
                    await pipe.execute(raise_on_error=False)
        except (RedisError, OSError) as exc:
            log.debug("awareness not relayed to other processes: %s", exc)  # best effort
        finally:
            self._sending = None

    def leave(self, name: str) -> None:
        channel = self.store.keys.doc(name).channel.encode()
        if self.listeners.pop(channel, None) is not None:
            self.store.spawn(self.store.quietly(self._pubsub.unsubscribe(channel)))
        self.count(name, 0)

    def count(self, name: str, connections: int) -> None:
        stem = self.store.keys.doc(name).stem
        if connections:
            self.counts[stem] = connections
        else:
            self.counts.pop(stem, None)

    async def clients(self, names: Sequence[str]) -> dict[str, int]:
        stems = [self.store.keys.doc(name).stem for name in names]
        totals = dict.fromkeys(names, 0)
        pids = list(self.live) or [self.store.pid]
        if not stems:
            return totals
        try:
            async with self.store.redis.pipeline(transaction=False) as pipe:
                for pid in pids:
                    pipe.hmget(self.store.keys.clients(pid), stems)
                replies = await pipe.execute()
        except (RedisError, OSError):
            replies = [[None] * len(stems) for _ in pids]  # this process's counts only
        for pid, counts in zip(pids, replies, strict=True):
            for name, value in zip(names, counts, strict=True):
                if pid == self.store.pid:
                    value = self.counts.get(self.store.keys.doc(name).stem, 0)
                totals[name] += int(value or 0)
        return totals

    def rejoin(self) -> None:
        """After a reconnect: subscribe to every channel again and ask for states."""
        for channel in list(self.listeners):
            self.store.spawn(self._subscribe(channel))

    # -- background -------------------------------------------------------------------

    async def _listen(self) -> None:
        while not self.store.closing:
            try:
                if not self._pubsub.subscribed:
                    await asyncio.sleep(0.05)
                    continue
                message = await self._pubsub.get_message(
                    ignore_subscribe_messages=True, timeout=1.0
                )
            except (RedisError, OSError) as exc:
                log.debug("awareness channel lost (%s): subscribing again", exc)
                await asyncio.sleep(0.5)
                self._pubsub = self.store.redis.pubsub()
                self.rejoin()
                continue
            if message is not None and message.get("type") == "message":
                self._heard(message["channel"], message["data"])

    def _heard(self, channel: bytes, data: bytes) -> None:
        owner, kind, frame = data[:8], data[8:9], data[9:]
        listener = self.listeners.get(channel)
        if owner == self._me or listener is None:
            return
        if kind == b"U":
            pid = owner.decode()
            self.heard.add(pid)
            listener.frame(pid, frame)
        elif kind == b"Q":
            listener.query()

    async def _beat(self) -> None:
        store = self.store
        ttl_ms = store.heartbeat_ttl * 1000
        while not store.closing:
            try:
                reply = await store.redis.fcall("collab_beat", 1, store.keys.procs, store.pid)
                await self._publish_counts()
            except (RedisError, OSError) as exc:
                store.down(exc)
            else:
                now = float(reply[0])
                pairs = reply[1:]
                beats = {pairs[i].decode(): float(pairs[i + 1]) for i in range(0, len(pairs), 2)}
                self.live = {pid: at for pid, at in beats.items() if now - at <= ttl_ms}
                for pid in [pid for pid in self.heard if pid not in self.live]:
                    self.heard.discard(pid)
                    log.info("process %s stopped beating: dropping its clients' presence", pid)
                    for listener in list(self.listeners.values()):
                        listener.gone(pid)
            await asyncio.sleep(BEAT_SECONDS)

    async def _publish_counts(self) -> None:
        """Write this process's connection counts (whole, atomically; they expire with it)."""
        store = self.store
        key = store.keys.clients(store.pid)
        async with store.redis.pipeline(transaction=True) as pipe:
            pipe.delete(key)
            if self.counts:
                mapping: dict[Any, Any] = dict(self.counts)
                pipe.hset(key, mapping=mapping)
                pipe.pexpire(key, int(store.heartbeat_ttl * 3000))
            pipe.pexpire(store.keys.wake(store.pid), int(store.heartbeat_ttl * 6000))
            await pipe.execute()

    async def close(self) -> None:
        """Leave the process set (the others drop this one's presence at once)."""
        store = self.store
        try:
            async with store.redis.pipeline(transaction=False) as pipe:
                pipe.zrem(store.keys.procs, store.pid)
                pipe.delete(store.keys.clients(store.pid), store.keys.wake(store.pid))
                await pipe.execute()
            await self._pubsub.aclose()
        except (RedisError, OSError) as exc:
            log.debug("could not leave the process set: %s", exc)
