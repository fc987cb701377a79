"""The rings of the package, checked: every import points inward.

``collab.core`` is pure (no I/O, no event loop, no clock); ``collab.storage``
builds on it; ``collab.server`` (asyncio) on both; ``collab.tornado`` on all
three; only ``collab`` itself and ``collab.cli`` see everything.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parent.parent / "collab"

# What each ring may import from the package, and what it may never import at all.
INWARD = {
    "core": {"core"},
    "storage": {"core", "storage"},
    "server": {"core", "storage", "server"},
    "tornado": {"core", "storage", "server", "tornado"},
}
IO_AND_CLOCK = {
    "asyncio", "concurrent", "datetime", "io", "os", "pathlib", "select", "selectors",
    "shutil", "socket", "subprocess", "threading", "time", "tornado", "websockets",
}  # fmt: skip
FORBIDDEN = {
    "core": IO_AND_CLOCK,
    "storage": {"tornado", "websockets", "socket"},
    "server": {"tornado"},
    "tornado": set(),
}


def imports(path: Path) -> list[tuple[int, str]]:
    """Every module ``path`` imports, absolute (``collab.core.room``, ``asyncio``)."""
    module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                base = node.module or ""
            else:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            names = [f"{base}.{alias.name}" for alias in node.names]
            found += [(node.lineno, n if n.removeprefix(base) else base) for n in names]
    return found


def ring_of(name: str) -> str | None:
    parts = name.split(".")
    return parts[1] if len(parts) > 2 and parts[0] == "collab" and parts[1] in INWARD else None


def violations(path: Path) -> list[str]:
    ring = path.relative_to(PACKAGE).parts[0]
    if ring not in INWARD:
        return []  # collab/__init__.py, cli.py, __main__.py: the outermost shell
    bad = []
    for line, name in imports(path):
        top = name.split(".")[0]
        if top == "collab":
            target = ring_of(name)
            if target is None or target not in INWARD[ring]:
                bad.append(f"{path.relative_to(PACKAGE.parent)}:{line} {ring} imports {name}")
        elif top in FORBIDDEN[ring]:
            bad.append(f"{path.relative_to(PACKAGE.parent)}:{line} {ring} imports {name}")
    return bad


MODULES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_inward(path: Path) -> None:
    assert violations(path) == []


def test_the_check_sees_an_outward_import(tmp_path: Path) -> None:
    bad = PACKAGE / "core" / "_outward_probe.py"
    bad.write_text("import asyncio\nfrom ..server import hub\nfrom . import protocol\n")
    try:
        found = violations(bad)
    finally:
        bad.unlink()
    assert found == [
        "collab/core/_outward_probe.py:1 core imports asyncio",
        "collab/core/_outward_probe.py:2 core imports collab.server.hub",
    ]


def test_every_ring_is_a_package() -> None:
    assert {p.parent.name for p in PACKAGE.glob("*/__init__.py")} >= set(INWARD)
