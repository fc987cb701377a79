"""The HTTP client webhooks are sent with: Tornado's, redirects never followed.

``webhooks(hub)`` is the ``server.webhooks.Webhooks`` extension with this
transport, for ``make_app`` and for hosts that embed collab.
"""

from __future__ import annotations

from collections.abc import Mapping

from tornado.httpclient import AsyncHTTPClient, HTTPRequest

from ..core.config import Config
from ..server.hub import Hub
from ..server.webhooks import Claim, Reply, Webhooks

__all__ = ["HttpTransport", "webhooks"]

CONNECT_TIMEOUT = 5.0


class HttpTransport:
    """POST with Tornado's ``AsyncHTTPClient``: its own instance, no redirects,
    the answer's body read and thrown away."""

    def __init__(self, max_clients: int = 16) -> None:
        self.client = AsyncHTTPClient(force_instance=True, max_clients=max_clients)

    async def __call__(
        self, url: str, headers: Mapping[str, str], body: bytes, timeout: float
    ) -> Reply:
        request = HTTPRequest(
            url,
            method="POST",
            headers=dict(headers),
            body=body,
            follow_redirects=False,
            connect_timeout=min(CONNECT_TIMEOUT, timeout),
            request_timeout=timeout,
            decompress_response=False,
            streaming_callback=lambda chunk: None,  # never hold a receiver's body
        )
        response = await self.client.fetch(request, raise_error=False)
        if response.code == 599:  # no HTTP answer: refused, reset, timed out
            raise response.error or ConnectionError("no answer")
        return Reply(response.code, response.headers.get("Retry-After"))

    def close(self) -> None:
        self.client.close()


def webhooks(hub: Hub, config: Config | None = None, claim: Claim | None = None) -> Webhooks:
    """The webhooks extension of ``hub`` (settings from ``config`` or ``hub.config``).

    In cluster mode (``hub.store`` is a ``RedisStore``) the default ``claim``
    is the store's: each event id is sent by the first process that claims it.

    Raises:
        ValueError: a bad URL, secret or event name, or URLs without a secret.
    """
    if claim is None and hub.config.redis_url:
        from ..storage.redis.store import RedisStore

        if isinstance(hub.store, RedisStore):
            claim = hub.store.claim
    return Webhooks(hub, HttpTransport(), config, claim)
