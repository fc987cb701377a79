"""Where documents live: the storage seam and its file and memory stores.

May import ``collab.core`` only (never ``server`` or ``tornado``).
"""

from .base import DocInfo, Log, Store, Stored, StoreLocked
from .file import FileLog, FileStore
from .memory import MemoryLog, MemoryStore

__all__ = [
    "DocInfo",
    "FileLog",
    "FileStore",
    "Log",
    "MemoryLog",
    "MemoryStore",
    "Store",
    "StoreLocked",
    "Stored",
]
