"""Tests that need a tool the machine may lack: skip on a laptop, fail in CI."""

from __future__ import annotations

import os

import pytest


def require(ok: bool, reason: str, *, module: bool = False) -> None:
    """Skip the test (or the whole module) when ``ok`` is false; in CI, fail instead."""
    if ok:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set, so this fails instead of skipping)", pytrace=False)
    pytest.skip(reason, allow_module_level=module)
