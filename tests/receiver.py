"""A real webhook receiver on 127.0.0.1 for tests: records each POST, answers from a script,
verifies signatures with the independent ``standardwebhooks`` package (not collab's code)."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any

import tornado.httpserver
import tornado.netutil
import tornado.web
from standardwebhooks.webhooks import Webhook

__all__ = ["HANG", "Delivery", "Receiver", "SECRET", "SECRET_OLD"]

# Standard Webhooks secrets (whsec_ + base64 of 32 bytes)
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SECRET_OLD = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"
HANG = "hang"  # a script entry: accept the request and never answer


@dataclass
class Delivery:
    at: float  # time.monotonic() when it arrived
    headers: dict[str, str]
    body: bytes
    status: int | None = None  # what the receiver answered (None: it hung)

    @property
    def event(self) -> dict[str, Any]:
        return dict(json.loads(self.body))

    @property
    def type(self) -> str:
        return str(self.event["type"])


class _Hook(tornado.web.RequestHandler):
    def initialize(self, receiver: Receiver) -> None:
        self.receiver = receiver

    async def post(self) -> None:
        r = self.receiver
        headers = {k.lower(): v for k, v in self.request.headers.get_all()}
        delivery = Delivery(time.monotonic(), headers, self.request.body)
        r.deliveries.append(delivery)
        scripted = r.script and (r.scripted is None or delivery.type == r.scripted)
        answer: Any = r.script.pop(0) if scripted else r.default
        if answer == HANG:
            await r.released.wait()
            return
        status, extra = answer if isinstance(answer, tuple) else (answer, {})
        delivery.status = status
        self.set_status(status)
        for name, value in extra.items():
            self.set_header(name, value)


class Receiver:
    """``script``: answers for the next requests (a status, ``(status, headers)`` or
    ``HANG``), of type ``scripted`` only if set; after it, ``default``.
    ``deliveries`` are what arrived."""

    def __init__(self, *script: Any, default: Any = 204, port: int = 0) -> None:
        self.script: list[Any] = list(script)
        self.default = default
        self.scripted: str | None = None
        self.deliveries: list[Delivery] = []
        self.released = asyncio.Event()
        sockets = tornado.netutil.bind_sockets(port, "127.0.0.1")
        self.port = sockets[0].getsockname()[1]
        app = tornado.web.Application([(r"/hook", _Hook, {"receiver": self})])
        self.server = tornado.httpserver.HTTPServer(app)
        self.server.add_sockets(sockets)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def of(self, type: str, ok: bool = False) -> list[Delivery]:
        """Deliveries of ``type`` (``ok``: only those answered 2xx)."""
        found = [d for d in self.deliveries if d.type == type]
        return [d for d in found if d.status and 200 <= d.status < 300] if ok else found

    def verify(self, delivery: Delivery, secret: str = SECRET) -> dict[str, Any]:
        """The event, if ``standardwebhooks`` accepts its signature under ``secret``."""
        return dict(Webhook(secret).verify(delivery.body, delivery.headers))

    async def stop(self) -> None:
        self.released.set()  # hung requests finish
        self.server.stop()
        await self.server.close_all_connections()
