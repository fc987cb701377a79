"""Versions in Redis (cluster mode): the ``HistoryStore`` every process shares.

Per document (``S`` as in ``keys``)::

    P:{S}:hist:top     string  the last version id handed out (INCR: unique across processes)
    P:{S}:hist:meta    hash    id -> the version's metadata (JSON)
    P:{S}:hist:data    hash    id -> zlib(state), "t<id>" -> zlib(text)

Best effort like every history store: the live snapshot and stream are never
touched. ``delete`` removes all three keys; a document's ``collab_delete``
does not, so the hub deletes history beside it (as with files).
Each process cuts versions of the edits made through it; their ids come from
one counter, so every listing is one ordered history of the document.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError

from ...core.history import VersionMeta

if TYPE_CHECKING:
    from .store import RedisStore

__all__ = ["RedisHistory"]


class RedisHistory:
    """The ``HistoryStore`` of a ``RedisStore``'s cluster."""

    def __init__(self, store: RedisStore) -> None:
        self.store = store
        self.damaged = 0

    def _keys(self, name: str) -> tuple[str, str, str]:
        base = self.store.keys.doc(name).log.removesuffix(":log")
        return f"{base}:hist:top", f"{base}:hist:meta", f"{base}:hist:data"

    @property
    def _redis(self) -> Any:
        return self.store.redis

    async def versions(self, name: str) -> list[VersionMeta]:
        await self.store.start()
        _, meta_key, _ = self._keys(name)
        found = await self._call(self._redis.hgetall(meta_key))
        out = []
        for raw in found.values():
            try:
                out.append(VersionMeta.from_json(json.loads(raw)))
            except (ValueError, KeyError, TypeError):
                self.damaged += 1
        return sorted(out, key=lambda meta: meta.id)

    async def save(self, name: str, meta: VersionMeta, state: bytes, text: str) -> VersionMeta:
        await self.store.start()
        top, meta_key, data_key = self._keys(name)
        id = int(await self._call(self._redis.incr(top)))
        zstate, ztext = zlib.compress(state), zlib.compress(text.encode())
        meta = VersionMeta.from_json({**meta.to_json(), "id": id,
                                      "stored_bytes": len(zstate) + len(ztext)})  # fmt: skip
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(data_key, mapping={str(id): zstate, f"t{id}": ztext})
            pipe.hset(meta_key, str(id), json.dumps(meta.to_json()))
            await self._call(pipe.execute())
        return meta

    async def read(self, name: str, id: int) -> tuple[bytes, str] | None:
        _, _, data_key = self._keys(name)
        zstate, ztext = await self._call(self._redis.hmget(data_key, [str(id), f"t{id}"]))
        if zstate is None or ztext is None:
            return None
        try:
            return zlib.decompress(zstate), zlib.decompress(ztext).decode()
        except (zlib.error, UnicodeDecodeError):
            self.damaged += 1
            return None

    async def label(self, name: str, id: int, label: str | None) -> VersionMeta | None:
        _, meta_key, _ = self._keys(name)
        raw = await self._call(self._redis.hget(meta_key, str(id)))
        if raw is None:
            return None
        meta = VersionMeta.from_json(json.loads(raw)).with_label(label)
        await self._call(self._redis.hset(meta_key, str(id), json.dumps(meta.to_json())))
        return meta

    async def drop(self, name: str, ids: Iterable[int]) -> None:
        _, meta_key, data_key = self._keys(name)
        ids = list(ids)
        if not ids:
            return
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hdel(meta_key, *(str(i) for i in ids))
            pipe.hdel(data_key, *(f for i in ids for f in (str(i), f"t{i}")))
            await self._call(pipe.execute())

    async def delete(self, name: str) -> None:
        await self._call(self._redis.delete(*self._keys(name)))

    async def close(self) -> None:
        pass  # the connections belong to the RedisStore

    async def _call(self, work: Any) -> Any:
        try:
            return await work
        except RedisError as exc:
            raise OSError(f"Redis: {exc}") from exc
