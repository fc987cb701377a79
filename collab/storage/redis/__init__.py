"""Cluster mode: documents in Redis, shared by every collab process.

``store.RedisStore`` is a ``Store`` (the seam in ``storage.base``): a snapshot
plus a stream of updates per document, written before anything is relayed,
read back by one blocking reader per process. ``presence`` relays awareness
between processes over pub/sub, with heartbeats; ``checks`` decides whether a
Redis server's settings can give what the README promises; ``keys`` is the key
layout; ``collab.lua`` holds the atomic Functions.
"""
