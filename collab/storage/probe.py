"""Can a data directory take writes now? The blocking checks behind ``/readyz``.

Rule: synchronous file I/O only, called in ``FileStore``'s threads, never on
the event loop. Each check returns None when all is well, else a short reason
an operator can act on; ``check`` runs them cheapest first.

* the lock: the ``.lock`` file the store holds is still the one at that path
  (removed or replaced, a second server could take the directory);
* free space: at least ``min_free`` bytes left for unprivileged writers;
* writability: a small file can be created, written, fsynced and removed
  (a read-only remount, a full or failing disk, lost permissions).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

__all__ = ["LOCK_NAME", "PROBE_PREFIX", "check", "check_free", "check_lock", "check_writable"]

LOCK_NAME = ".lock"
PROBE_PREFIX = ".probe-"  # never a document's file: not ``.snap`` nor ``.log``


def check_lock(root: Path, fd: int) -> str | None:
    """Is ``fd`` (the locked descriptor) still the file named ``root/.lock``?"""
    held = os.fstat(fd)
    try:
        now = os.stat(root / LOCK_NAME)
    except FileNotFoundError:
        return f"store lock lost: {LOCK_NAME} was removed"
    if (now.st_dev, now.st_ino) != (held.st_dev, held.st_ino):
        return f"store lock lost: {LOCK_NAME} was replaced"
    return None


def check_free(root: Path, min_free: int) -> str | None:
    """At least ``min_free`` bytes free for writers without root's reserve (0: no check)."""
    if min_free <= 0:
        return None
    stat = os.statvfs(root)
    free = stat.f_bavail * stat.f_frsize
    if free < min_free:
        return f"disk nearly full: {free} bytes free, below {min_free}"
    return None


def check_writable(root: Path) -> str | None:
    """Create, write, fsync and remove a small file in ``root``."""
    path = root / f"{PROBE_PREFIX}{os.getpid()}"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, b"collab readiness probe\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        os.unlink(path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            path.unlink()
        return f"data directory not writable: {exc.strerror or exc}"
    return None


def check(root: Path, lock_fd: int, min_free: int) -> str | None:
    """The first problem of the lock (if ``lock_fd >= 0``), free space and writability."""
    return (
        (check_lock(root, lock_fd) if lock_fd >= 0 else None)
        or check_free(root, min_free)
        or check_writable(root)
    )
