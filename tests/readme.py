"""The README's code examples, run as written (a block fenced as ```python TAG)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

README = Path(__file__).parent.parent / "README.md"


def example(tag: str) -> dict[str, Any]:
    """Execute the README's one ```python TAG block; its globals (functions, classes)."""
    (code,) = re.findall(rf"```python {re.escape(tag)}\n(.*?)```", README.read_text(), re.S)
    namespace: dict[str, Any] = {}
    exec(compile(code, "README.md", "exec"), namespace)
    return namespace
