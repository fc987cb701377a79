"""The pure core: wire format, rooms, names, auth rules, limits, timing rules.

Nothing here does I/O or keeps time: no asyncio, tornado, websockets, socket,
threads, files or clock (callers pass ``now``). May import only itself (and
pycrdt, the CRDT).
"""
