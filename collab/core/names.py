"""Document names: what is allowed, and how a name becomes a file name.

Rule: pure; no I/O. A name is 1-200 bytes of UTF-8 without control characters.
``to_stem`` maps every name to a file-name stem made only of ``[A-Za-z0-9_-]``
and ``%XX`` escapes, so no name can contain a path separator, ``.`` or ``..``
once on disk; stems too long for a file name become ``~h`` and a hash.
"""

from __future__ import annotations

import hashlib
import re
from urllib.parse import quote, unquote

from .errors import BadName

__all__ = ["MAX_NAME_BYTES", "from_stem", "to_stem", "validate"]

MAX_NAME_BYTES = 200
_MAX_STEM = 180
_SAFE = "-_"
_STEM_RE = re.compile(r"^(?:[A-Za-z0-9_-]|%[0-9A-F]{2})+$")
# Unicode's control characters (category Cc) are exactly these 65 code points.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def validate(name: str) -> str:
    """Return ``name`` if it is a valid document name.

    Raises:
        BadName: empty, longer than 200 bytes of UTF-8, or holding a control
            character (or a lone surrogate, which is not UTF-8).
    """
    try:
        size = len(name.encode())
    except UnicodeEncodeError:
        raise BadName("document name is not valid UTF-8") from None
    if not 1 <= size <= MAX_NAME_BYTES:
        raise BadName(f"document name must be 1-{MAX_NAME_BYTES} bytes of UTF-8")
    if _CONTROL.search(name):
        raise BadName("document name contains a control character")
    return name


def to_stem(name: str) -> str:
    """Return the file-name stem for a valid ``name`` (no dots, no slashes)."""
    # quote() never escapes "." and "~"; escape them so "." and ".." cannot occur.
    stem = quote(name, safe=_SAFE).replace(".", "%2E").replace("~", "%7E")
    if len(stem) > _MAX_STEM:
        return "~h" + hashlib.sha256(name.encode()).hexdigest()
    return stem


def from_stem(stem: str) -> str | None:
    """Return the name a stem came from, or None for a hashed or foreign stem."""
    if stem.startswith("~h") or not _STEM_RE.match(stem):
        return None
    return unquote(stem, errors="strict")
