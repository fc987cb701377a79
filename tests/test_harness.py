"""The test harness itself: test modules share helpers, never each other; waiting polls."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.wait import eventually, eventually_sync

TESTS = Path(__file__).resolve().parent
TEST_MODULES = {f"tests.{path.stem}" for path in TESTS.glob("test_*.py")}


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports, relative imports spelled out from ``tests``."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = "tests" if node.level else ""
            module = ".".join(p for p in (base, node.module or "") if p)
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def test_no_test_module_imports_another() -> None:
    offenders = {
        path.name: sorted(
            {".".join(m.split(".")[:2]) for m in imported_modules(path)} & TEST_MODULES
        )
        for path in sorted(TESTS.glob("test_*.py"))
    }
    assert {name: mods for name, mods in offenders.items() if mods} == {}


def test_the_import_check_sees_every_spelling(tmp_path: Path) -> None:
    source = tmp_path / "test_x.py"
    source.write_text(
        "import tests.test_a\nfrom tests.test_b import f\nfrom .test_c import g\n"
        "from . import test_d\nfrom tests import test_e\nfrom tests.wire import client_frame\n"
    )
    seen = {m.split(".")[1] for m in imported_modules(source) if m.startswith("tests.test_")}
    assert seen == {"test_a", "test_b", "test_c", "test_d", "test_e"}


async def test_eventually_returns_the_first_truthy_value_and_awaits_coroutines() -> None:
    calls = iter([0, None, "ready"])
    assert await eventually(lambda: next(calls), timeout=5, interval=0) == "ready"

    async def probe() -> int:
        return 7

    assert await eventually(probe, timeout=5) == 7


async def test_eventually_reraises_the_last_assertion_at_the_deadline() -> None:
    def never() -> None:
        raise AssertionError("still 3 documents")

    with pytest.raises(AssertionError, match="still 3 documents"):
        await eventually(never, timeout=0.05)
    with pytest.raises(AssertionError, match=r"within 0\.05s"):
        await eventually(lambda: False, timeout=0.05)


def test_eventually_sync_polls_without_a_loop() -> None:
    calls = iter([False, False, True])
    assert eventually_sync(lambda: next(calls), timeout=5, interval=0) is True
    with pytest.raises(AssertionError, match=r"within 0\.05s"):
        eventually_sync(lambda: 0, timeout=0.05, interval=0.01)
