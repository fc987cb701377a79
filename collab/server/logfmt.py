"""Log lines for people (``--log-format text``) or for machines (``json``).

``JsonFormatter`` writes each record as one JSON object on one line:

* ``time`` (ISO 8601, UTC, milliseconds), ``level`` (``info``, ...), ``logger``;
* ``event``: a short snake_case name, the record's ``event`` extra
  (``request``, ``connection_closed``, ``api_refused``, ``audit``, ...), else
  ``request`` for Tornado's access log and ``log`` for anything else;
* ``message``: the human-readable line, as ``text`` prints it;
* every field the call site passed with ``extra=``: ``connection`` (id),
  ``document``, ``sub``, ``remote`` (the client's address), ``code``,
  ``reason``, ``status``, ``action``, ...;
* ``exception``: the traceback, when there is one.

Every string goes through ``core.auth.redact`` (both formats), so a
``?token=`` value never reaches a log, whatever a call site passed.

``BatchedStreamHandler`` is what ``collab serve`` writes them with: the lines
of one event-loop iteration in one write (5,000 handshakes are 5,000 access
lines: one ``write`` each was a tenth of the server's time per connection).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from datetime import UTC, datetime
from typing import Any

from ..core.auth import redact

__all__ = ["TEXT", "BatchedStreamHandler", "JsonFormatter", "TextFormatter"]

TEXT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# What every LogRecord has: anything else on a record came from ``extra=``.
_STANDARD = {
    *logging.LogRecord("", 0, "", 0, "", None, None).__dict__,
    "message",
    "asctime",
    "taskName",
}


class TextFormatter(logging.Formatter):
    """The ``text`` format (``TEXT``), with ``token=`` values hidden."""

    def __init__(self, fmt: str = TEXT) -> None:
        super().__init__(fmt)
        self._second: tuple[int, str] = (-1, "")  # the last second formatted, and its text

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        """As ``logging.Formatter``'s, the text of each second made once (a log line
        per handshake made ``strftime`` a tenth of its cost)."""
        if datefmt is not None:
            return super().formatTime(record, datefmt)
        second, text = self._second
        if int(record.created) != second:
            second = int(record.created)
            text = time.strftime(self.default_time_format, self.converter(record.created))
            self._second = (second, text)
        return f"{text},{int(record.msecs):03d}"  # as default_msec_format, "%s,%03d"


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ``time``, ``level``, ``logger``, ``event``,
    ``message``, the record's extras, and ``exception`` if any."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": _event(record),
            "message": redact(record.getMessage()),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key != "event" and not key.startswith("_"):
                line[key] = _plain(value)
        if record.exc_info:
            line["exception"] = redact(self.formatException(record.exc_info))
        elif record.exc_text:
            line["exception"] = redact(record.exc_text)
        if record.stack_info:
            line["stack"] = redact(self.formatStack(record.stack_info))
        return json.dumps(line, allow_nan=False)  # ASCII: any name survives any stream


class BatchedStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A ``StreamHandler`` that writes the lines logged during one iteration of a
    running event loop together, when it ends; lines from other threads at once.

    ``flush()`` (called by ``logging.shutdown`` at exit) writes what waits.
    """

    def __init__(self, stream: Any = None) -> None:
        super().__init__(stream)
        self._lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # not on a loop's thread
            super().emit(record)
            return
        try:
            line = self.format(record)
        except Exception:
            self.handleError(record)
            return
        if not self._lines:
            loop.call_soon(self.flush)
        self._lines.append(line + self.terminator)

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]  # created by Handler.__init__
            lines, self._lines = self._lines, []
            try:
                if lines:
                    self.stream.write("".join(lines))
                super().flush()
            except Exception:
                logging.Handler.handleError(self, logging.makeLogRecord({"msg": "log write"}))


def _event(record: logging.LogRecord) -> str:
    event = getattr(record, "event", None)
    if isinstance(event, str) and event:
        return event
    return "request" if record.name == "tornado.access" else "log"


def _plain(value: Any) -> Any:
    """``value`` as JSON can hold it, strings redacted."""
    if isinstance(value, str):
        return redact(value)
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if value == value and abs(value) != float("inf") else str(value)
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return redact(str(value))
