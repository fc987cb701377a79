"""Documents in Redis, shared by every collab process (``collab serve --redis-url``).

Per document, a snapshot hash and a stream of the updates after it (see
``keys``). What the server's ``Document`` sees is the ordinary ``DocumentLog``:

* ``append`` queues the record; one writer per process sends everything queued
  in one event-loop iteration as one pipeline (one ``collab_append`` per
  document, fenced by the document's generation). A record is ``durable`` once
  Redis answered: with ``appendfsync always`` that is after its fsync. Nothing
  is relayed before (the document holds it).
* While Redis cannot be reached the batch is retried, still held, for
  ``timeout`` seconds; then its documents fail with ``StoreUnavailable``
  (their clients are closed with 1013 and resend on reconnect).
* One reader per process (``XREAD BLOCK`` over every loaded document's stream
  and a wake stream of its own) hands other processes' records to the
  document's ``LogWatcher``, skips its own, and reports deletes.
* ``compact`` writes a snapshot covering the reader's position under a lease,
  fenced in ``collab_compact`` so an older snapshot never replaces a newer one,
  and trims what is covered and older than ``retention`` seconds, leaving a
  marker; a reader that was behind the trim merges the snapshot.
* After Redis restarted (its ``run_id`` changed), every loaded document is
  re-read and handed to ``LogWatcher.resync``, which pushes back what Redis
  lacks.

Call ``await store.start()`` first: it refuses a Redis that cannot give the
promised durability (``RedisMisconfigured``).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Coroutine, Sequence
from importlib import resources
from typing import Any

import redis.asyncio as aioredis
from redis.backoff import NoBackoff
from redis.exceptions import RedisError, ResponseError
from redis.retry import Retry

from ...core import policy
from ...core.errors import CollabError, DocumentDeleted, StoreUnavailable
from ..base import Cursor, DocInfo, Loaded, LogWatcher, Record
from .checks import Durability, judge
from .keys import DocKeys, Keys
from .presence import RedisPresence

__all__ = ["RedisLog", "RedisMisconfigured", "RedisStore"]

log = logging.getLogger("collab.redis")

LIBRARY = resources.files(__package__).joinpath("collab.lua").read_text()
LEASE_MS = 30_000
_NOTHING = "0-0"


class RedisMisconfigured(Exception):
    """This Redis cannot give what collab promises (the reasons, in one line)."""


def _id(raw: str) -> tuple[int, int]:
    ms, _, seq = raw.partition("-")
    return int(ms), int(seq or 0)


def _after(a: str, b: str) -> bool:
    """Stream id ``a`` comes after ``b``."""
    return _id(a) > _id(b)


def _record(fields: dict[bytes, bytes]) -> Record:
    when = fields.get(b"w")
    return Record(fields[b"u"], float(when) if when else 0.0, fields.get(b"a", b"").decode())


class RedisLog:
    """One document in Redis. Cursors of ``append`` are local counts (ints)."""

    def __init__(self, store: RedisStore, name: str) -> None:
        self.store = store
        self.name = name
        self.keys: DocKeys = store.keys.doc(name)
        self.gen = "0"  # the generation it was loaded in: appends are fenced by it
        self.position = _NOTHING  # every stream entry up to here is in the room
        self.appended = 0
        self.acked = 0
        self.failure: CollabError | None = None
        self.watcher: LogWatcher | None = None
        self.closed = False
        self._size = 0
        self._gap = False  # a trim overtook the reader: merging the snapshot
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self.ids: dict[int, str] = {}  # stream id of each own record since the last snapshot

    @property
    def size(self) -> int:
        return self._size

    async def load(self) -> Loaded:
        await self.store.start()
        try:
            loaded = await self.store.read(self)
        except (RedisError, OSError) as exc:
            self.store.down(exc)
            raise StoreUnavailable("Redis is unreachable") from exc
        self.store.reader.add(self)
        return loaded

    def append(self, record: Record) -> Cursor:
        if self.failure is not None:
            raise self.failure
        self.appended += 1
        self._size += len(record.update)
        self.store.writer.add(self, self.appended, record)
        return self.appended

    def durable(self, cursor: Cursor) -> bool:
        return not isinstance(cursor, int) or cursor <= self.acked

    async def flush(self, cursor: Cursor | None = None) -> None:
        target = self.appended if not isinstance(cursor, int) else cursor
        if target <= self.acked:
            return
        if self.failure is not None:
            raise self.failure
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append((target, waiter))
        await waiter

    def acknowledged(self, seqs: Sequence[int], ids: Sequence[bytes]) -> None:
        """Redis took these records (local counts, stream ids): wake who waits for them."""
        for seq, raw in zip(seqs, ids, strict=True):
            self.ids[seq] = raw.decode()
        self.acked = max(self.acked, seqs[-1])
        waiting = []
        for target, waiter in self._waiters:
            if target <= self.acked:
                if not waiter.done():
                    waiter.set_result(None)
            else:
                waiting.append((target, waiter))
        self._waiters = waiting

    def failed(self, error: CollabError) -> None:
        """Records could not be stored: every waiter, and every later append, gets ``error``."""
        self.failure = error
        for _, waiter in self._waiters:
            if not waiter.done():
                waiter.set_exception(error)
        self._waiters = []

    async def compact(self, state: bytes, upto: Cursor) -> None:
        """Store ``state`` as the snapshot; it holds every record up to ``upto``.

        What ``state`` covers in the shared stream is what the reader had
        handed over when it was taken (``position``), and this process's own
        records up to ``upto``; ``collab_compact`` extends the snapshot past
        ``position`` only over entries that are all this process's own.
        Skipped while another process holds the lease.
        """
        seq = self.position  # taken before any await: ``state`` covers it
        if self._gap or self.failure is not None:
            return
        if isinstance(upto, int) and upto > self.acked:
            await self.flush(upto)
        own = self.ids.get(upto, "") if isinstance(upto, int) else ""
        redis, keys, pid = self.store.redis, self.keys, self.store.pid
        try:
            if not await redis.set(keys.lease, pid, nx=True, px=LEASE_MS):
                return  # another process is compacting it
            try:
                retention = str(int(self.store.retention * 1000))
                args = (keys.snap, keys.log, keys.gen, self.gen, seq, own, pid, state, retention)
                done = await redis.fcall("collab_compact", 3, *args)
            finally:
                await redis.fcall("collab_release", 1, keys.lease, pid)
        except RedisError as exc:
            log.warning("could not compact %r in Redis: %s", self.name, exc)
            return
        if isinstance(upto, int):
            self.ids = {k: v for k, v in self.ids.items() if k > upto}
        if done:
            self._size = 0

    async def delete(self) -> bool:
        await self.store.start()
        keys = self.keys
        try:
            gen, existed = await self.store.redis.fcall(
                "collab_delete", 4, keys.snap, keys.log, keys.gen, self.store.keys.docs, keys.stem
            )
        except RedisError as exc:
            self.store.down(exc)
            raise StoreUnavailable("Redis is unreachable") from exc
        self.gen = str(int(gen))  # appends of this process's old generation now fail
        return bool(existed)

    def watch(self, watcher: LogWatcher) -> None:
        self.watcher = watcher

    async def close(self) -> None:
        if self.closed:
            return
        try:
            if self.failure is None:
                await self.flush()
        finally:
            self.closed = True
            self.store.reader.remove(self)

    # -- what the reader found ------------------------------------------------

    def entries(self, entries: Sequence[tuple[bytes, dict[bytes, bytes]]]) -> None:
        """Take stream entries after ``position``, in order (from the reader)."""
        before, pid = self.position, self.store.pid.encode()
        records: list[Record] = []
        deleted = gap = False
        for raw, fields in entries:
            kind = fields.get(b"t")
            if kind is None:
                self._size += len(fields[b"u"])
                if fields.get(b"p") != pid:
                    records.append(_record(fields))
            elif kind == b"s":  # a snapshot marker: compacted up to s, trimmed below m
                self._size = 0
                trim = fields[b"m"].decode()
                ms, seq = _id(before)
                gap = gap or _after(trim, f"{ms}-{seq + 1}")
            elif kind == b"d":
                deleted = True
            self.position = raw.decode()
        watcher = self.watcher
        if watcher is None or self.closed:
            return
        if records:
            watcher.records(records)
        if deleted:
            watcher.deleted()
        elif gap and not self._gap:
            self._gap = True
            self.store.spawn(self._merge_snapshot())

    async def _merge_snapshot(self) -> None:
        """Entries this reader never saw were trimmed: the snapshot holds them."""
        try:
            state = await self.store.redis.hget(self.keys.snap, "state")
            if state and self.watcher is not None and not self.closed:
                log.info("reader of %r fell behind a trim: merged the snapshot", self.name)
                self.watcher.records([Record(state, time.time(), "")])
        except RedisError as exc:
            log.warning("could not read the snapshot of %r: %s", self.name, exc)
        finally:
            self._gap = False

    async def resync(self) -> None:
        """Redis may have lost entries: hand the watcher what it holds now."""
        try:
            loaded = await self.store.read(self)
        except RedisError as exc:
            log.warning("could not re-read %r after a Redis restart: %s", self.name, exc)
            return
        if self.watcher is not None and not self.closed:
            self.watcher.resync(loaded)


class _Writer:
    """Group commit: everything appended in one loop iteration goes in one pipeline."""

    def __init__(self, store: RedisStore) -> None:
        self.store = store
        self.pending: dict[RedisLog, list[tuple[int, Record]]] = {}
        self.task: asyncio.Task[None] | None = None

    def add(self, doc: RedisLog, seq: int, record: Record) -> None:
        self.pending.setdefault(doc, []).append((seq, record))
        if self.task is None:
            self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        try:
            await asyncio.sleep(0)  # let the rest of this iteration's appends join
            while self.pending:
                batch, self.pending = self.pending, {}
                await self._commit(batch)
        finally:
            self.task = None

    async def _commit(self, batch: dict[RedisLog, list[tuple[int, Record]]]) -> None:
        store = self.store
        loop = asyncio.get_running_loop()
        deadline = loop.time() + store.timeout
        attempt = 0
        while True:
            try:
                results = await self._send(batch)
                break
            except (RedisError, OSError) as exc:
                store.down(exc)
                if loop.time() >= deadline:
                    log.error(
                        "Redis did not take updates of %d documents for %.1f s (%s): "
                        "closing their clients (1013)",
                        len(batch),
                        store.timeout,
                        exc,
                    )
                    error = StoreUnavailable("Redis is unreachable: updates not stored")
                    for doc in batch:
                        doc.failed(error)
                    return
                attempt += 1
                await asyncio.sleep(
                    min(policy.backoff_delay(attempt, 0.05, 1.0), max(0.0, deadline - loop.time()))
                )
        store.up()
        for (doc, items), result in zip(batch.items(), results, strict=True):
            if isinstance(result, ResponseError):
                if str(result).startswith("GEN"):
                    doc.failed(DocumentDeleted("document was deleted"))
                else:
                    log.error("Redis refused updates of %r: %s", doc.name, result)
                    doc.failed(StoreUnavailable(f"Redis refused the update: {result}"))
            else:
                doc.acknowledged([seq for seq, _ in items], result)

    async def _send(self, batch: dict[RedisLog, list[tuple[int, Record]]]) -> list[Any]:
        store = self.store
        docs_key, pid = store.keys.docs, store.pid
        async with store.redis.pipeline(transaction=False) as pipe:
            for doc, items in batch.items():
                keys = doc.keys
                args: list[Any] = [pid, doc.gen, keys.stem, doc.name]
                for _, record in items:
                    args += (record.update, record.author, f"{record.time:.3f}")
                pipe.fcall("collab_append", 3, keys.log, keys.gen, docs_key, *args)
            results: list[Any] = await pipe.execute(raise_on_error=False)
        if any(isinstance(r, ResponseError) and "not found" in str(r).lower() for r in results):
            await store.load_library()  # Redis lost its Functions (restarted without AOF)
            raise ResponseError("collab Functions were missing: loaded them again")
        return results


class _Reader:
    """One ``XREAD BLOCK`` loop over every loaded document of this process."""

    BLOCK_MS = 5000

    def __init__(self, store: RedisStore) -> None:
        self.store = store
        self.logs: dict[bytes, RedisLog] = {}
        self.wake_id = _NOTHING
        self.task: asyncio.Task[None] | None = None

    def add(self, doc: RedisLog) -> None:
        self.logs[doc.keys.log.encode()] = doc
        self.wake()

    def remove(self, doc: RedisLog) -> None:
        if self.logs.get(doc.keys.log.encode()) is doc:
            del self.logs[doc.keys.log.encode()]

    def wake(self) -> None:
        """Make a blocked XREAD return so it reads the new set of streams."""
        store = self.store
        key = store.keys.wake(store.pid)
        store.spawn(store.quietly(store.redis.xadd(key, {"w": "1"}, maxlen=1)))

    async def run(self) -> None:
        store = self.store
        wake_key = store.keys.wake(store.pid).encode()
        attempt = 0
        while not store.closing:
            streams: dict[Any, Any] = {wake_key: self.wake_id}
            for key, doc in self.logs.items():
                streams[key] = doc.position
            try:
                reply = await asyncio.wait_for(
                    store.reader_redis.xread(streams, count=1000, block=self.BLOCK_MS),
                    self.BLOCK_MS / 1000 + store.timeout,
                )
            except asyncio.CancelledError:
                raise
            except (TimeoutError, RedisError, OSError) as exc:
                store.down(exc)
                attempt += 1
                await asyncio.sleep(policy.backoff_delay(attempt, 0.05, 1.0))
                await store.reconnected()
                continue
            attempt = 0
            store.up()
            for key, entries in reply or ():
                if key == wake_key:
                    self.wake_id = entries[-1][0].decode()
                    continue
                found = self.logs.get(key)
                if found is not None and entries:
                    found.entries(entries)
            await asyncio.sleep(0)  # let sockets be served between rounds


class RedisStore:
    """Every document of a cluster, in one Redis (a ``Store``).

    Args:
        url: ``redis://HOST:PORT/DB`` (or ``rediss://``, ``unix://``).
        prefix: of every key (several clusters can share one Redis).
        timeout: seconds an update may wait for Redis before its document's
            clients are closed with 1013.
        heartbeat_ttl: seconds after which a silent process counts as dead
            (its clients' presence is dropped everywhere).
        retention: seconds of compacted stream kept for lagging readers.
        durability: ``strict`` refuses a Redis without ``appendonly yes`` and
            ``appendfsync always``; ``relaxed`` starts and logs what may be lost.
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "collab",
        timeout: float = 5.0,
        heartbeat_ttl: float = 5.0,
        retention: float = 10.0,
        durability: Durability = "strict",
        pid: str | None = None,
    ) -> None:
        self.url = url
        self.pid = pid or secrets.token_hex(4)
        self.keys = Keys(prefix)
        self.timeout = timeout
        self.heartbeat_ttl = heartbeat_ttl
        self.retention = retention
        self.durability: Durability = durability
        common: dict[str, Any] = {
            "protocol": 2,
            "socket_connect_timeout": timeout,
            "retry": Retry(NoBackoff(), 0),
            "health_check_interval": 0,
        }
        self.redis: Any = aioredis.Redis.from_url(
            url, socket_timeout=timeout, client_name=f"collab:{self.pid}", **common
        )
        self.reader_redis: Any = aioredis.Redis.from_url(
            url, socket_timeout=None, client_name=f"collab:{self.pid}:reader", **common
        )
        self.damaged = 0
        self.settings: dict[str, str] | None = None
        self.version = ""
        self.run_id: str | None = None
        self.down_since: float | None = None
        self.closing = False
        self.writer = _Writer(self)
        self.reader = _Reader(self)
        self.presence: RedisPresence = RedisPresence(self)
        self._start: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- life -----------------------------------------------------------------

    async def start(self) -> None:
        """Connect, check Redis's settings, load the Functions, start reading.

        Raises:
            RedisMisconfigured: Redis cannot give the promised durability.
            StoreUnavailable: Redis cannot be reached.
        """
        if self._start is None:
            self._start = asyncio.get_running_loop().create_task(self._started())
        try:
            await asyncio.shield(self._start)
        except (RedisError, OSError) as exc:
            self._start = None  # try again next time
            raise StoreUnavailable(f"Redis is unreachable: {exc}") from exc
        except BaseException:
            self._start = None
            raise

    async def _started(self) -> None:
        info = await self.redis.info("server")
        self.version, self.run_id = str(info.get("redis_version", "")), info.get("run_id")
        settings: dict[str, str] | None = {}
        try:
            for name in (
                "appendonly",
                "appendfsync",
                "no-appendfsync-on-rewrite",
                "maxmemory-policy",
            ):
                found = await self.redis.config_get(name)
                assert settings is not None
                settings.update({str(k): str(v) for k, v in found.items()})
        except ResponseError:
            settings = None
        self.settings = settings
        verdict = judge(self.version, settings, self.durability)
        if verdict.refusals:
            raise RedisMisconfigured("Redis at " + self.url + ": " + "; ".join(verdict.refusals))
        for warning in verdict.warnings:
            log.warning("%s", warning)
        await self.load_library()
        wake = self.keys.wake(self.pid)
        self.reader.wake_id = (await self.redis.xadd(wake, {"w": "0"}, maxlen=1)).decode()
        await self.redis.pexpire(wake, int(self.heartbeat_ttl * 6000))
        self.reader.task = self.spawn(self.reader.run())
        self.presence.start()
        log.info(
            "cluster mode: Redis %s at %s (appendfsync %s), process %s",
            self.version,
            self.url,
            (settings or {}).get("appendfsync", "?"),
            self.pid,
        )

    async def claim(self, key: str, ttl: float = 86400.0) -> bool:
        """True for the first process of the cluster to claim ``key`` (``SET NX``).

        For work done once cluster-wide, such as sending a webhook event.
        """
        await self.start()
        claimed = await self.redis.set(f"{self.keys.prefix}:claim:{key}", self.pid, nx=True,
                                       ex=int(ttl))  # fmt: skip
        return bool(claimed)

    async def load_library(self) -> None:
        await self.redis.function_load(LIBRARY, replace=True)

    async def close(self) -> None:
        """Stop reading and beating; say this process is gone; close connections."""
        self.closing = True
        if self.writer.task is not None:
            await asyncio.gather(self.writer.task, return_exceptions=True)
        await self.presence.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.redis.aclose()
        await self.reader_redis.aclose()

    def spawn(self, work: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def quietly(self, work: Coroutine[Any, Any, Any]) -> None:
        try:
            await work
        except (RedisError, OSError) as exc:
            self.down(exc)

    # -- reachability ------------------------------------------------------------

    def down(self, exc: BaseException) -> None:
        if self.down_since is None and not self.closing:
            self.down_since = time.monotonic()
            log.warning("Redis is unreachable (%s): holding updates", exc or type(exc).__name__)

    def up(self) -> None:
        if self.down_since is not None:
            log.info("Redis is reachable again after %.1f s", time.monotonic() - self.down_since)
            self.down_since = None

    async def reconnected(self) -> None:
        """After an error: if Redis restarted, reload Functions and resync every document."""
        try:
            info = await self.redis.info("server")
        except (RedisError, OSError):
            return
        run_id = info.get("run_id")
        self.up()
        if run_id == self.run_id:
            return
        log.warning(
            "Redis restarted (run_id %s -> %s): resyncing loaded documents", self.run_id, run_id
        )
        self.run_id = run_id
        try:
            await self.load_library()
        except RedisError as exc:
            log.warning("could not load the Functions again: %s", exc)
        for doc in list(self.reader.logs.values()):
            await doc.resync()
        self.presence.rejoin()

    async def readiness(self) -> str | None:
        if self._start is None or not self._start.done():
            try:
                await self.start()
            except (StoreUnavailable, RedisMisconfigured) as exc:
                return str(exc)
        if self.down_since is not None:
            return f"Redis unreachable for {time.monotonic() - self.down_since:.1f} s"
        return None

    # -- documents ----------------------------------------------------------------

    def log(self, name: str) -> RedisLog:
        return RedisLog(self, name)

    async def read(self, doc: RedisLog) -> Loaded:
        """Generation, snapshot and stream, read atomically; positions ``doc`` after them."""
        keys = doc.keys
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.get(keys.gen)
            pipe.hmget(keys.snap, ["seq", "state"])
            pipe.xrange(keys.log, "-", "+")
            gen, (seq, state), entries = await pipe.execute()
        records: list[Record] = []
        size = 0
        covered = _id(seq.decode()) if seq is not None else (0, 0)
        for raw, fields in entries:
            kind = fields.get(b"t")
            if kind is None:
                if _id(raw.decode()) <= covered:
                    continue  # in the snapshot already (kept for lagging readers)
                records.append(_record(fields))
                size += len(fields[b"u"])
            elif kind == b"d":
                records, size = [], 0  # nothing before a tombstone belongs to this generation
        position = entries[-1][0].decode() if entries else _NOTHING
        if seq is not None and _after(seq.decode(), position):
            position = seq.decode()
        doc.gen = gen.decode() if gen is not None else "0"
        doc.position = position
        doc._size = size
        return Loaded(state, records, position, generation=doc.gen)

    async def info(self, name: str) -> DocInfo | None:
        await self.start()
        try:
            return (await self._infos([name]))[0]
        except (RedisError, OSError) as exc:
            self.down(exc)
            raise StoreUnavailable("Redis is unreachable") from exc

    async def _infos(self, names: Sequence[str]) -> list[DocInfo | None]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for name in names:
                keys = self.keys.doc(name)
                pipe.hexists(self.keys.docs, keys.stem)
                pipe.hstrlen(keys.snap, "state")
                pipe.xrevrange(keys.log, "+", "-", count=1)
                pipe.xlen(keys.log)
            replies = await pipe.execute()
        infos: list[DocInfo | None] = []
        for i, name in enumerate(names):
            exists, snapshot, last, length = replies[4 * i : 4 * i + 4]
            if not exists:
                infos.append(None)
                continue
            modified = _id(last[0][0].decode())[0] / 1000 if last else 0.0
            infos.append(DocInfo(name, int(snapshot) + 64 * int(length), modified))
        return infos

    async def list(self, after: str | None = None, limit: int | None = None) -> list[DocInfo]:
        await self.start()
        try:
            found = await self.redis.hgetall(self.keys.docs)
            names = sorted(n.decode() for n in found.values())
            names = [n for n in names if after is None or n > after][:limit]
            return [info for info in await self._infos(names) if info is not None]
        except (RedisError, OSError) as exc:
            self.down(exc)
            raise StoreUnavailable("Redis is unreachable") from exc
