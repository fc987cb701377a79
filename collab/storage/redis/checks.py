"""Can this Redis server give what the README promises? Pure: settings in, verdict out."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

__all__ = ["MIN_VERSION", "Verdict", "judge"]

MIN_VERSION = (7, 0)

Durability = Literal["strict", "relaxed"]


@dataclass
class Verdict:
    refusals: list[str] = field(default_factory=list)  # refuse to start: say each
    warnings: list[str] = field(default_factory=list)  # start, and log each


def _version(text: str) -> tuple[int, ...]:
    parts = []
    for part in text.split(".")[:2]:
        digits = "".join(c for c in part if c.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def judge(version: str, settings: dict[str, str] | None, durability: Durability) -> Verdict:
    """Judge a server by ``INFO server``'s version and ``CONFIG GET``'s settings.

    Args:
        version: ``redis_version`` (a Valkey also reports one).
        settings: ``appendonly``, ``appendfsync``, ``no-appendfsync-on-rewrite``
            and ``maxmemory-policy``; None if ``CONFIG`` is disabled (managed Redis).
        durability: ``strict`` refuses a server that could lose an acknowledged
            update on its own crash; ``relaxed`` starts and warns.
    """
    verdict = Verdict()
    if _version(version) < MIN_VERSION:
        verdict.refusals.append(f"Redis {version} is too old: collab needs 7.0 or later")
    if settings is None:
        verdict.warnings.append(
            "CONFIG GET is not allowed: cannot check appendonly, appendfsync and "
            "maxmemory-policy; make sure they are yes, always and noeviction"
        )
        return verdict
    policy = settings.get("maxmemory-policy", "")
    if policy != "noeviction":
        verdict.refusals.append(
            f"maxmemory-policy is {policy!r}: Redis could evict documents; set it to noeviction"
        )
    lossy = []
    if settings.get("appendonly") != "yes":
        lossy.append("appendonly is no: a Redis restart loses every update since the last RDB save")
    elif settings.get("appendfsync") != "always":
        lossy.append(
            f"appendfsync is {settings.get('appendfsync')!r}: a crash of the Redis machine "
            "can lose the last second or two of acknowledged updates"
        )
    if settings.get("appendonly") == "yes" and settings.get("no-appendfsync-on-rewrite") == "yes":
        lossy.append(
            "no-appendfsync-on-rewrite is yes: while the AOF is rewritten, updates are not fsynced"
        )
    if durability == "strict":
        verdict.refusals.extend(
            f"{text} (set it, or accept the loss with --redis-durability relaxed)" for text in lossy
        )
    else:
        verdict.warnings.extend(f"--redis-durability relaxed: {text}" for text in lossy)
    return verdict
