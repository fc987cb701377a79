"""The asyncio server: hub, documents, sockets, tokens, metrics.

May import ``collab.core`` and ``collab.storage``; never ``collab.tornado``.
"""
