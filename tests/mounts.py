"""A small tmpfs for tests that fill a disk or turn it read-only (root only)."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

from tests.needs import require

__all__ = ["ROOT_USER", "mount", "tmpfs"]

ROOT_USER = os.geteuid() == 0


def mount(*args: str) -> subprocess.CompletedProcess[str]:
    """Run ``mount`` with ``args`` (e.g. ``-o remount,ro PATH``); never raises on failure."""
    return subprocess.run(["mount", *args], capture_output=True, text=True, timeout=30)


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` at ``path``, unmounted afterwards (skip or, in CI, fail if it cannot)."""
    path.mkdir(parents=True)
    done = mount("-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path))
    require(done.returncode == 0, f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30)
