"""The client address of a Tornado request, through trusted reverse proxies.

Tornado's own ``xheaders=True`` believes ``X-Forwarded-For`` from anyone; collab
keeps it off and asks ``core.clients`` instead, which believes the headers only
from a ``--trusted-proxy`` network. The networks come from the handler's hub
config (``Config.trusted_proxies``), or for handlers without a hub from the
application setting ``collab_trusted_proxies`` that ``make_app`` sets.
"""

from __future__ import annotations

import functools

import tornado.web

from ..core.clients import TrustedProxies
from ..server.hub import Hub

__all__ = ["client_ip", "trusted_proxies"]


@functools.lru_cache(maxsize=16)
def trusted_proxies(cidrs: tuple[str, ...]) -> TrustedProxies:
    """The parsed networks (parsed once per distinct setting).

    Raises:
        ValueError: a network is malformed.
    """
    return TrustedProxies(cidrs)


def client_ip(handler: tornado.web.RequestHandler) -> str:
    """The address of the client behind ``handler``'s request (the peer if no proxy is trusted)."""
    hub = getattr(handler, "hub", None)
    if isinstance(hub, Hub):
        cidrs = hub.config.trusted_proxies
    else:
        cidrs = tuple(handler.settings.get("collab_trusted_proxies", ()))
    request = handler.request
    peer = request.remote_ip or ""
    if not cidrs:
        return peer
    return trusted_proxies(cidrs).client_address(peer, request.headers)
