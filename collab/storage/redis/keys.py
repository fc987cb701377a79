"""Where each piece of a cluster lives in Redis (``--redis-prefix``, default ``collab``).

Per document (``S`` is ``names.to_stem(name)``, which never holds ``{`` or
``}``, so the hash tag keeps a document's keys in one slot)::

    P:{S}:log     stream  updates (p pid, u update, a author, w time),
                          snapshot markers (t s, s seq, m trim id),
                          tombstones (t d, g generation)
    P:{S}:snap    hash    state (a full Yjs update), seq (last stream id it covers)
    P:{S}:gen     string  generation, bumped by every delete (absent: 0)
    P:{S}:lease   string  pid of the process compacting it (expires)
    P:{S}:aw      channel awareness frames between processes

Per cluster and per process::

    P:docs               hash    stem -> name of every document
    P:procs              zset    pid -> last heartbeat (Redis time, ms)
    P:proc:<pid>:wake    stream  wakes that process's reader
    P:proc:<pid>:clients hash    stem -> connections on that process
"""

from __future__ import annotations

from dataclasses import dataclass

from ...core import names

__all__ = ["DocKeys", "Keys"]


@dataclass(frozen=True, slots=True)
class DocKeys:
    stem: str
    log: str
    snap: str
    gen: str
    lease: str
    channel: str


@dataclass(frozen=True, slots=True)
class Keys:
    prefix: str = "collab"

    def doc(self, name: str) -> DocKeys:
        stem = names.to_stem(name)
        base = f"{self.prefix}:{{{stem}}}"
        return DocKeys(
            stem, f"{base}:log", f"{base}:snap", f"{base}:gen", f"{base}:lease", f"{base}:aw"
        )

    @property
    def docs(self) -> str:
        return f"{self.prefix}:docs"

    @property
    def procs(self) -> str:
        return f"{self.prefix}:procs"

    def wake(self, pid: str) -> str:
        return f"{self.prefix}:proc:{pid}:wake"

    def clients(self, pid: str) -> str:
        return f"{self.prefix}:proc:{pid}:clients"
